"""`fleet status`: the fleet on one screen, from the same views `fleet nodes`, `capacity`, `deployments`,
`drain --status` and `events` use (so the summary never disagrees with the details)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet.controller.app import capacity, deployments, drain, events
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
    now = time.time() if now is None else now
    views = capacity.node_views(ctl)
    totals = capacity.totals(views)
    by_state: dict[str, int] = {}
    for v in views:
        by_state[v.state] = by_state.get(v.state, 0) + 1
    serving = degraded = down = declared_only = wanted = healthy = 0
    for d in deployments.every(ctl):
        ok = sum(r.state == SERVING and r.desired == "run" and r.node in ctl.liveness.alive for r in d.replicas)
        declared = sum(r.state == DECLARED for r in d.replicas)
        want = d.deployment.replicas_wanted
        wanted += want
        healthy += ok
        if ok >= want:
            serving += 1
        elif ok:
            degraded += 1
        elif declared and declared == len(d.replicas):
            declared_only += 1
        else:
            down += 1
    active = [r.node for r in ctl.store.drains()]
    return Summary(
        nodes=by_state, nodes_declared=sum(v.inventory.get("gpuProbe") == "declared" for v in views),
        gpu_count=totals.gpu_count, gpus_free=sum(1 for v in views for g in v.gpus if not g.memory_reserved),
        vram_total=totals.vram_total, vram_reserved=totals.vram_reserved, vram_free=totals.vram_free,
        deployments=serving + degraded + down + declared_only, deployments_serving=serving,
        deployments_degraded=degraded, deployments_down=down, deployments_declared=declared_only,
        replicas_wanted=wanted, replicas_serving=healthy,
        drains=drain.status(ctl, active) if active else [],
        warnings=events.warnings(ctl, now - WARNINGS_WINDOW), uptime=now - ctl.started)
