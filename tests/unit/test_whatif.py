"""`fleet plan`: fresh FLEET.json / REQUESTS.json files in, the issue's JSON shape out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleet.cli import main as cli_main
from fleet.common.gpus import GpuType
from fleet.controller.core.errors import InvalidArgument, NotFound
from fleet.controller.core.placement import Option
from fleet.controller.core.whatif import parse_fleet, parse_requests, what_if, what_if_files
from tests.unit.placement_helpers import WORKLOAD

GIB = 1024**3
app = cli_main.register_areas()


def fake_options(model: str, quant: str | None, engine: str | None, context: int | None,
                 gpu_types: tuple[GpuType, ...], tp: int | None, device: str = "gpu",
                 nodes: int | None = None) -> tuple[Option, ...]:
    """A stand-in estimator: `big` needs 2 × 40 GiB or 1 × 70 GiB, `small` 1 × 20 GiB."""
    if model == "big":
        return (Option("awq", "vllm", 1, 70 * GIB, "7.5", 72), Option("awq", "vllm", 2, 40 * GIB, "7.5", 72))
    if model == "small":
        return (Option("bf16", "vllm", 1, 20 * GIB, "8.0", 100),)
    raise NotFound(f"unknown model {model!r}")


def write(tmp_path: Path, name: str, obj: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


FLEET = {"nodes": [
    {"name": "n1", "gpus": [{"type": "A100-80GB", "count": 2}], "ram_gib": 1024, "disk_gib": 4000,
     "labels": {"rack": "a"}},
    {"name": "n2", "gpus": [{"memory_gib": 48, "compute_capability": "8.9", "count": 2}], "ram_gib": 256},
]}


def test_result_shape_and_counts() -> None:
    requests = {"requests": [{"model": "big", "replicas": 3}, {"model": "small", "replicas": 2}]}
    out = what_if_files(FLEET, requests, fake_options, WORKLOAD).as_json()
    assert list(out) == ["placements", "rejected", "placed_before_first_reject", "placed_total",
                         "vram_reserved_fraction"]
    assert all(set(p) == {"request", "replica", "node", "gpus", "per_gpu_bytes"} for p in out["placements"])
    assert all(set(r) == {"request", "replica", "reason"} for r in out["rejected"])
    # big: n1 takes 1×70, n2 takes 2×40; the third replica has no node left (anti-affinity)
    assert [(p["request"], p["replica"], p["node"]) for p in out["placements"][:2]] == [(0, 0, "n1"), (0, 1, "n2")]
    assert out["rejected"][0]["request"] == 0 and out["rejected"][0]["replica"] == 2
    assert out["placed_before_first_reject"] == 2
    assert out["placed_total"] == len(out["placements"])
    total = 2 * 80 * GIB + 2 * 48 * GIB
    reserved = sum(p["per_gpu_bytes"] * len(p["gpus"]) for p in out["placements"])
    assert out["vram_reserved_fraction"] == round(reserved / total, 4)


def test_unknown_model_rejects_its_replicas_and_planning_goes_on() -> None:
    out = what_if_files(FLEET, {"requests": [{"model": "nope", "replicas": 2}, {"model": "small"}]},
                        fake_options, WORKLOAD).as_json()
    assert [r["reason"] for r in out["rejected"]] == ["unknown model 'nope'"] * 2
    assert out["placed_total"] == 1 and out["placed_before_first_reject"] == 0


BAD_FLEETS = [
    ({"nodes": "n1"}, "nodes: expected a list"),
    ({"nodes": []}, "no nodes"),
    ({"nodes": [{"name": "a", "gpus": [{"type": "Z9000"}]}]}, "nodes[0].gpus[0].type: unknown GPU type 'Z9000'"),
    ({"nodes": [{"gpus": [{"count": 2}]}]}, "memory_gib"),
    ({"nodes": [{"gpus": [{"type": "L4", "count": -1}]}]}, "count: must be positive"),
    ({"nodes": [{"name": "a"}, {"name": "a"}]}, "duplicate node name"),
    ({"nodes": [{"name": "a", "state": "sleepy"}]}, "state"),
    ({"nodes": [{"name": "a", "ram_gib": "lots"}]}, "ram_gib: expected a number"),
    ({"nodes": [{"gpus": [{"memory_gib": 24, "compute_capability": "x"}]}]}, "compute_capability"),
]


@pytest.mark.parametrize(("fleet", "words"), BAD_FLEETS)
def test_bad_fleet_names_the_field(fleet: Any, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_fleet(fleet)
    assert words in e.value.message


@pytest.mark.parametrize(("requests", "words"), [
    ({"requests": [{"quant": "awq"}]}, "requests[0].model: required"),
    ({"requests": [{"model": "m", "replicas": 1.5}]}, "whole number"),
    ({"requests": [{"model": "m", "device": "tpu"}]}, "device"),
    ({"request": []}, "requests: expected a list"),
])
def test_bad_requests_name_the_field(requests: Any, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_requests(requests)
    assert words in e.value.message


def test_gpu_given_by_memory_and_capability() -> None:
    snap = parse_fleet(FLEET)
    n2 = snap.by_name["n2"]
    assert [g.memory_total for g in n2.gpus] == [48 * GIB] * 2 and n2.gpus[0].compute_capability == "8.9"
    assert snap.by_name["n1"].labels == (("rack", "a"),)


def test_cordoned_node_in_file_gets_nothing() -> None:
    fleet = {"nodes": [{"name": "c", "state": "cordoned", "gpus": [{"type": "H100", "count": 8}]},
                       {"name": "r", "gpus": [{"type": "L4"}]}]}
    result = what_if(parse_fleet(fleet), parse_requests({"requests": [{"model": "small", "replicas": 2}]}),
                     fake_options, WORKLOAD)
    assert [r.placement.node for r in result.rows if r.placement] == ["r"]


def test_cli_json_on_fresh_files(tmp_path: Path) -> None:
    fleet = write(tmp_path, "my-fleet.json", {"nodes": [
        {"name": f"l40s-{i}", "gpus": [{"type": "L40S", "count": 4}], "ram_gib": 512, "disk_gib": 2000}
        for i in range(4)]})
    requests = write(tmp_path, "asks.json", {"requests": [
        {"model": "qwen2.5-72b", "quant": "awq", "context": 8192, "replicas": 6},
        {"model": "llama3.1-8b", "context": 4096, "replicas": 2}]})
    res = CliRunner().invoke(app, ["plan", "--fleet", str(fleet), "--requests", str(requests), "-o", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["placed_total"] >= 4  # one 72B AWQ replica per node (anti-affinity), then the 8B ones
    assert 0 < out["vram_reserved_fraction"] <= 1
    for p in out["placements"]:
        assert p["node"].startswith("l40s-") and p["per_gpu_bytes"] <= 46068 * 1024 * 1024


def test_cli_table(tmp_path: Path) -> None:
    fleet = write(tmp_path, "f.json", FLEET)
    requests = write(tmp_path, "r.json", {"requests": [{"model": "llama3.1-8b", "quant": "awq"}]})
    res = CliRunner().invoke(app, ["plan", "--fleet", str(fleet), "--requests", str(requests)])
    assert res.exit_code == 0, res.output
    assert "llama3.1-8b" in res.stdout and "placed 1 of 1 replicas" in res.stdout


@pytest.mark.parametrize(("fleet_text", "words"), [
    ("{not json", "not valid JSON"),
    ('{"nodes": [{"gpus": [{"type": "Z9000"}]}]}', "unknown GPU type"),
])
def test_cli_bad_file_one_line_exit_2(tmp_path: Path, fleet_text: str, words: str) -> None:
    fleet = tmp_path / "f.json"
    fleet.write_text(fleet_text)
    requests = write(tmp_path, "r.json", {"requests": [{"model": "llama3.1-8b"}]})
    res = CliRunner().invoke(app, ["plan", "--fleet", str(fleet), "--requests", str(requests)])
    assert res.exit_code == 2
    assert words in res.output and res.output.count("error:") == 1


def test_cli_missing_file_and_live_mode(tmp_path: Path) -> None:
    requests = write(tmp_path, "r.json", {"requests": []})
    res = CliRunner().invoke(app, ["plan", "--fleet", str(tmp_path / "absent.json"), "--requests", str(requests)])
    assert res.exit_code == 2 and "cannot read" in res.output
    # without --fleet it plans on the live inventory: no controller here, so one clear line and exit 2
    env = {"FLEET_DATA_DIR": str(tmp_path / "nowhere"), "FLEET_CONTROLLER": "127.0.0.1:1", "FLEET_CA": ""}
    res = CliRunner().invoke(app, ["plan", "--requests", str(requests)], env=env)
    assert res.exit_code == 2 and "controller" in res.output and res.output.count("error:") == 1
