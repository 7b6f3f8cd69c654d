"""A placement snapshot built from rows: the store's nodes, GPUs, replicas and reservations, frozen.

Liveness (which nodes are up) and live GPU usage come from the controller's memory and are passed in;
the core reads only the Snapshot this returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot, used_by_others
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import GpuRow, ReplicaRow

Usage = Mapping[str, tuple[int, int, int]]  # GPU uuid -> (memory used, utilization, temperature), live


def build_snapshot(store: Store, states: Mapping[str, str], gpu_usage: Usage) -> Snapshot:
    """The fleet as placement sees it now: reservations from the store, liveness and usage from memory."""
    reserved = store.reserved_by_gpu()
    gpus: dict[str, list[GpuRow]] = {}
    for g in store.gpus():
        gpus.setdefault(g.node, []).append(g)
    replicas: dict[str, list[ReplicaRow]] = {}
    for r in store.replicas():
        replicas.setdefault(r.node, []).append(r)
    nodes = []
    for row in store.nodes():
        inv = json.loads(row.inventory or "{}")
        ram_total = int(inv.get("ramTotal", 0))
        ram_reserved = sum(r.ram_bytes for r in replicas.get(row.name, []))
        gpu_states = []
        for g in gpus.get(row.name, []):
            used = gpu_usage.get(g.uuid, (g.memory_used,))[0]
            held = reserved.get(g.uuid, 0)
            gpu_states.append(GpuState(uuid=g.uuid, index=g.index, name=g.name, memory_total=g.memory_total,
                                       memory_reserved=held, memory_used_other=used_by_others(used, held),
                                       compute_capability=g.compute_capability))
        nodes.append(NodeState(
            name=row.name, state=states.get(row.name, "offline"), gpus=tuple(gpu_states), ram_total=ram_total,
            ram_free=max(0, min(int(inv.get("ramAvailable", 0)), ram_total - ram_reserved)),
            disk_free=int(inv.get("diskFree", 0)),
            engines=frozenset(e["name"] for e in inv.get("engines", []) if e.get("name")),
            labels=tuple(sorted((inv.get("labels") or {}).items())),
            deployments=frozenset(r.deployment for r in replicas.get(row.name, [])),
            replica_count=len(replicas.get(row.name, [])),
            declared=inv.get("gpuProbe") == "declared",
        ))
    return Snapshot(tuple(nodes))
