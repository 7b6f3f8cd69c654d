"""Issue 6 with declared-GPU agents: drain make-before-break, dry-run with a blocked replica, offline nodes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Fleet, wait_for

ENGINES = ("--declare-engines", "vllm,llama.cpp")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, heartbeat=0.3, offline_after=2.0,
              controller_args=("--reschedule-after", "3", "--drain-min-healthy", "1"))
    f.start_controller()
    try:
        yield f
    finally:
        f.close()


def start(fleet: Fleet, nodes: dict[str, str]) -> None:
    for name, spec in nodes.items():
        fleet.start_agent(name, spec, extra=ENGINES)
    wait_for(lambda: fleet.states() == dict.fromkeys(nodes, "ready"), 30, "nodes ready")


def deployments(fleet: Fleet) -> list[dict[str, Any]]:
    return json.loads(fleet.cli("deployments", "-o", "json").stdout)


def replicas(fleet: Fleet, name: str) -> list[dict[str, Any]]:
    return next(d for d in deployments(fleet) if d["name"] == name)["replicas"]


def test_drain_moves_then_stops_and_uncordon(fleet: Fleet) -> None:
    start(fleet, {"a": "2xA100-80GB", "b": "2xA100-80GB"})
    r = fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--node", "a", "--name", "chat")
    assert r.returncode == 0, r.stderr
    # declared GPUs: replicas are accounted ("declared"), never launched, and drains move them all the same
    wait_for(lambda: [x["state"] for x in replicas(fleet, "chat")] == ["declared"], 20, "declared on a")

    dry = fleet.cli("drain", "a", "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)[0]
    assert [m["to"] for m in plan["moves"]] == ["b"] and plan["blocked"] == []
    assert fleet.states() == {"a": "ready", "b": "ready"}  # a dry run changes nothing

    seen: list[list[tuple[str, str]]] = []
    drain = fleet.cli("drain", "a", "--reason", "kernel update", "--detach")
    assert drain.returncode == 0, drain.stderr

    def drained() -> bool:
        now = [(x["node"], x["state"]) for x in replicas(fleet, "chat")]
        seen.append(now)
        return fleet.states()["a"] == "drained"

    wait_for(drained, 30, "a drained")
    # make-before-break: at every observation at least one replica was in place
    assert all(any(state == "declared" for _, state in obs) for obs in seen if obs), seen
    assert [(x["node"], x["state"]) for x in replicas(fleet, "chat")] == [("b", "declared")]
    node_a = next(n for n in fleet.nodes() if n["name"] == "a")
    assert node_a["cordon"]["reason"] == "kernel update"
    # a drained node gets nothing new until uncordoned
    r = fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--node", "a", "--name", "x")
    assert r.returncode == 2
    assert fleet.cli("uncordon", "a").returncode == 0
    assert fleet.states()["a"] == "ready"
    assert fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--node", "a", "--name", "x").returncode == 0


def test_dry_run_names_what_cannot_move(fleet: Fleet) -> None:
    start(fleet, {"big": "4xL4", "small": "1xL4"})
    r = fleet.cli("place", "qwen2.5-32b", "--quant", "awq", "--tp", "2", "--node", "big", "--name", "huge")
    assert r.returncode == 0, r.stderr
    r = fleet.cli("place", "smollm2-135m", "--quant", "bf16", "--node", "big", "--name", "tiny")
    assert r.returncode == 0, r.stderr
    dry = fleet.cli("drain", "big", "--dry-run", "-o", "json")
    plan = json.loads(dry.stdout)[0]
    assert {m["deployment"] for m in plan["moves"]} == {"tiny"}
    assert [b["deployment"] for b in plan["blocked"]] == ["huge"]
    assert "needs" in plan["blocked"][0]["reason"]
    table = fleet.cli("drain", "big", "--dry-run")
    assert "cannot move" in table.stdout and "huge" in table.stdout
    # the real drain blocks on it, says so, and --force stops it (break-before-make, stated)
    assert fleet.cli("drain", "big", "--detach").returncode == 0
    wait_for(lambda: "blocked" in _status(fleet, "big")["message"], 20, "blocked message")
    assert "huge" in _status(fleet, "big")["message"]
    assert fleet.states()["big"] == "draining"
    assert fleet.cli("drain", "big", "--force", "--detach").returncode == 0
    wait_for(lambda: fleet.states()["big"] == "drained", 30, "forced drain done")
    assert "without a replacement" in json.dumps(deployments(fleet)) or all(
        r["node"] != "big" for d in deployments(fleet) for r in d["replicas"])


def _status(fleet: Fleet, node: str) -> dict[str, Any]:
    r = fleet.cli("drain", node, "--status", "-o", "json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout)[0])


def test_offline_node_replicas_rescheduled_and_fenced(fleet: Fleet) -> None:
    start(fleet, {"a": "2xA100-80GB", "b": "2xA100-80GB"})
    assert fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--node", "a", "--name", "svc").returncode == 0
    wait_for(lambda: [x["state"] for x in replicas(fleet, "svc")] == ["declared"], 20, "declared")
    pid = fleet.agents["a"].pid
    os.kill(pid, signal.SIGSTOP)  # frozen, not dead: it will come back with its stale replica
    try:
        wait_for(lambda: fleet.states()["a"] == "offline", 20, "a offline")
        wait_for(lambda: [x["state"] for x in replicas(fleet, "svc") if x["node"] == "a"] == ["unknown"],
                 20, "replica unknown")
        # after the grace period (3 s here) it is placed elsewhere and in place there
        wait_for(lambda: ("b", "declared") in [(x["node"], x["state"]) for x in replicas(fleet, "svc")], 30,
                 "rescheduled on b")
    finally:
        os.kill(pid, signal.SIGCONT)
    # the node returns; its desired set no longer holds the old replica: it is stopped, one copy remains
    wait_for(lambda: fleet.states()["a"] == "ready", 20, "a back")
    wait_for(lambda: [(x["node"], x["state"]) for x in replicas(fleet, "svc")] == [("b", "declared")], 30,
             "exactly one copy")
    assert "stopped" in fleet.log("agent-a") or "stopping" in fleet.log("agent-a")


@pytest.mark.slow  # two controller starts and a full drain: with the e2e tests in CI
def test_drain_survives_a_controller_restart(fleet: Fleet) -> None:
    start(fleet, {"a": "2xA100-80GB", "small": "1xT4"})
    r = fleet.cli("place", "llama3.1-8b", "--quant", "bf16", "--node", "a", "--name", "svc", "--max-moves", "1")
    assert r.returncode == 0, r.stderr
    assert fleet.cli("drain", "a", "--detach").returncode == 0
    wait_for(lambda: "blocked" in _status(fleet, "a")["message"], 20, "drain blocked: nowhere to go")
    fleet.stop_controller(signal.SIGKILL)  # the drain lives in the store, not in the process
    fleet.start_controller()
    assert _status(fleet, "a")["state"] == "active"
    fleet.start_agent("c", "2xA100-80GB", extra=ENGINES)  # room appears: the restarted controller finishes it
    wait_for(lambda: fleet.states().get("a") == "drained", 40, "drain finished after restart")
    # (on a loaded machine `a` may miss its reconnect deadline after the restart and be fenced first; the
    # replica then reaches c through rescheduling rather than the drain: either way it ends there)
    wait_for(lambda: [(x["node"], x["state"]) for x in replicas(fleet, "svc")] == [("c", "declared")], 40,
             "the replica on c")


def test_a_drain_blocked_without_deadline_says_so_and_stops_watching(fleet: Fleet) -> None:
    start(fleet, {"big": "2xA100-80GB", "small": "1xL4"})
    r = fleet.cli("place", "qwen2-72b", "--quant", "awq", "--context", "8192", "--node", "big", "--name", "huge")
    assert r.returncode == 0, r.stderr
    # no deadline, no --force: the watching CLI does not wait forever for a deadline that does not exist
    watched = fleet.cli("drain", "big", "-o", "json", timeout=120)
    assert watched.returncode == 1, (watched.stdout, watched.stderr)
    assert "blocked with no deadline" in watched.stderr and "--force" in watched.stderr
    assert "wait for the deadline" not in watched.stderr + watched.stdout
    shown = json.loads(watched.stdout)[0]
    assert [b["deployment"] for b in shown["blocked"]] == ["huge"] and shown["deadline"] is None
    assert "cannot move" in watched.stderr and "huge" in watched.stderr  # the text lists what the JSON lists
    assert fleet.states()["big"] == "draining", "the drain stays active"

    status = _status(fleet, "big")
    assert [b["deployment"] for b in status["blocked"]] == ["huge"] and "needs" in status["blocked"][0]["reason"]
    assert "no deadline was set" in status["message"]
    text = fleet.cli("drain", "big", "--status").stdout
    assert "no deadline" in text and "cannot move" in text and "huge" in text

    # with a deadline, --status shows it and the block says when it ends
    assert fleet.cli("drain", "big", "--deadline", "1h", "--detach").returncode == 0
    wait_for(lambda: "deadline, in" in _status(fleet, "big")["message"], 20, "deadline in the message")
    status = _status(fleet, "big")
    assert status["deadline"] and 3500 < status["deadline"] - status["started_at"] <= 3600
    assert "deadline " in fleet.cli("drain", "big", "--status").stdout
