"""Multi-node replicas against real processes: declared-GPU agents, the controller, the `fleet` CLI.

llama3.1-70b awq fits no node of 2×L4; with two it is one replica (TP 2 × PP 2) whose parts start in order and
end `declared` (accounted for planning, never launched); `fleet deployments -o json` lists its nodes, main
first; removal stops every part and frees both nodes; `fleet capacity` names the largest variant on one node
and across nodes. (Declared GPUs, but each agent reports this machine's real disk: every vLLM part downloads
the weights, so the model must fit that disk; deepseek-r1 on 8×H100 nodes is planned in
tests/unit/test_multinode_planning.py.)
"""

from __future__ import annotations

import json
from typing import Any

from tests.integration.harness import Fleet, wait_for

ENGINES = ("--declare-engines", "vllm,llama.cpp")


def deployments(fleet: Fleet) -> list[dict[str, Any]]:
    r = fleet.cli("deployments", "-o", "json")
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def test_a_replica_over_two_declared_nodes_starts_serves_and_is_removed(fleet: Fleet) -> None:
    for name in ("a", "b"):
        fleet.start_agent(name, "2xL4", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"a": "ready", "b": "ready"}, 30, "nodes ready")

    one = fleet.cli("place", "llama3.1-70b", "--quant", "awq", "--context", "8192", "--nodes", "1")
    assert one.returncode == 2
    assert "fits across 2 nodes: pass --nodes 2" in one.stderr and "no variant awq runs" not in one.stderr

    # Declared nodes launch nothing: the parts start in gang order and end `declared` (accounted, never
    # healthy), so --wait says at once that nothing of it will serve instead of waiting out its timeout.
    r = fleet.cli("place", "llama3.1-70b", "--quant", "awq", "--name", "r1", "--explain", "--context", "8192",
                  "--wait", "--timeout", "60", "-o", "json", timeout=90)
    assert r.returncode == 1 and "every replica is on a declared node" in r.stderr, r.stderr
    assert "no single node fits" in r.stderr and "TP 2 × PP 2" in r.stderr  # --explain: why two nodes, which
    [dep] = deployments(fleet)
    [rep] = dep["replicas"]
    assert rep["node"] == rep["nodes"][0] and sorted(rep["nodes"]) == ["a", "b"]
    assert [(p["rank"], p["role"], len(p["gpus"])) for p in rep["parts"]] == [(0, "main", 2), (1, "follower", 2)]
    assert rep["state"] == "declared" and all(p["state"] == "declared" for p in rep["parts"])
    assert rep["parts"][0]["address"]  # the main's rendezvous, as its agent reported it

    nodes = {n["name"]: n for n in fleet.nodes()}
    assert all(g["memory_reserved"] > 0 for n in nodes.values() for g in n["gpus"])

    logs = fleet.cli("logs", "r1", "--node", "b", "-n", "5")
    # the request reached b's agent for the part's own log (a declared part never starts an engine, so none yet)
    assert f"agent-b/replicas/{rep['parts'][1]['id']}/engine.log" in logs.stderr, logs.stderr
    wrong = fleet.cli("logs", "r1", "--node", "nowhere")
    assert wrong.returncode == 2 and "no part on node" in wrong.stderr

    assert fleet.cli("remove", "r1").returncode == 0
    wait_for(lambda: deployments(fleet) == [], 30, "every part stopped and the gang forgotten")
    nodes = {n["name"]: n for n in fleet.nodes()}
    assert all(g["memory_reserved"] == 0 for n in nodes.values() for g in n["gpus"])


def test_capacity_names_the_largest_variant_on_one_node_and_across(fleet: Fleet) -> None:
    for name in ("a", "b"):
        fleet.start_agent(name, "2xL4", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"a": "ready", "b": "ready"}, 30, "nodes ready")
    r = fleet.cli("capacity", "-o", "json")
    assert r.returncode == 0, r.stderr
    largest = {f["scope"]: f for f in json.loads(r.stdout)["largest"]}
    assert len(largest["one node"]["nodes"]) == 1 and len(largest["across nodes"]["nodes"]) == 2
    assert largest["across nodes"]["weights"] > largest["one node"]["weights"]
    table = fleet.cli("capacity")
    assert "largest that fits now, across nodes" in table.stdout
