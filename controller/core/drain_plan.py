"""Drain planning: where every replica on the drained nodes would go, decided on a copy of the fleet.

Pure: a snapshot and the replicas to move in, a plan out (moves, and blocked replicas with the reason).
The same placement core decides each move; the hardest replica to place goes first so that the easy
ones do not take the only room the big one had.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from fleet.controller.core.placement import Placement, PlacementRequest, Workload, apply, place
from fleet.controller.core.snapshot import Snapshot


@dataclass(frozen=True)
class Movable:
    replica: str
    deployment: str
    request: PlacementRequest  # one replica of the deployment, with its options and constraints


@dataclass(frozen=True)
class Move:
    replica: str
    deployment: str
    placement: Placement


@dataclass(frozen=True)
class Blocked:
    replica: str
    deployment: str
    reason: str


@dataclass(frozen=True)
class DrainPlan:
    moves: tuple[Move, ...]
    blocked: tuple[Blocked, ...]


def difficulty(m: Movable) -> tuple[int, int, str]:
    """Bigger first: the smallest total GPU memory any of its options needs, then RAM; ties by id."""
    need = min((o.per_gpu_bytes * max(o.tp, 1) * o.nodes for o in m.request.options), default=0)
    ram = min((o.ram_bytes * o.nodes for o in m.request.options), default=0)
    return (-need, -ram, m.replica)


def cordoned(snapshot: Snapshot, nodes: Iterable[str]) -> Snapshot:
    """The fleet as placement sees it once these nodes are draining (no new replicas there)."""
    names = set(nodes)
    return snapshot.with_nodes(replace(n, state="draining") for n in snapshot.nodes if n.name in names)


def plan_drain(snapshot: Snapshot, nodes: Iterable[str], movables: Iterable[Movable], workload: Workload) -> DrainPlan:
    snap = cordoned(snapshot, nodes)
    moves: list[Move] = []
    blocked: list[Blocked] = []
    for m in sorted(movables, key=difficulty):
        plan = place(snap, m.request, workload)
        if not plan.complete and m.request.anti_affinity:
            # Another replica of the same deployment may share a node rather than not move at all.
            plan = place(snap, replace(m.request, anti_affinity=False), workload)
        if plan.complete:
            snap = apply(snap, plan)
            moves.append(Move(m.replica, m.deployment, plan.placements[0]))
        else:
            blocked.append(Blocked(m.replica, m.deployment, plan.closest or plan.why or "no node fits"))
    return DrainPlan(tuple(moves), tuple(blocked))
