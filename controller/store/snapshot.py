"""The placement snapshot from the store's in-memory mirror, kept incremental.

A fleet of 10,000 nodes changes a few nodes at a time (a placement, a report, a cordon), so the snapshot
is not rebuilt per placement: only the nodes the mirror marked dirty, whose liveness state changed, or
whose GPU usage moved are recomputed, and `Snapshot.with_nodes` moves just those between placement's
groups. Liveness and live GPU usage come from the controller's memory and are passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.common.address import is_public
from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot, used_by_others
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import NodeRow

Usage = Mapping[str, tuple[int, int, int]]  # GPU uuid -> (memory used, utilization, temperature), live


@dataclass(frozen=True)
class InventoryFacts:
    """What placement reads from a node's reported inventory, parsed once per report."""

    ram_total: int
    ram_available: int
    disk_free: int
    engines: frozenset[str]
    labels: tuple[tuple[str, str], ...]
    multinode: frozenset[str] = frozenset()  # engines that may run a part of a multi-node replica here


def inventory_facts(inventory_json: str) -> InventoryFacts:
    inv = json.loads(inventory_json or "{}")
    return InventoryFacts(
        ram_total=int(inv.get("ramTotal", 0)), ram_available=int(inv.get("ramAvailable", 0)),
        disk_free=int(inv.get("diskFree", 0)),
        engines=frozenset(e["name"] for e in inv.get("engines", []) if e.get("name")),
        labels=tuple(sorted((inv.get("labels") or {}).items())), multinode=multinode_engines(inv))


def multinode_engines(inv: Mapping[str, Any]) -> frozenset[str]:
    """Engines that may run a part of a multi-node replica on this node (its inventory as proto3 JSON).

    The engine says it can (rpc-server present; vLLM new enough), the node advertises an address its peers can
    reach, and that address is not public unless the operator allowed it: rpc-server has no authentication.
    """
    address = str(inv.get("advertiseAddress", ""))
    if not address:
        return frozenset()
    able = frozenset(e["name"] for e in inv.get("engines", []) if e.get("multinode") and e.get("name"))
    if is_public(address) and not inv.get("allowPublicRpc"):
        return able - {"llama.cpp"}
    return able


class SnapshotCache:
    """The last snapshot, brought up to date on demand."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.snap: Snapshot | None = None
        self.seen = 0  # the mirror's change sequence this snapshot reflects
        self.facts: dict[str, tuple[str, InventoryFacts]] = {}  # node -> (inventory JSON, facts)

    def get(self, states: Mapping[str, str], usage: Usage, usage_changed: set[str] | None = None) -> Snapshot:
        """The snapshot for these liveness states and GPU usage.

        `usage_changed`: nodes whose usage moved since the last call (None: look at every node)."""
        mirror = self.store.mirror
        changed = set(mirror.changed_since(self.seen))
        self.seen = mirror.seq
        if self.snap is None or any(n not in mirror.nodes for n in changed):
            # first use, or a node left the fleet: rebuild (with_nodes adds and replaces, never removes)
            self.facts = {n: f for n, f in self.facts.items() if n in mirror.nodes}
            self.snap = Snapshot(tuple(self._node(mirror.nodes[n], states, usage) for n in sorted(mirror.nodes)))
            return self.snap
        by_name = self.snap.by_name
        for name, node in by_name.items():
            if node.state != states.get(name, "offline"):
                changed.add(name)
        candidates = by_name.keys() if usage_changed is None else usage_changed
        for name in candidates:
            node = by_name.get(name)
            if node is not None and name not in changed and any(
                    used_by_others(usage.get(g.uuid, (g.memory_used_other + g.memory_reserved,))[0], g.memory_reserved)
                    != g.memory_used_other for g in node.gpus):
                changed.add(name)
        if changed:
            self.snap = self.snap.with_nodes(self._node(mirror.nodes[n], states, usage)
                                             for n in sorted(changed) if n in mirror.nodes)
        return self.snap

    def _facts(self, row: NodeRow) -> InventoryFacts:
        cached = self.facts.get(row.name)
        if cached is None or cached[0] != row.inventory:
            cached = (row.inventory, inventory_facts(row.inventory))
            self.facts[row.name] = cached
        return cached[1]

    def _node(self, row: NodeRow, states: Mapping[str, str], usage: Usage) -> NodeState:
        mirror = self.store.mirror
        facts = self._facts(row)
        replicas = [mirror.replicas[i] for i in mirror.by_node.get(row.name, ())]
        # parts of multi-node replicas whose main is elsewhere hold RAM here and count for anti-affinity
        parts = [(mirror.replicas[rid].deployment, p) for rid in mirror.parts_by_node.get(row.name, ())
                 if rid in mirror.replicas for p in mirror.parts.get(rid, ()) if p.node == row.name]
        ram_reserved = sum(r.ram_bytes for r in replicas) + sum(p.ram_bytes for _, p in parts)
        gpus = []
        for g in mirror.gpus.get(row.name, ()):
            used = usage.get(g.uuid, (g.memory_used,))[0]
            held = mirror.reserved.get(g.uuid, 0)
            gpus.append(GpuState(uuid=g.uuid, index=g.index, name=g.name, memory_total=g.memory_total,
                                 memory_reserved=held, memory_used_other=used_by_others(used, held),
                                 compute_capability=g.compute_capability))
        return NodeState(
            name=row.name, state=states.get(row.name, "offline"), gpus=tuple(gpus), ram_total=facts.ram_total,
            ram_free=max(0, min(facts.ram_available, facts.ram_total - ram_reserved)), disk_free=facts.disk_free,
            engines=facts.engines, labels=facts.labels,
            deployments=frozenset(r.deployment for r in replicas) | frozenset(d for d, _ in parts),
            replica_count=len(replicas) + len(parts), multinode=facts.multinode)


def build_snapshot(store: Store, states: Mapping[str, str], gpu_usage: Usage) -> Snapshot:
    """A snapshot built from scratch (what-if planning and tests; the controller keeps a SnapshotCache)."""
    return SnapshotCache(store).get(states, gpu_usage)
