"""Capacity: every node and GPU with total, reserved, used and free memory, as operators see it.

The one view that `fleet capacity`, `fleet nodes`, the capacity page and /metrics render, so they never
disagree; free memory is fleet.controller.core.snapshot.free_memory, the same rule placement uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fleet.controller.app.controller import Controller
from fleet.controller.app.paging import page
from fleet.controller.core.errors import NotFound
from fleet.controller.core.snapshot import free_memory, used_by_others
from fleet.controller.store.schema import GpuRow, NodeRow


@dataclass(frozen=True)
class GpuCapacity:
    uuid: str
    index: int
    name: str
    compute_capability: str
    driver: str
    declared: bool
    memory_total: int
    memory_used: int  # every process, as last reported
    memory_reserved: int  # by fleet's replicas
    memory_used_by_others: int  # used beyond fleet's reservations
    memory_free: int  # what a new replica may reserve
    utilization: int
    temperature: int


@dataclass(frozen=True)
class NodeView:
    row: NodeRow
    state: str  # ready, cordoned, draining, drained, offline
    gpus: tuple[GpuCapacity, ...]
    last_heartbeat: float

    @cached_property
    def inventory(self) -> dict[str, Any]:
        """As the agent last reported it (proto3 JSON names: ramTotal, diskFree, …); parsed when first read."""
        return json.loads(self.row.inventory or "{}")  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return self.row.name

    def number(self, key: str) -> int:
        return int(self.inventory.get(key, 0) or 0)  # proto3 JSON writes 64-bit numbers as strings

    @property
    def engines(self) -> list[str]:
        return [e.get("name", "") for e in self.inventory.get("engines", [])]


@dataclass(frozen=True)
class Totals:
    nodes: int
    nodes_ready: int
    gpu_count: int
    vram_total: int
    vram_reserved: int
    vram_free: int
    ram_total: int
    disk_free: int


def _gpu(g: GpuRow, reserved: int, usage: tuple[int, int, int] | None) -> GpuCapacity:
    used, util, temp = usage if usage is not None else (g.memory_used, g.utilization, g.temperature)
    return GpuCapacity(
        uuid=g.uuid, index=g.index, name=g.name, compute_capability=g.compute_capability, driver=g.driver,
        declared=g.declared, memory_total=g.memory_total, memory_used=used, memory_reserved=reserved,
        memory_used_by_others=used_by_others(used, reserved), memory_free=free_memory(g.memory_total, reserved, used),
        utilization=util, temperature=temp)


# node -> (what its GPU figures were made from, the figures): at 10,000 nodes most are unchanged between reads,
# and building 80,000 GPU views per listing costs seconds.
_GPU_VIEWS: dict[str, tuple[tuple[object, ...], tuple[GpuCapacity, ...]]] = {}


def _gpus(ctl: Controller, row: NodeRow, gpus: list[GpuRow], reserved: dict[str, int]) -> tuple[GpuCapacity, ...]:
    usage = ctl.liveness.gpu_usage
    # The mirror's change sequence covers the GPU rows and the reservations on them; live usage is checked too.
    key = (id(ctl.store.mirror), ctl.store.mirror.touched.get(row.name), tuple(usage.get(g.uuid) for g in gpus))
    cached = _GPU_VIEWS.get(row.name)
    if cached is None or cached[0] != key:
        if len(_GPU_VIEWS) > 200_000:
            _GPU_VIEWS.clear()
        cached = _GPU_VIEWS[row.name] = (key, tuple(_gpu(g, reserved.get(g.uuid, 0), usage.get(g.uuid))
                                                    for g in gpus))
    return cached[1]


def _view(ctl: Controller, row: NodeRow, gpus: list[GpuRow], reserved: dict[str, int],
          heard: dict[str, float]) -> NodeView:
    return NodeView(
        row=row, state=ctl.node_state(row), gpus=_gpus(ctl, row, gpus, reserved),
        last_heartbeat=max(row.last_heartbeat, heard.get(row.name, 0.0), ctl.liveness.last_seen.get(row.name, 0.0)))


def node_views(ctl: Controller, after: str = "", limit: int = 0) -> list[NodeView]:
    """Nodes in name order: all of them, or `limit` after the name `after` (a page)."""
    names = page(sorted(ctl.store.mirror.nodes), after, limit)
    reserved = ctl.store.reserved_by_gpu()
    heard = ctl.store.heartbeats(names)  # sessions on other controllers beat into the store
    return [_view(ctl, ctl.store.mirror.nodes[n], ctl.store.gpus(n), reserved, heard) for n in names]



def node_view(ctl: Controller, name: str) -> NodeView:
    row = ctl.store.get_node(name)
    if row is None:
        names = ", ".join(n.name for n in ctl.store.nodes()) or "none yet"
        raise NotFound(f"no node named {name!r}; nodes: {names}")
    return _view(ctl, row, ctl.store.gpus(row.name), ctl.store.reserved_by_gpu(), ctl.store.heartbeats([name]))


def fleet_totals(ctl: Controller) -> Callable[[], Totals]:
    """The totals over every node: what they are made of is taken now (references and shallow copies, a few
    milliseconds at 10,000 nodes); the returned function adds them up, and may run in a thread."""
    mirror = ctl.store.mirror
    gpus = [g for gs in list(mirror.gpus.values()) for g in gs]
    reserved, usage = dict(mirror.reserved), dict(ctl.liveness.gpu_usage)
    facts = [mirror.facts(name) for name in list(mirror.nodes)]
    nodes = [(r.alive, r.admin_state) for r in list(mirror.nodes.values())]

    def add_up() -> Totals:
        free = 0
        for g in gpus:
            used = usage[g.uuid][0] if g.uuid in usage else g.memory_used
            free += free_memory(g.memory_total, reserved.get(g.uuid, 0), used)
        return Totals(
            nodes=len(nodes), nodes_ready=sum(1 for alive, admin in nodes if alive and admin == "ready"),
            gpu_count=len(gpus), vram_total=sum(g.memory_total for g in gpus),
            vram_reserved=sum(reserved.get(g.uuid, 0) for g in gpus), vram_free=free,
            ram_total=sum(f.ram_total for f in facts), disk_free=sum(f.disk_free for f in facts))

    return add_up


def totals(views: list[NodeView]) -> Totals:
    gpus = [g for v in views for g in v.gpus]
    return Totals(
        nodes=len(views), nodes_ready=sum(v.state == "ready" for v in views), gpu_count=len(gpus),
        vram_total=sum(g.memory_total for g in gpus), vram_reserved=sum(g.memory_reserved for g in gpus),
        vram_free=sum(g.memory_free for g in gpus), ram_total=sum(v.number("ramTotal") for v in views),
        disk_free=sum(v.number("diskFree") for v in views))
