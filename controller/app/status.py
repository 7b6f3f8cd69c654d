"""`fleet status`: the fleet on one screen, from the same state `fleet nodes`, `capacity`, `deployments`,
`drain --status` and `events` read (so the summary never disagrees with the details)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet.controller.app import capacity, drain, events
from fleet.controller.app.controller import Controller
from fleet.controller.core.replica_states import DECLARED, SERVING
from fleet.controller.store.schema import EventRow

WARNINGS_WINDOW = 3600.0  # seconds of warnings shown


@dataclass(frozen=True)
class Summary:
    nodes: dict[str, int]
    nodes_declared: int
    gpu_count: int
    gpus_free: int
    vram_total: int
    vram_reserved: int
    vram_free: int
    deployments: int
    deployments_serving: int
    deployments_degraded: int
    deployments_down: int
    deployments_declared: int
    replicas_wanted: int
    replicas_serving: int
    drains: list[drain.DrainView] = field(default_factory=list)
    warnings: list[EventRow] = field(default_factory=list)
    uptime: float = 0.0


def summary(ctl: Controller, now: float | None = None) -> Summary:
    """From the store's mirror (no view per node is built: this is asked of fleets of thousands of nodes);
    drains and warnings from their tables."""
    now = time.time() if now is None else now
    mirror = ctl.store.mirror
    totals = capacity.fleet_totals(ctl)()
    by_state: dict[str, int] = {}
    for state in ctl.states().values():
        by_state[state] = by_state.get(state, 0) + 1
    serving = degraded = down = declared_only = wanted = healthy = 0
    for name, dep in mirror.deployments.items():
        replicas = ctl.store.replicas(deployment=name)
        ok = sum(r.state == SERVING and r.desired == "run" and ctl.is_alive(r.node) for r in replicas)
        declared = sum(r.state == DECLARED for r in replicas)
        wanted += dep.replicas_wanted
        healthy += ok
        if ok >= dep.replicas_wanted:
            serving += 1
        elif ok:
            degraded += 1
        elif declared and declared == len(replicas):
            declared_only += 1
        else:
            down += 1
    active = [r.node for r in ctl.store.drains()]
    gpus = [g for node_gpus in mirror.gpus.values() for g in node_gpus]
    return Summary(
        # a node reporting declared GPUs is a planning node (as placement sees it: fleet.controller.store.snapshot)
        nodes=by_state, nodes_declared=sum(any(g.declared for g in node_gpus) for node_gpus in mirror.gpus.values()),
        gpu_count=totals.gpu_count, gpus_free=sum(1 for g in gpus if not mirror.reserved.get(g.uuid)),
        vram_total=totals.vram_total, vram_reserved=totals.vram_reserved, vram_free=totals.vram_free,
        deployments=serving + degraded + down + declared_only, deployments_serving=serving,
        deployments_degraded=degraded, deployments_down=down, deployments_declared=declared_only,
        replicas_wanted=wanted, replicas_serving=healthy,
        drains=drain.status(ctl, active) if active else [],
        warnings=events.warnings(ctl, now - WARNINGS_WINDOW), uptime=now - ctl.started)
