"""The placement core's only input: a frozen picture of the fleet at one instant.

The shell (store, heartbeats, `fleet plan` files) builds these; the cores (placement, drain planning,
what-if) only read them and describe changes as new snapshots. Nothing here does I/O.

Speed matters at 10,000 nodes, so each node caches the two keys placement groups by
(`attr_key`: everything a filter looks at that is not free memory; `free_key`: free memory per GPU).
A node is immutable, so the cache can never go stale; the shell keeps unchanged nodes between
snapshots and only rebuilds the ones that changed, and their keys are computed once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property

NODE_STATES = ("ready", "cordoned", "draining", "drained", "offline")


@dataclass(frozen=True)
class GpuState:
    uuid: str
    index: int
    name: str
    memory_total: int
    memory_reserved: int = 0  # held by fleet's own replicas (reservations), whether running or not
    memory_used_other: int = 0  # used by processes fleet does not own (seen by NVML, not ours)
    compute_capability: str = ""  # "8.0"; "" for GPUs without one (AMD)

    @property
    def free(self) -> int:
        """What a new replica may reserve: total − reservations − memory fleet does not own."""
        return max(0, self.memory_total - self.memory_reserved - self.memory_used_other)

    @property
    def untouched(self) -> bool:
        """No fleet replica holds this GPU: it still belongs to an intact aligned group."""
        return self.memory_reserved == 0


@dataclass(frozen=True)
class NodeState:
    name: str
    state: str = "ready"
    gpus: tuple[GpuState, ...] = ()
    ram_total: int = 0
    ram_free: int = 0
    disk_free: int = 0
    engines: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()
    cached_sources: frozenset[str] = frozenset()  # weight sources already on this node's disk
    deployments: frozenset[str] = frozenset()  # deployments with a replica here (anti-affinity)
    replica_count: int = 0

    @cached_property
    def attr_key(self) -> tuple[object, ...]:
        # Everything the option-level filters read, except per-node numbers (RAM, disk) that vary on
        # every heartbeat: those are checked per node, so they do not split groups.
        return (self.state, self.labels, self.engines,
                tuple((g.name, g.memory_total, g.compute_capability) for g in self.gpus))

    @cached_property
    def free_key(self) -> tuple[tuple[int, bool], ...]:
        return tuple((g.free, g.untouched) for g in self.gpus)

    @cached_property
    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)

    def gpu_free(self) -> tuple[int, ...]:
        return tuple(g.free for g in self.gpus)


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeState, ...]

    @cached_property
    def by_name(self) -> Mapping[str, NodeState]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def groups(self) -> dict[tuple[object, ...], dict[tuple[tuple[int, bool], ...], list[NodeState]]]:
        """attr_key -> free_key -> nodes sorted by name. Evaluating one node per group is the 10k-node trick."""
        out: dict[tuple[object, ...], dict[tuple[tuple[int, bool], ...], list[NodeState]]] = {}
        for node in sorted(self.nodes, key=_name):
            by_free = out.get(node.attr_key)
            if by_free is None:
                by_free = out[node.attr_key] = {}
            members = by_free.get(node.free_key)
            if members is None:
                by_free[node.free_key] = [node]
            else:
                members.append(node)
        return out

    def with_nodes(self, changed: Iterable[NodeState]) -> Snapshot:
        """A new snapshot with these nodes replaced (matched by name) or added."""
        new = {n.name: n for n in changed}
        nodes = tuple(new.pop(n.name, n) for n in self.nodes) + tuple(new.values())
        return Snapshot(nodes)


def _name(node: NodeState) -> str:
    return node.name


def reserve(node: NodeState, per_gpu: Mapping[int, int], *, deployment: str = "", ram: int = 0,
            disk: int = 0, source: str = "") -> NodeState:
    """The node after a replica reserves `per_gpu` bytes on GPUs (by position in `node.gpus`)."""
    gpus = tuple(replace(g, memory_reserved=g.memory_reserved + per_gpu[i]) if i in per_gpu else g
                 for i, g in enumerate(node.gpus))
    cached = node.cached_sources
    if source and source not in cached:
        cached = cached | {source}
    else:
        disk = 0  # weights already on disk: no new download
    return replace(node, gpus=gpus, ram_free=node.ram_free - ram, disk_free=node.disk_free - disk,
                   cached_sources=cached,
                   deployments=node.deployments | {deployment} if deployment else node.deployments,
                   replica_count=node.replica_count + 1)
