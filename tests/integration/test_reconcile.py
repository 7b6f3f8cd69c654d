"""The reconciler and drains (app/reconcile.py, app/drain.py) on a real SQLite store, with explicit clocks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fleet.controller.app import drain
from fleet.controller.app.place import PlaceArgs, place_deployment
from fleet.controller.app.reconcile import fence_offline, fill_missing
from fleet.controller.store.mirror import DEPLOYMENT
from fleet.controller.store.repository import touch
from fleet.controller.store.schema import DeploymentRow
from tests.integration.fleet_state import controller, go_offline, join, report


def setup(tmp_path: Path, url: str, nodes: dict[str, str], **settings: Any):  # type: ignore[no-untyped-def]
    ctl = controller(tmp_path, url, **settings)
    for name, gpus in nodes.items():
        join(ctl, name, gpus)
    return ctl


def place(ctl: Any, node: str, name: str = "chat", **kw: Any) -> str:
    outcome = place_deployment(ctl, PlaceArgs("llama3.1-8b", quant="bf16", name=name, node=node, **kw), time.time())
    assert outcome.placed, outcome.summary
    report(ctl, node)
    return ctl.store.replicas(deployment=name)[0].id


def running(ctl: Any, name: str = "chat") -> list[tuple[str, str]]:
    return sorted((r.node, r.state) for r in ctl.store.replicas(deployment=name) if r.desired == "run")


# ---------------------------------------------------------------- offline nodes

OFFLINE = [
    # (case, seconds offline, expected running replicas of chat after fencing and filling)
    ("just gone: unknown, not moved yet", 5, [("a", "unknown")]),
    ("past the grace: fenced and placed on b", 61, [("b", "pending")]),
]


@pytest.mark.parametrize("case,offline_for,expected", OFFLINE, ids=[row[0] for row in OFFLINE])
def test_offline_node(tmp_path: Path, store_url: str, case: str, offline_for: float,
                      expected: list[tuple[str, str]]) -> None:
    ctl = setup(tmp_path, store_url, {"a": "1xA100-80GB", "b": "1xA100-80GB"}, reschedule_after=60, retry_every=0)
    old = place(ctl, "a")
    now = time.time()
    go_offline(ctl, "a", now)
    fence_offline(ctl, now)
    fence_offline(ctl, now + offline_for)
    fill_missing(ctl, now + offline_for)
    assert running(ctl) == expected
    if offline_for > 60:
        fenced = next(r for r in ctl.store.replicas(deployment="chat") if r.id == old)
        assert fenced.desired == "stop" and "offline" in fenced.message


def test_fill_missing_waits_retry_every_between_tries(tmp_path: Path, store_url: str) -> None:
    ctl = setup(tmp_path, store_url, {"a": "1xL40S"}, retry_every=10)  # room for one replica only
    place(ctl, "a", replicas=1)
    with ctl.store.session() as s:  # the operator wants two now, and there is room for none
        dep = s.get(DeploymentRow, "chat")
        assert dep is not None
        dep.replicas_wanted = 2
        s.add(dep)
        touch(s, DEPLOYMENT, ["chat"])
        s.commit()
    ctl.store.sync()
    now = time.time()
    fill_missing(ctl, now)
    assert ctl.repair.last_try["chat"] == now and running(ctl) == [("a", "healthy")]
    fill_missing(ctl, now + 5)
    assert ctl.repair.last_try["chat"] == now  # not tried again within retry_every
    join(ctl, "b", "1xL40S")
    fill_missing(ctl, now + 11)
    assert running(ctl) == [("a", "healthy"), ("b", "pending")]


# ---------------------------------------------------------------- drains

def test_drain_is_make_before_break(tmp_path: Path, store_url: str) -> None:
    ctl = setup(tmp_path, store_url, {"a": "1xA100-80GB", "b": "1xA100-80GB"}, drain_min_healthy=5)
    old = place(ctl, "a")
    now = time.time()
    views = drain.start(ctl, ["a"], now, who="tests")
    assert views[0].state == "active" and [m[2] for m in views[0].moves] == ["b"]
    assert running(ctl) == [("a", "healthy"), ("b", "pending")]  # the old copy serves until the new one does
    new = next(r for r in ctl.store.replicas(deployment="chat") if r.node == "b")
    assert new.replaces == old

    report(ctl, "b")  # healthy now, but not yet for drain_min_healthy
    drain.drive(ctl, ctl.store.get_drain("a"), time.time())  # type: ignore[arg-type]
    assert running(ctl) == [("a", "healthy"), ("b", "healthy")]
    drain.drive(ctl, ctl.store.get_drain("a"), time.time() + 6)  # type: ignore[arg-type]
    assert running(ctl) == [("b", "healthy")]
    report(ctl, "a", "stopped")  # a's agent applied the new set: nothing runs there
    drain.drive(ctl, ctl.store.get_drain("a"), time.time() + 7)  # type: ignore[arg-type]
    assert ctl.store.get_drain("a").state == "done"  # type: ignore[union-attr]
    assert ctl.store.get_node("a").admin_state == "drained"  # type: ignore[union-attr]


def test_driving_a_drain_twice_starts_one_replacement(tmp_path: Path, store_url: str) -> None:
    """What the Drain RPC and the reconcile job both do in the same second (they run on one loop, in turn)."""
    ctl = setup(tmp_path, store_url, {"a": "1xA100-80GB", "b": "2xA100-80GB"})
    place(ctl, "a")
    now = time.time()
    drain.start(ctl, ["a"], now, who="tests")
    drain.drive(ctl, ctl.store.get_drain("a"), now)  # type: ignore[arg-type]
    assert running(ctl) == [("a", "healthy"), ("b", "pending")]


BLOCKED = [
    # (case, force, deadline, expected running, words in the drain's message)
    ("no room, no force: blocked and says how to go on", False, 0.0, [("a", "healthy")], "--force` stops it"),
    ("no room, --force: stopped without a replacement", True, 0.0, [], "stopped without a replacement"),
    ("no room, deadline passed: stopped too", False, 1.0, [], "stopped without a replacement"),
]


@pytest.mark.parametrize("case,force,deadline,expected,words", BLOCKED, ids=[row[0] for row in BLOCKED])
def test_drain_without_room(tmp_path: Path, store_url: str, case: str, force: bool, deadline: float,
                            expected: list[tuple[str, str]], words: str) -> None:
    ctl = setup(tmp_path, store_url, {"a": "1xA100-80GB", "b": "1xL4"})
    place(ctl, "a")
    now = time.time()
    views = drain.start(ctl, ["a"], now, who="tests", force=force, deadline_seconds=deadline)
    assert [b[1] for b in views[0].blocked] == ["chat"]
    messages = [views[0].message]
    drain.drive(ctl, ctl.store.get_drain("a"), now + 2)  # type: ignore[arg-type]
    messages.append(ctl.store.get_drain("a").message)  # type: ignore[union-attr]
    assert running(ctl) == expected
    assert any(words in m for m in messages), messages


def test_dry_run_plans_and_changes_nothing(tmp_path: Path, store_url: str) -> None:
    ctl = setup(tmp_path, store_url, {"a": "1xA100-80GB", "b": "1xA100-80GB"})
    place(ctl, "a")
    views = drain.start(ctl, ["a"], time.time(), who="tests", dry_run=True)
    assert views[0].state == "planned" and [m[2] for m in views[0].moves] == ["b"]
    assert ctl.store.get_drain("a") is None and ctl.store.get_node("a").admin_state == "ready"  # type: ignore[union-attr]
    assert running(ctl) == [("a", "healthy")]
