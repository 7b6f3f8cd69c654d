"""The placement core's only input: a frozen picture of the fleet at one instant.

The shell (store, heartbeats, `fleet plan` files) builds these; the cores (placement, drain planning,
what-if) only read them and describe changes as new snapshots. Nothing here does I/O.

Speed matters at 10,000 nodes, so placement groups nodes by two keys (`attr_key`: everything a
filter looks at that is not free memory; `free_key`: free memory per GPU) and a snapshot derived by
`with_nodes` moves only the changed nodes between groups instead of regrouping.
The keys are computed, not cached on the node: caching would give every node an instance dict and a
key tuple of its own, 20,000 objects at 10k nodes that outlive the placement and make the cyclic GC's
full collections cost tens of milliseconds inside some later placement. Grouping keeps one key per group.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property

NODE_STATES = ("ready", "cordoned", "draining", "drained", "offline")


def used_by_others(used: int, reserved: int) -> int:
    """GPU memory in use beyond fleet's reservations: processes fleet does not own (NVML counts every process)."""
    return max(0, used - reserved)


def free_memory(total: int, reserved: int, used: int) -> int:
    """The one definition of a GPU's free memory: what a new replica may reserve.

    Total minus fleet's reservations (held whether the engine runs or not) minus memory others use.
    Placement, `fleet capacity`, the capacity page and /metrics all use this.
    """
    return max(0, total - reserved - used_by_others(used, reserved))


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
        """What a new replica may reserve: total − reservations − memory fleet does not own (free_memory)."""
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
    deployments: frozenset[str] = frozenset()  # deployments with a replica (or a part of one) here
    replica_count: int = 0
    declared: bool = False  # declared GPUs (`--simulate-gpus`): for planning, nothing is launched here
    multinode: frozenset[str] = frozenset()  # engines that can run a part of a multi-node replica here

    @property
    def attr_key(self) -> tuple[object, ...]:
        # Everything the option-level filters read, except per-node numbers (RAM, disk) that vary on
        # every heartbeat: those are checked per node, so they do not split groups.
        return (self.state, self.labels, self.engines,
                tuple((g.name, g.memory_total, g.compute_capability) for g in self.gpus), self.declared,
                self.multinode)

    @property
    def free_key(self) -> tuple[tuple[int, bool], ...]:
        return tuple((g.free, g.untouched) for g in self.gpus)

    @cached_property
    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)


def hardware(attr_key: tuple[object, ...]) -> tuple[tuple[str, int, str], ...]:
    """The (name, memory, compute capability) of each GPU, from a node's attr_key."""
    return attr_key[3]  # type: ignore[return-value]


FreeKey = tuple[tuple[int, bool], ...]
Groups = dict[tuple[object, ...], dict[FreeKey, list[NodeState]]]
# attr_key -> sorted [(free bytes of one GPU, free_key, free bytes per GPU descending)] over the distinct
# free states of that group: lets placement walk from "the tightest GPU that still fits" upward instead of
# scanning every state. The descending amounts ride along so the walk tests "tp GPUs fit" without a lookup.
IndexEntry = tuple[int, FreeKey, tuple[int, ...]]
Index = dict[tuple[object, ...], list[IndexEntry]]


def _entries(key: FreeKey) -> list[IndexEntry]:
    desc = tuple(sorted((f for f, _ in key), reverse=True))
    return [(f, key, desc) for f in {f for f, _ in key}]


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeState, ...]

    @cached_property
    def by_name(self) -> Mapping[str, NodeState]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def positions(self) -> Mapping[str, int]:
        return {n.name: i for i, n in enumerate(self.nodes)}

    @cached_property
    def groups(self) -> Groups:
        """attr_key -> free_key -> nodes sorted by name. Evaluating one node per group is the 10k-node trick."""
        out: Groups = {}
        for node in sorted(self.nodes, key=_name):
            attr = node.attr_key
            by_free = out.get(attr)
            if by_free is None:
                by_free = out[attr] = {}
            free = node.free_key
            members = by_free.get(free)
            if members is None:
                by_free[free] = [node]
            else:
                members.append(node)
        return out

    @cached_property
    def index(self) -> Index:
        out: Index = {}
        for attr, by_free in self.groups.items():
            entries = [entry for key in by_free for entry in _entries(key)]
            entries.sort()
            out[attr] = entries
        return out

    def with_nodes(self, changed: Iterable[NodeState]) -> Snapshot:
        """A new snapshot with these nodes replaced (matched by name) or added.

        When this snapshot's groups are already built, the new one's are derived by moving only the
        changed nodes (copy-on-write), so a placement stream never regroups 10,000 nodes per call.
        """
        new = {n.name: n for n in changed}
        pos = self.positions
        nodes = list(self.nodes)
        olds: list[NodeState] = []
        added = False
        for name, node in new.items():
            i = pos.get(name)
            if i is None:
                nodes.append(node)
                added = True
            else:
                olds.append(nodes[i])
                nodes[i] = node
        snap = Snapshot(tuple(nodes))
        if added:
            return snap
        snap.__dict__["positions"] = pos  # same names at the same positions
        if "by_name" in self.__dict__:
            by_name = dict(self.by_name)
            by_name.update(new)
            snap.__dict__["by_name"] = by_name
        if "groups" in self.__dict__:
            groups, index = _moved(self.groups, self.__dict__.get("index"), olds, list(new.values()))
            snap.__dict__["groups"] = groups
            if index is not None:
                snap.__dict__["index"] = index
        return snap


def _moved(groups: Groups, index: Index | None, olds: list[NodeState],
           news: list[NodeState]) -> tuple[Groups, Index | None]:
    groups = dict(groups)
    # Without an index yet, keep none: it is built on first use from the derived groups.
    idx: Index = dict(index) if index is not None else {}
    copied: set[tuple[object, ...]] = set()

    def own(attr: tuple[object, ...]) -> dict[FreeKey, list[NodeState]]:
        if attr not in copied:
            groups[attr] = dict(groups.get(attr, {}))
            idx[attr] = list(idx.get(attr, []))
            copied.add(attr)
        return groups[attr]

    for old in olds:
        attr, free = old.attr_key, old.free_key
        by_free = own(attr)
        rest = [n for n in by_free[free] if n.name != old.name]
        if rest:
            by_free[free] = rest
        else:
            del by_free[free]
            entries = idx[attr]
            for entry in _entries(free):
                i = bisect_left(entries, entry)
                if i < len(entries) and entries[i] == entry:
                    del entries[i]
    for node in news:
        attr, free = node.attr_key, node.free_key
        by_free = own(attr)
        members = by_free.get(free)
        if members is None:
            by_free[free] = [node]
            entries = idx[attr]
            for entry in _entries(free):
                insort(entries, entry)
        else:
            members = list(members)
            insort(members, node, key=_name)
            by_free[free] = members
    for attr in copied:
        if not groups[attr]:
            del groups[attr]
            del idx[attr]
    return groups, (idx if index is not None else None)


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
