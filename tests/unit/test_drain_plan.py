"""Drain planning (core/drain_plan.py): table tests, a fleet and the replicas to move in, moves and blocks out."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.controller.core.drain_plan import Movable, cordoned, difficulty, plan_drain
from fleet.controller.core.placement import PlacementRequest
from tests.unit.placement_helpers import WORKLOAD, node, opt, snapshot


def movable(replica: str, per_gpu: float, tp: int = 1, deployment: str | None = None, **kw: Any) -> Movable:
    dep = deployment or replica.rsplit("-", 1)[0]
    return Movable(replica, dep, PlacementRequest(dep, 1, (opt(per_gpu, tp),), **kw))


TABLE = [
    # (case, nodes, draining, movables, expected moves {replica: node}, expected blocked {replica: reason words})
    ("moves to the only other node",
     [node("a", [40]), node("b", 1)], ["a"], [movable("chat-0", 40)],
     {"chat-0": "b"}, {}),
    ("never onto a node that is draining too",
     [node("a", [50]), node("b", [60]), node("c", 1)], ["a", "b"], [movable("x-0", 50), movable("y-0", 60)],
     {"y-0": "c"}, {"x-0": "needs 1 × 50.0 GiB"}),
    ("the hardest replica goes first and gets the one node it fits",
     [node("a", [70, 15]), node("big", 1), node("small", [40])],
     ["a"], [movable("small-0", 15), movable("big-0", 70)],
     {"big-0": "big", "small-0": "small"}, {}),
    ("nothing fits: blocked with the reason",
     [node("a", [75]), node("b", [60])], ["a"], [movable("chat-0", 75)],
     {}, {"chat-0": "needs 1 × 75.0 GiB"}),
    ("anti-affinity gives way rather than block a move",
     [node("a", [30]), node("b", [30], deployments=("chat",))], ["a"], [movable("chat-0", 30)],
     {"chat-0": "b"}, {}),
    ("TP 2 needs two free GPUs on one node",
     [node("a", [40, 40]), node("b", [0, 50]), node("c", [0, 0])], ["a"], [movable("chat-0", 40, tp=2)],
     {"chat-0": "c"}, {}),
]


@pytest.mark.parametrize("case,nodes,draining,movables,moves,blocked", TABLE, ids=[row[0] for row in TABLE])
def test_plan_drain(case: str, nodes: list[Any], draining: list[str], movables: list[Movable],
                    moves: dict[str, str], blocked: dict[str, str]) -> None:
    plan = plan_drain(snapshot(*nodes), draining, movables, WORKLOAD)
    assert {m.replica: m.placement.node for m in plan.moves} == moves
    assert set(b.replica for b in plan.blocked) == set(blocked)
    for b in plan.blocked:
        assert blocked[b.replica] in b.reason, b.reason


def test_difficulty_orders_by_total_gpu_memory_then_ram_then_id() -> None:
    small, big, pair = movable("s-0", 10), movable("b-0", 70), movable("p-0", 40, tp=2)
    assert sorted([small, big, pair], key=difficulty) == [pair, big, small]  # 80 GiB over two GPUs is hardest


def test_cordoned_marks_only_the_named_nodes() -> None:
    snap = cordoned(snapshot(node("a"), node("b")), ["a"])
    assert {n.name: n.state for n in snap.nodes} == {"a": "draining", "b": "ready"}


def test_the_plan_is_made_on_a_copy() -> None:
    before = snapshot(node("a", [40]), node("b", 1))
    plan_drain(before, ["a"], [movable("chat-0", 40)], WORKLOAD)
    assert [g.memory_reserved for g in before.by_name["b"].gpus] == [0]
