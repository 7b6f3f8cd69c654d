"""Prometheus `/metrics`: fleet state read at scrape time, plus the gateway's and placement's own series.

State gauges come from a Collector that asks the controller at each scrape (no second copy of the truth
to keep in sync); counters and histograms are module-level objects the gateway and the Place RPC update.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet.controller.app import capacity, observed
from fleet.controller.app.controller import Controller
from fleet.controller.core.replica_states import STATES
from fleet.controller.core.snapshot import NODE_STATES
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


class FleetCollector(Collector):
    """Node, GPU and replica gauges computed from the controller's state when Prometheus scrapes."""

    def __init__(self, ctl: Controller, clock: Callable[[], float] = time.time) -> None:
        self.ctl = ctl
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # registering must not query the store; collect() does the work at scrape time

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        gpu_labels = ["node", "gpu", "index", "name"]
        total = GaugeMetricFamily("fleet_gpu_memory_total_bytes", "GPU memory", labels=gpu_labels)
        reserved = GaugeMetricFamily("fleet_gpu_memory_reserved_bytes", "GPU memory reserved by fleet's replicas",
                                     labels=gpu_labels)
        used = GaugeMetricFamily("fleet_gpu_memory_used_bytes", "GPU memory in use by every process, as last reported",
                                 labels=gpu_labels)
        free = GaugeMetricFamily("fleet_gpu_memory_free_bytes", "GPU memory a new replica may reserve: total - "
                                 "reserved - used by others (as `fleet capacity` shows)", labels=gpu_labels)
        state = GaugeMetricFamily("fleet_node_state", "1 for the node's current state, 0 for the others",
                                  labels=["node", "state"])
        age = GaugeMetricFamily("fleet_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat",
                                labels=["node"])
        for n in capacity.node_views(self.ctl):
            for g in n.gpus:
                labels = [n.name, g.uuid, str(g.index), g.name]
                total.add_metric(labels, g.memory_total)
                reserved.add_metric(labels, g.memory_reserved)
                used.add_metric(labels, g.memory_used)
                free.add_metric(labels, g.memory_free)
            for s in NODE_STATES:
                state.add_metric([n.name, s], 1.0 if n.state == s else 0.0)
            if n.last_heartbeat:
                age.add_metric([n.name], max(0.0, now - n.last_heartbeat))
        yield from (total, reserved, used, free, state, age)

        replicas = GaugeMetricFamily("fleet_replicas", "Replicas by deployment and state",
                                     labels=["deployment", "state"])
        counts: dict[tuple[str, str], int] = {}
        for r in self.ctl.store.replicas():
            counts[(r.deployment, r.state)] = counts.get((r.deployment, r.state), 0) + 1
        for d in self.ctl.store.deployments():
            # every known state, zeros included, so a dashboard sees "0 healthy" rather than no series
            for s in sorted({*REPLICA_STATES, *(k[1] for k in counts if k[0] == d.name)}):
                replicas.add_metric([d.name, s], counts.get((d.name, s), 0))
        yield replicas
        yield from self.observed()

    def observed(self) -> Iterator[Metric]:
        labels = ["deployment", "replica", "node", "gpu"]
        seen = GaugeMetricFamily("fleet_replica_memory_observed_bytes", "Memory a replica really uses, as its agent "
                                 "measured it: per GPU (NVML, the engine's processes) or RAM (gpu=\"cpu\")",
                                 labels=labels)
        over = GaugeMetricFamily("fleet_replica_memory_over_reservation", "1 when a replica uses more than it "
                                 "reserved on that GPU (or RAM): it can starve its neighbours", labels=labels)
        current = {r.id for r in self.ctl.store.replicas()}
        for o in observed.every(self.ctl):
            if o.replica not in current:
                continue  # kept for learning; not a live series
            gpus = json.loads(o.gpus or "{}")
            for gpu, used in (sorted(gpus.items()) if gpus else [("cpu", o.ram or o.total)]):
                seen.add_metric([o.deployment, o.replica, o.node, gpu], int(used))
                over.add_metric([o.deployment, o.replica, o.node, gpu], 1.0 if o.over and int(used) > o.reserved
                                else 0.0)
        yield from (seen, over)


METRICS_REGISTRY = web.AppKey("fleet.metrics.registry", CollectorRegistry)


def setup(app: web.Application, ctl: Controller) -> None:
    """`/metrics`, for the admin token or a viewer key only (Prometheus: `authorization` with a viewer key)."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(ctl))
    app[METRICS_REGISTRY] = registry
    who = readers(app, ctl)

    async def metrics_handler(request: web.Request) -> web.Response:
        if (refused := who.refusal(request)) is not None:
            return refused
        # The process-wide registry (gateway, placement, process_*) and this app's state collector.
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics_handler)
