"""An in-memory copy of the fleet's tables that the controller reads instead of the database.

Nodes with their GPUs, deployments with their replicas, their parts (multi-node) and reservations: loaded
once, then kept current by reloading exactly the entities the change feed names (the `change` table: every
write adds a row per node or deployment it touched, in its own transaction). Local writes and other
controllers' writes take the same path, so every controller on one database converges within one poll.

Rows handed out are the mirror's own objects: read them, never modify them (writes go through the
repository's transactions).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from fleet.common.address import is_public
from fleet.controller.store.schema import ChangeRow, DeploymentRow, GpuRow, NodeRow, PartRow, ReplicaRow, ReservationRow

NODE = "node"  # the node row changed (state, cordon, generation)
NODE_GPUS = "gpus"  # the node row and its GPU rows changed (a new inventory), or the node is gone
DEPLOYMENT = "deployment"  # the deployment row, its replicas or their reservations changed
GAP_GRACE = 10.0  # seconds a missing change id may take to commit before it is taken for a rollback


@dataclass(frozen=True)
class InventoryFacts:
    """What placement and the totals read from a node's reported inventory, parsed once per report."""

    ram_total: int
    ram_available: int
    disk_free: int
    engines: frozenset[str]
    labels: tuple[tuple[str, str], ...]
    multinode: frozenset[str] = frozenset()  # engines that may run a part of a multi-node replica here


def inventory_facts(inventory_json: str) -> InventoryFacts:
    inv = json.loads(inventory_json or "{}")  # proto3 JSON: 64-bit numbers are strings
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


