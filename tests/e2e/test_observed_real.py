"""Observed memory from real engines: a llama-server replica and a vLLM CPU replica report what they use (RSS of
the engine's process tree, plus the engine's own memory lines); it appears in `fleet deployment describe`,
`fleet estimate` and /metrics, and a second placement of the same key uses it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.cpu_fleet import deployment, start_cpu_fleet, stop_cpu_fleet
from tests.integration.harness import Fleet, wait_for

pytestmark = pytest.mark.e2e

MIB = 2**20


def metrics(f: Fleet) -> dict[str, float]:
    admin = (f.data_dir / "admin-token").read_text().strip()  # /metrics is for readers only
    req = urllib.request.Request(f"http://{f.http}/metrics", headers={"Authorization": f"Bearer {admin}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if line and not line.startswith("#"))}


def observed_replica(f: Fleet, name: str, *terms: str) -> dict[str, Any] | None:
    """The deployment once its replica reports the given observed terms (None until then)."""
    d = deployment(f, name)
    seen = d["replicas"][0]["observed"] if d["replicas"] else None
    return d if seen and all(seen[t] > 0 for t in terms) else None


def check_learned(f: Fleet, name: str, estimate_args: list[str], place_args: list[str],
                  terms: tuple[str, ...] = ("total", "weights", "kv_cache")) -> dict[str, Any]:
    """describe, estimate and /metrics show the observation; a second placement of the same key uses it."""
    d = wait_for(lambda: observed_replica(f, name, *terms), 120, "observed memory")
    rep = d["replicas"][0]
    seen = rep["observed"]
    assert seen["ram"] == seen["total"] and seen["engine_version"]
    assert d["observed"]["replicas"] >= 1 and d["observed"]["total"] >= seen["total"]
    table = f.cli("deployment", "describe", name)
    assert "OBSERVED" in table.stdout

    est = f.cli("estimate", *estimate_args, "-o", "json")
    assert est.returncode == 0, est.stderr
    got = json.loads(est.stdout)["observed"]
    assert got["replicas"] >= 1 and got["total"] >= seen["total"] and got["weights"] == seen["weights"]
    assert "observed on" in f.cli("estimate", *estimate_args).stdout

    series = metrics(f)
    key = f'fleet_replica_memory_observed_bytes{{deployment="{name}",gpu="cpu",node="cpu",replica="{rep["id"]}"}}'
    assert series[key] > 0

    # A second placement of the same key: never below the estimate unless trusted; trusted, observed + margin.
    plain = json.loads(f.cli("place", *place_args, "--name", "again", "--dry-run", "-o", "json").stdout)
    trusted = f.cli("place", *place_args, "--name", "trusted", "--dry-run", "--trust-observed", "-o", "json")
    assert trusted.returncode == 0, trusted.stderr + trusted.stdout
    t = json.loads(trusted.stdout)["deployment"]
    need = d["observed"]["total"]
    if d["engine"] == "vllm":  # its KV pool is what fleet gave it: the need is the rest + one sequence's KV
        need = need - d["observed"]["kv_cache"] + t["estimate"]["kv_cache"]
    assert t["replicas"][0]["ram_reserved"] >= need + 256 * MIB
    assert plain["deployment"]["replicas"][0]["ram_reserved"] == max(
        plain["deployment"]["estimate"]["total"], t["replicas"][0]["ram_reserved"])
    return d


@pytest.fixture
def llama_fleet(tmp_path: Path, llama_server_path: Path, smollm2_gguf: Path) -> Iterator[Fleet]:
    f = start_cpu_fleet(tmp_path, smollm2_gguf, ["cpu"])
    try:
        yield f
    finally:
        stop_cpu_fleet(f)


def test_llama_server_replica_reports_observed_memory(llama_fleet: Fleet) -> None:
    f = llama_fleet
    r = f.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--wait",
              "--timeout", "120", "-o", "json", timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout
    name = json.loads(r.stdout)["name"]
    d = check_learned(f, name, ["smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512"],
                      ["smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512"])
    seen = d["replicas"][0]["observed"]
    # llama.cpp's own lines: the 92 MiB model buffer, the KV cache of 512 cells, the compute buffer
    assert 80 * MIB < seen["weights"] < 110 * MIB and seen["kv_cache"] > MIB and seen["activations"] > MIB


@pytest.fixture
def vllm_fleet(tmp_path: Path, vllm_path: Path, tiny_llama_dir: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, heartbeat=0.5, offline_after=10.0)
    f.env["HF_HUB_OFFLINE"] = "1"
    f.start_controller()
    f.start_agent("cpu", extra=("--engine-ports", "42100-42199"))
    wait_for(lambda: f.states() == {"cpu": "ready"}, 60, "agent ready")  # vllm --version imports torch
    try:
        yield f
    finally:
        f.close()
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "vllm" in cmd and "421" in cmd:
                try:
                    proc.kill()
                except psutil.Error:
                    pass


def test_vllm_cpu_replica_reports_observed_memory(vllm_fleet: Fleet, tiny_llama_dir: Path) -> None:
    f = vllm_fleet
    add = f.cli("models", "add", "--from-config", str(tiny_llama_dir / "config.json"), "--hf-id", str(tiny_llama_dir),
                "--name", "tiny-llama", "--catalog-dir", str(f.data_dir / "catalog"), "-o", "json")
    assert add.returncode == 0, add.stderr
    quant = json.loads(add.stdout)["variants"][0]["quant"]
    args = ["tiny-llama", "--quant", quant, "--engine", "vllm", "--device", "cpu", "--context", "256"]
    r = f.cli("place", *args, "--wait", "--timeout", "300", "-o", "json", timeout=400)
    assert r.returncode == 0, r.stderr + r.stdout
    name = json.loads(r.stdout)["name"]
    f.env["FLEET_CATALOG_DIR"] = str(f.data_dir / "catalog")  # `fleet estimate` reads the same catalog
    # the CPU build logs its KV pool ("Explicitly set (0.06/...) GiB for KV cache") and the checkpoint size,
    # which for a 2-layer model rounds to 0.00 GiB: weights stay unknown, the rest is measured
    d = check_learned(f, name, args, args, terms=("total", "kv_cache"))
    seen = d["replicas"][0]["observed"]
    assert seen["kv_cache"] >= 0.05 * 2**30 and seen["total"] > 200 * MIB
