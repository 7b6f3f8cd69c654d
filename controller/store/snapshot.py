"""The placement snapshot from the store's in-memory mirror, kept incremental.

A fleet of 10,000 nodes changes a few nodes at a time (a placement, a report, a cordon), so the snapshot
is not rebuilt per placement: only the nodes the mirror marked dirty, whose liveness state changed, or
whose GPU usage moved are recomputed, and `Snapshot.with_nodes` moves just those between placement's
groups. Liveness and live GPU usage come from the controller's memory and are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot, used_by_others
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import NodeRow

Usage = Mapping[str, tuple[int, int, int]]  # GPU uuid -> (memory used, utilization, temperature), live


class SnapshotCache:
    """The last snapshot, brought up to date on demand."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.snap: Snapshot | None = None
        self.seen = 0  # the mirror's change sequence this snapshot reflects

    def get(self, state_of: Callable[[str], str], usage: Usage, moved: set[str] | None = None) -> Snapshot:
        """The snapshot for these node states (ready, cordoned, …, offline) and this GPU usage.

        `moved`: nodes whose liveness state or GPU memory use changed since the last call (None: check all);
        changes to rows (cordons, placements, inventories) come from the mirror's change sequence."""
        mirror = self.store.mirror
        changed = set(mirror.changed_since(self.seen))
        self.seen = mirror.seq
        if self.snap is None or any(n not in mirror.nodes for n in changed):
            # first use, or a node left the fleet: rebuild (with_nodes adds and replaces, never removes)
            self.snap = Snapshot(tuple(self._node(mirror.nodes[n], state_of, usage) for n in sorted(mirror.nodes)))
            return self.snap
        changed |= set(self.snap.by_name) if moved is None else moved
        fresh = [self._node(mirror.nodes[n], state_of, usage) for n in sorted(changed) if n in mirror.nodes]
        by_name = self.snap.by_name
        fresh = [n for n in fresh if by_name.get(n.name) != n]  # unchanged after all: keep the groups as they are
        if fresh:
            self.snap = self.snap.with_nodes(fresh)
        return self.snap

    def _node(self, row: NodeRow, state_of: Callable[[str], str], usage: Usage) -> NodeState:
        mirror = self.store.mirror
        facts = mirror.facts(row.name)
        replicas = [mirror.replicas[i] for i in mirror.by_node.get(row.name, ())]
        # parts of multi-node replicas whose main is elsewhere hold RAM here and count for anti-affinity
        parts = [(mirror.replicas[rid].deployment, p) for rid in mirror.parts_by_node.get(row.name, ())
                 if rid in mirror.replicas for p in mirror.parts.get(rid, ()) if p.node == row.name]
        ram_reserved = sum(r.ram_bytes for r in replicas) + sum(p.ram_bytes for _, p in parts)
        gpus = []
        declared = False  # declared GPUs (`--simulate-gpus`): a node for planning, where nothing is launched
        for g in mirror.gpus.get(row.name, ()):
            declared = declared or g.declared
            used = usage.get(g.uuid, (g.memory_used,))[0]
            held = mirror.reserved.get(g.uuid, 0)
            gpus.append(GpuState(uuid=g.uuid, index=g.index, name=g.name, memory_total=g.memory_total,
                                 memory_reserved=held, memory_used_other=used_by_others(used, held),
                                 compute_capability=g.compute_capability))
        return NodeState(
            name=row.name, state=state_of(row.name), gpus=tuple(gpus), ram_total=facts.ram_total,
            ram_free=max(0, min(facts.ram_available, facts.ram_total - ram_reserved)), disk_free=facts.disk_free,
            engines=facts.engines, labels=facts.labels,
            deployments=frozenset(r.deployment for r in replicas) | frozenset(d for d, _ in parts),
            replica_count=len(replicas) + len(parts), declared=declared, multinode=facts.multinode)


def build_snapshot(store: Store, states: Mapping[str, str], gpu_usage: Usage) -> Snapshot:
    """A snapshot built from scratch (tests; the controller keeps a SnapshotCache)."""
    return SnapshotCache(store).get(lambda name: states.get(name, "offline"), gpu_usage)
