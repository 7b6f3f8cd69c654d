"""Declared (simulated) nodes beside a real one, as in the README tour: real nodes are preferred, replicas on
declared nodes are `declared` (never healthy, never routed to, not waited for), and the CLI says so plainly."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Fleet, wait_for

ENGINES = ("--declare-engines", "vllm,llama.cpp")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("declared")
    fake = root / "llama-server"  # the real node's engine: answers --version; never launched (dry runs)
    fake.write_text("#!/bin/sh\necho 'version: 4242 (abc1234)' >&2\n")
    fake.chmod(0o755)
    f = Fleet(root)
    try:
        f.start_controller()
        f.start_agent("local", extra=("--llama-server", str(fake)))  # probes this machine: a real CPU node
        f.start_agent("gpu-01", "8xA100-80GB", extra=ENGINES)
        f.start_agent("gpu-02", "1xL40S", extra=ENGINES)
        wait_for(lambda: f.states() == dict.fromkeys(("local", "gpu-01", "gpu-02"), "ready"), 60, "three nodes")
        yield f
    finally:
        f.close()


def test_a_real_node_is_chosen_over_a_declared_one_and_explain_says_why(fleet: Fleet) -> None:
    r = fleet.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--dry-run",
                  "--explain", "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["node"] for x in out["deployment"]["replicas"]] == ["local"]
    verdicts = {v["node"]: v for v in out["nodes"]}
    assert verdicts["gpu-01"]["feasible"] and "declared node" in verdicts["gpu-01"]["reason"]
    assert verdicts["local"]["feasible"] and verdicts["local"]["reason"] == ""
    table = fleet.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--dry-run")
    words = " ".join(table.stdout.split())  # a table title may wrap
    assert "(dry run: nothing placed)" in words and "(active)" not in words


def test_a_replica_on_a_declared_node_is_declared_never_healthy_and_never_served(fleet: Fleet) -> None:
    r = fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--node", "gpu-01", "--name", "chat", "--wait",
                  "--timeout", "120")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "every replica is on a declared node (gpu-01)" in r.stderr
    assert "on declared node(s) gpu-01: accounted for planning, never launched" in r.stdout + r.stderr
    deps = json.loads(fleet.cli("deployments", "-o", "json").stdout)
    assert [(x["node"], x["state"]) for d in deps if d["name"] == "chat" for x in d["replicas"]] == \
        [("gpu-01", "declared")]
    assert "0/1 (1 declared)" in fleet.cli("deployments").stdout

    key = fleet.cli("apikey", "create", "--name", "declared-test")
    assert key.returncode == 0, key.stderr
    req = urllib.request.Request(f"http://{fleet.http}/v1/models",
                                 headers={"Authorization": f"Bearer {key.stdout.strip()}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.load(resp)["data"] == [], "the gateway lists no model that nothing serves"

    nodes = fleet.cli("nodes").stdout
    assert "8xA100-80GB (declared)" in nodes
    described = fleet.cli("node", "describe", "gpu-01").stdout  # engines found on this host, or declared ones
    assert "engines: " in described and "declared ()" not in described


def test_a_partial_fit_says_how_many_fit_and_blames_no_other_deployment(fleet: Fleet) -> None:
    r = fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--replicas", "3", "--gpu-type", "A100-80GB",
                  "--name", "q3", "--dry-run")
    assert r.returncode == 2
    assert "only 1 of 3 replicas fit (on gpu-01)" in r.stderr and "--replicas 1" in r.stderr, r.stderr
    assert "takes replica 0 of this placement" in r.stdout and "already runs a replica of q3" not in r.stdout


def test_a_removed_nodes_deployment_shows_no_replica_not_active(fleet: Fleet, tmp_path: Path) -> None:
    placed = fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--gpu-type", "L40S", "--name", "only-l40s")
    assert placed.returncode == 0, placed.stderr
    assert fleet.cli("node", "remove", "gpu-02", "--force").returncode == 0
    row = next(line for line in fleet.cli("deployments").stdout.splitlines() if "only-l40s" in line)
    assert "none" in row and "active" not in row, row