@dataclass
class Mirror:
    nodes: dict[str, NodeRow] = field(default_factory=dict)
    gpus: dict[str, list[GpuRow]] = field(default_factory=dict)  # node -> GPUs in index order
    deployments: dict[str, DeploymentRow] = field(default_factory=dict)
    replicas: dict[str, ReplicaRow] = field(default_factory=dict)
    by_node: dict[str, set[str]] = field(default_factory=dict)  # node -> replica ids
    by_deployment: dict[str, set[str]] = field(default_factory=dict)
    reservations: dict[str, list[ReservationRow]] = field(default_factory=dict)  # replica id -> rows
    reserved: dict[str, int] = field(default_factory=dict)  # GPU uuid -> bytes held by reservations
    # multi-node replicas: replica id -> its parts other than the main (by rank); node -> replicas with a part there
    parts: dict[str, list[PartRow]] = field(default_factory=dict)
    parts_by_node: dict[str, set[str]] = field(default_factory=dict)
    # change feed position: every id <= watermark is applied; `ahead` holds applied ids above a gap
    watermark: int = 0
    ahead: dict[int, float] = field(default_factory=dict)  # id -> when first seen
    # node -> the sequence number of its last change (its row, GPUs, or replicas and reservations on it):
    # a reader remembers the sequence it has seen and asks what changed since (`changed_since`)
    touched: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    _facts: dict[str, tuple[str, InventoryFacts]] = field(default_factory=dict)  # node -> (inventory JSON, facts)

    # ---- loading
    def load(self, s: Session) -> None:
        """Everything, in one read (start-up)."""
        self.__init__()  # type: ignore[misc]
        last = s.exec(select(ChangeRow.id).order_by(col(ChangeRow.id).desc()).limit(1)).first()
        self.watermark = int(last or 0)
        for n in s.exec(select(NodeRow)).all():
            self.nodes[n.name] = n
        for g in s.exec(select(GpuRow).order_by(GpuRow.node, GpuRow.index)).all():
            self.gpus.setdefault(g.node, []).append(g)
        for d in s.exec(select(DeploymentRow)).all():
            self.deployments[d.name] = d
        for r in s.exec(select(ReplicaRow)).all():
            self._add_replica(r)
        for x in s.exec(select(ReservationRow)).all():
            self._add_reservation(x)
        for p in s.exec(select(PartRow).order_by(PartRow.replica, PartRow.rank)).all():
            self._add_part(p)
        for name in self.nodes:
            self._mark(name)

    def _add_replica(self, r: ReplicaRow) -> None:
        self.replicas[r.id] = r
        self.by_node.setdefault(r.node, set()).add(r.id)
        self.by_deployment.setdefault(r.deployment, set()).add(r.id)

    def _add_part(self, p: PartRow) -> None:
        self.parts.setdefault(p.replica, []).append(p)
        self.parts_by_node.setdefault(p.node, set()).add(p.replica)

    def _add_reservation(self, x: ReservationRow) -> None:
        self.reservations.setdefault(x.replica, []).append(x)
        self.reserved[x.gpu_uuid] = self.reserved.get(x.gpu_uuid, 0) + x.bytes

    def _drop_replica(self, rid: str) -> None:
        r = self.replicas.pop(rid)
        for index, key in ((self.by_node, r.node), (self.by_deployment, r.deployment)):
            ids = index.get(key)
            if ids is not None:
                ids.discard(rid)
                if not ids:
                    del index[key]
        for x in self.reservations.pop(rid, []):
            left = self.reserved.get(x.gpu_uuid, 0) - x.bytes
            if left > 0:
                self.reserved[x.gpu_uuid] = left
            else:
                self.reserved.pop(x.gpu_uuid, None)
        for p in self.parts.pop(rid, []):
            ids = self.parts_by_node.get(p.node)
            if ids is not None:
                ids.discard(rid)
                if not ids:
                    del self.parts_by_node[p.node]
            self._mark(p.node)  # its GPUs, RAM and anti-affinity change with the part
        self._mark(r.node)

    def _mark(self, node: str) -> None:
        self.seq += 1
        self.touched[node] = self.seq

    def changed_since(self, seq: int) -> list[str]:
        """Nodes changed after sequence number `seq` (removed ones included: they are no longer in `nodes`)."""
        return [n for n, s in self.touched.items() if s > seq]

    # ---- the change feed
    def pending(self, s: Session) -> list[tuple[int, str, str]]:
        """Changes not applied yet: above the watermark, minus those applied above a gap."""
        rows = s.exec(select(ChangeRow.id, ChangeRow.kind, ChangeRow.key).where(ChangeRow.id > self.watermark)
                      .order_by(ChangeRow.id)).all()
        return [(int(i), k, key) for i, k, key in rows if int(i) not in self.ahead]

    def apply(self, s: Session, changes: list[tuple[int, str, str]], now: float | None = None) -> set[str]:
        """Reload what the changes name; returns the nodes whose desired set may have changed."""
        now = time.time() if now is None else now
        full = {key for _, kind, key in changes if kind == NODE_GPUS}
        rows = {key for _, kind, key in changes if kind == NODE} - full
        deployments = {key for _, kind, key in changes if kind == DEPLOYMENT}
        touched: set[str] = set()
        for name in sorted(full | rows):
            self._reload_node(s, name, gpus=name in full)
            touched.add(name)
        for name in sorted(deployments):
            touched |= self._reload_deployment(s, name)
        for i, _, _ in changes:
            self.ahead[i] = now
        self._advance(now)
        return touched

    def _advance(self, now: float) -> None:
        while self.ahead:
            nxt = self.watermark + 1
            if nxt in self.ahead:
                del self.ahead[nxt]
                self.watermark = nxt
                continue
            # A gap: a transaction that took this id has not committed yet (or rolled back). Wait for it, but
            # not forever: ids are never reused, so one missing for GAP_GRACE seconds was rolled back.
            oldest = min(self.ahead)
            if now - self.ahead[oldest] < GAP_GRACE:
                return
            self.watermark = oldest - 1

    def _reload_node(self, s: Session, name: str, gpus: bool = True) -> None:
        row = s.get(NodeRow, name)
        self._mark(name)
        if row is None:
            self.nodes.pop(name, None)
            self.gpus.pop(name, None)
            self._facts.pop(name, None)
            for rid in list(self.by_node.get(name, ())):
                self._drop_replica(rid)
            return
        self.nodes[name] = row
        if gpus or name not in self.gpus:
            self.gpus[name] = list(s.exec(select(GpuRow).where(GpuRow.node == name).order_by(GpuRow.index)).all())

    def _reload_deployment(self, s: Session, name: str) -> set[str]:
        before = {self.replicas[rid].node for rid in self.by_deployment.get(name, ())}
        before |= {p.node for rid in self.by_deployment.get(name, ()) for p in self.parts.get(rid, ())}
        for rid in list(self.by_deployment.get(name, ())):
            self._drop_replica(rid)
        dep = s.get(DeploymentRow, name)
        if dep is None:
            self.deployments.pop(name, None)
        else:
            self.deployments[name] = dep
        replicas = list(s.exec(select(ReplicaRow).where(ReplicaRow.deployment == name)).all())
        for r in replicas:
            self._add_replica(r)
            self._mark(r.node)
        parts: list[PartRow] = []
        if replicas:
            ids = [r.id for r in replicas]
            for x in s.exec(select(ReservationRow).where(col(ReservationRow.replica).in_(ids))):
                self._add_reservation(x)
            gangs = [r.id for r in replicas if r.nodes > 1]
            if gangs:
                parts = list(s.exec(select(PartRow).where(col(PartRow.replica).in_(gangs))
                                    .order_by(PartRow.replica, PartRow.rank)).all())
            for p in parts:
                self._add_part(p)
                self._mark(p.node)
        return before | {r.node for r in replicas} | {p.node for p in parts}

    # ---- reads
    def facts(self, name: str) -> InventoryFacts:
        """The node's inventory facts, parsed again only when it reported a new inventory."""
        inventory = self.nodes[name].inventory
        cached = self._facts.get(name)
        if cached is None or cached[0] != inventory:
            cached = (inventory, inventory_facts(inventory))
            self._facts[name] = cached
        return cached[1]

    def replicas_of(self, ids: Iterable[str]) -> list[ReplicaRow]:
        return sorted((self.replicas[i] for i in ids), key=lambda r: (r.deployment, r.ordinal, r.id))
