"""A placement snapshot built from rows: the store's nodes, GPUs, replicas and reservations, frozen.

Liveness (which nodes are up) and live GPU usage come from the controller's memory and are passed in;
the core reads only the Snapshot this returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fleet.common.address import is_public
from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot, used_by_others
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import GpuRow, PartRow, ReplicaRow

Usage = Mapping[str, tuple[int, int, int]]  # GPU uuid -> (memory used, utilization, temperature), live


def build_snapshot(store: Store, states: Mapping[str, str], gpu_usage: Usage) -> Snapshot:
    """The fleet as placement sees it now: reservations from the store, liveness and usage from memory."""
    reserved = store.reserved_by_gpu()
    gpus: dict[str, list[GpuRow]] = {}
    for g in store.gpus():
        gpus.setdefault(g.node, []).append(g)
    replicas: dict[str, list[ReplicaRow]] = {}
    deployment_of: dict[str, str] = {}
    for r in store.replicas():
        replicas.setdefault(r.node, []).append(r)
        deployment_of[r.id] = r.deployment
    parts: dict[str, list[PartRow]] = {}
    for p in store.parts():
        parts.setdefault(p.node, []).append(p)
    nodes = []
    for row in store.nodes():
        inv = json.loads(row.inventory or "{}")
        ram_total = int(inv.get("ramTotal", 0))
        here = parts.get(row.name, [])
        ram_reserved = sum(r.ram_bytes for r in replicas.get(row.name, [])) + sum(p.ram_bytes for p in here)
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
            deployments=frozenset(r.deployment for r in replicas.get(row.name, []))
            | frozenset(deployment_of[p.replica] for p in here if p.replica in deployment_of),
            replica_count=len(replicas.get(row.name, [])) + len(here),
            multinode=multinode_engines(inv),
        ))
    return Snapshot(tuple(nodes))


def multinode_engines(inv: Mapping[str, Any]) -> frozenset[str]:
    """Engines that may run a part of a multi-node replica on this node (its inventory as proto3 JSON).

    The engine says it can (rpc-server present; vLLM new enough), the node advertises an address its peers can
    reach, and that address is not public unless the operator allowed it: rpc-server has no authentication.
    """
    address = str(inv.get("advertiseAddress", ""))
    if not address:
        return frozenset()
    if is_public(address) and not inv.get("allowPublicRpc"):
        return frozenset(e["name"] for e in inv.get("engines", []) if e.get("multinode") and e["name"] != "llama.cpp")
    return frozenset(e["name"] for e in inv.get("engines", []) if e.get("multinode") and e.get("name"))

