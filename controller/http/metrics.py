"""Prometheus `/metrics`: fleet state read at scrape time, plus the gateway's and placement's own series.

State gauges are written from the controller's state at each scrape (no second copy of the truth to keep
in sync), in a thread; counters and histograms are module-level objects the gateway and the Place RPC update.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

from fleet.controller.app import observed
from fleet.controller.app.controller import Controller
from fleet.controller.core.replica_states import STATES
from fleet.controller.core.snapshot import NODE_STATES, free_memory
from fleet.controller.http.readers import readers

REPLICA_STATES = STATES
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `deployment` is a deployment name, or "(unknown)" for a model no deployment has: client input must not
# be able to create label values without bound.
GATEWAY_REQUESTS = Counter("fleet_gateway_requests", "Gateway requests answered, by deployment and HTTP status",
                           ["deployment", "code"])
GATEWAY_ERRORS = Counter("fleet_gateway_errors", "Gateway failures, by deployment and reason "
                         "(connect, no_replica, upstream, upstream_auth)", ["deployment", "reason"])
GATEWAY_SECONDS = Histogram(
    "fleet_gateway_request_seconds", "Gateway request duration until the last byte, by deployment", ["deployment"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0))
GATEWAY_OUTSTANDING = Gauge("fleet_gateway_outstanding_requests", "Gateway requests in flight, by deployment",
                            ["deployment"])


@dataclass(frozen=True)
class Scrape:
    """What /metrics reads, taken on the event loop in a few milliseconds (references and shallow copies);
    the text is written from it in a thread, so a 10,000-node scrape does not stop the controller."""

    now: float
    nodes: list[tuple[str, bool, str, float]]  # name, online, admin state, last heartbeat (as the mirror has it)
    gpus: dict[str, list[Any]]  # node -> GPU rows
    reserved: dict[str, int]
    usage: dict[str, tuple[int, int, int]]
    local_beats: dict[str, float]
    replicas: list[tuple[str, str, str]]  # deployment, state, id
    deployments: list[str]


def take(ctl: Controller, now: float) -> Scrape:
    m = ctl.store.mirror
    return Scrape(
        now=now, nodes=[(n, r.alive, r.admin_state, r.last_heartbeat) for n, r in m.nodes.items()],
        gpus=dict(m.gpus), reserved=dict(m.reserved), usage=dict(ctl.liveness.gpu_usage),
        local_beats=dict(ctl.liveness.last_seen),
        replicas=[(r.deployment, r.state, r.id) for r in m.replicas.values()], deployments=list(m.deployments))


# Labels are written in name order, as prometheus_client writes them, so series keep their identity.
def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(out: list[str], name: str, help_: str) -> None:
    out.append(f"# HELP {name} {help_}\n# TYPE {name} gauge\n")


def render(ctl: Controller, s: Scrape) -> bytes:
    """The fleet's gauges in Prometheus' text format, written directly: at 10,000 nodes of 8 GPUs that is
    about 400,000 samples, which prometheus_client's objects take over ten seconds to produce."""
    heard = ctl.store.heartbeats()  # every controller's sessions beat into the store
    out: list[str] = []
    rows: list[tuple[str, list[tuple[str, int, int, int, int]]]] = []
    for name, _online, _admin, _hb in sorted(s.nodes):
        per = []
        for g in s.gpus.get(name, ()):
            reserved = s.reserved.get(g.uuid, 0)
            used = s.usage[g.uuid][0] if g.uuid in s.usage else g.memory_used
            per.append((f'gpu="{_label(g.uuid)}",index="{g.index}",name="{_label(g.name)}",node="{_label(name)}"',
                        g.memory_total, reserved, used, free_memory(g.memory_total, reserved, used)))
        rows.append((name, per))
    for i, (metric, help_) in enumerate((
            ("fleet_gpu_memory_total_bytes", "GPU memory"),
            ("fleet_gpu_memory_reserved_bytes", "GPU memory reserved by fleet's replicas"),
            ("fleet_gpu_memory_used_bytes", "GPU memory in use by every process, as last reported"),
            ("fleet_gpu_memory_free_bytes", "GPU memory a new replica may reserve: total - reserved - used by others "
                                            "(as `fleet capacity` shows)"))):
        _family(out, metric, help_)
        out.extend(f"{metric}{{{labels}}} {figures[i]}\n" for _, per in rows for labels, *figures in per)
    _family(out, "fleet_node_state", "1 for the node's current state, 0 for the others")
    for name, online, admin, _hb in sorted(s.nodes):
        current = admin if online else "offline"
        label = _label(name)
        out.extend(f'fleet_node_state{{node="{label}",state="{st}"}} {1 if st == current else 0}\n'
                   for st in NODE_STATES)
    _family(out, "fleet_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat")
    for name, _online, _admin, hb in sorted(s.nodes):
        last = max(hb, heard.get(name, 0.0), s.local_beats.get(name, 0.0))
        if last:
            out.append(f'fleet_node_heartbeat_age_seconds{{node="{_label(name)}"}} {max(0.0, s.now - last):.3f}\n')
    counts: dict[tuple[str, str], int] = {}
    for dep, state, _id in s.replicas:
        counts[(dep, state)] = counts.get((dep, state), 0) + 1
    extra: dict[str, set[str]] = {}
    for dep, state in counts:
        extra.setdefault(dep, set()).add(state)
    _family(out, "fleet_replicas", "Replicas by deployment and state")
    for dep in sorted(s.deployments):
        label = _label(dep)
        # every known state, zeros included, so a dashboard sees "0 healthy" rather than no series
        out.extend(f'fleet_replicas{{deployment="{label}",state="{st}"}} {counts.get((dep, st), 0)}\n'
                   for st in sorted({*REPLICA_STATES, *extra.get(dep, ())}))
    out.extend(_observed(ctl, {rid for _, _, rid in s.replicas}))
    return "".join(out).encode()


def _observed(ctl: Controller, current: set[str]) -> list[str]:
    out: list[str] = []
    seen: list[str] = []
    over: list[str] = []
    for o in observed.every(ctl):
        if o.replica not in current:
            continue  # kept for learning; not a live series
        gpus = json.loads(o.gpus or "{}")
        for gpu, used in (sorted(gpus.items()) if gpus else [("cpu", o.ram or o.total)]):
            labels = (f'deployment="{_label(o.deployment)}",gpu="{_label(gpu)}",node="{_label(o.node)}",'
                      f'replica="{_label(o.replica)}"')
            seen.append(f"fleet_replica_memory_observed_bytes{{{labels}}} {int(used)}\n")
            over.append(f"fleet_replica_memory_over_reservation{{{labels}}} "
                        f"{1 if o.over and int(used) > o.reserved else 0}\n")
    _family(out, "fleet_replica_memory_observed_bytes", "Memory a replica really uses, as its agent measured it: "
            'per GPU (NVML, the engine\'s processes) or RAM (gpu="cpu")')
    out.extend(seen)
    _family(out, "fleet_replica_memory_over_reservation", "1 when a replica uses more than it reserved on that GPU "
            "(or RAM): it can starve its neighbours")
    out.extend(over)
    return out


FRESH = 1.0  # seconds a rendered scrape is served again: concurrent scrapers share one rendering


def setup(app: web.Application, ctl: Controller, clock: Callable[[], float] = time.time) -> None:
    """`/metrics`, for the admin token or a viewer key only (Prometheus: `authorization` with a viewer key)."""
    who = readers(app, ctl)
    last: list[tuple[float, bytes]] = []
    lock = asyncio.Lock()

    async def fleet_gauges() -> bytes:
        async with lock:
            if last and time.monotonic() - last[0][0] < FRESH:
                return last[0][1]
            body = await asyncio.to_thread(render, ctl, take(ctl, clock()))
            last[:] = [(time.monotonic(), body)]
            return body

    async def metrics_handler(request: web.Request) -> web.Response:
        if (refused := who.refusal(request)) is not None:
            return refused
        # The process-wide registry (gateway, placement, process_*) and the fleet's own gauges.
        body = generate_latest(REGISTRY) + await fleet_gauges()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics_handler)
