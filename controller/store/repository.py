"""The repository: every read and write of the controller's durable truth, one transaction per decision.

Only moves data in and out of the tables in fleet.controller.store.schema; decisions live in the pure
core and the use cases (fleet.controller.app). Sessions are short and explicit.

Reads of nodes, GPUs, deployments, replicas and reservations come from the in-memory mirror
(fleet.controller.store.mirror), never from the database. So that the mirror stays true, every write
method (1) records each node and deployment it changes with `touch` inside its transaction, and (2) is
decorated with `@writes`, which applies the change feed after it returns. A node's generation bump is a
node change; a replica or reservation change is a change of its deployment.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, func, select

from fleet.controller.core.errors import AlreadyExists, FailedPrecondition, NotFound
from fleet.controller.store.db import open_engine, open_reader
from fleet.controller.store.hashing import same_hash, token_hash
from fleet.controller.store.mirror import DEPLOYMENT, NODE, NODE_GPUS, Mirror
from fleet.controller.store.schema import (
    ChangeRow,
    DeploymentRow,
    DrainRow,
    EventRow,
    GpuRow,
    NodeRow,
    PartRow,
    ReplicaRow,
    ReservationRow,
    TokenRow,
)


@dataclass(frozen=True)
class Removed:
    name: str
    replicas: list[str]
    gpus: list[str]


def _delete_referencing(s: Session, column: object, values: list[str], skip: set[str]) -> None:
    # Tables other modules add (drains, ...) may point at a node or GPU; delete their rows too, so removing a
    # node never trips a foreign key and leaves nothing behind that names it.
    for table in SQLModel.metadata.sorted_tables:
        if table.name in skip:
            continue
        for fk in table.foreign_keys:
            if fk.column is column:
                s.execute(delete(table).where(fk.parent.in_(values)))


@dataclass(frozen=True)
class InventoryChange:
    """What a node's new inventory changed besides its own row."""

    foreign: dict[str, str] = field(default_factory=dict)  # GPU uuid -> the node that owns it (left out)
    missing: list[str] = field(default_factory=list)  # GPUs the node no longer reports (forgotten)
    failed: list[str] = field(default_factory=list)  # replicas that held a missing GPU (failed, rescheduled)
    kept: list[str] = field(default_factory=list)  # the node's GPUs now


def known_node(name: str) -> str:
    return (f"node {name!r} is already registered; a join token cannot take over a known node. To replace it, an "
            f"operator runs `fleet node replace {name}` and this agent joins with the token it prints "
            f"(or `fleet node remove {name}` first); otherwise choose another --name")


def _apply_inventory(s: Session, row: NodeRow, inventory_json: str, gpus: list[GpuRow],
                     now: float) -> InventoryChange:
    """Inside a transaction: the node's GPU rows become `gpus`, except those another node owns.

    A GPU that is gone (fell off the bus, card pulled) takes its reservations with it; the replicas that
    held it are failed with the reason and asked to stop, so the reconciler places them elsewhere, as it
    does for the replicas of an offline node.
    """
    name = row.name
    uuids = [g.uuid for g in gpus]
    owners = dict(s.exec(select(GpuRow.uuid, GpuRow.node).where(col(GpuRow.uuid).in_(uuids))).all()) if uuids else {}
    foreign = {u: n for u, n in owners.items() if n != name}
    own = [g for g in gpus if g.uuid not in foreign]
    seen = {g.uuid for g in own}
    gone = [g for g in s.exec(select(GpuRow).where(GpuRow.node == name)).all() if g.uuid not in seen]
    failed: list[str] = []
    if gone:
        lost = [g.uuid for g in gone]
        held = list(s.exec(select(ReservationRow).where(col(ReservationRow.gpu_uuid).in_(lost))).all())
        index = {g.uuid: g.index for g in gone}
        for rid in sorted({x.replica for x in held}):
            r = s.get(ReplicaRow, rid)
            if r is None:
                continue
            which = ", ".join(f"{index[x.gpu_uuid]} ({x.gpu_uuid})" for x in held if x.replica == rid)
            r.message = f"GPU {which} is no longer on node {name}: failed, rescheduled elsewhere"
            r.desired, r.state, r.healthy_since = "stop", "failed", 0.0
            s.add(r)
            failed.append(rid)
        s.execute(delete(ReservationRow).where(col(ReservationRow.gpu_uuid).in_(lost)))
        _delete_referencing(s, GpuRow.__table__.c.uuid, lost, {"reservation"})  # type: ignore[attr-defined]
        s.execute(delete(GpuRow).where(col(GpuRow.uuid).in_(lost)))
        for g in gone:
            users = sorted({x.replica for x in held if x.gpu_uuid == g.uuid})
            s.add(EventRow(at=now, kind="gpu.missing", node=name, message=(
                f"GPU {g.index} ({g.uuid}, {g.name}) is no longer reported"
                + (f"; replica(s) {', '.join(users)} failed and will be placed elsewhere" if users else ""))))
        if failed:
            row.generation += 1
        s.flush()
    for g in own:
        s.merge(g)
    row.inventory = inventory_json
    row.alive = True
    row.last_heartbeat = now
    s.add(row)
    touch(s, NODE_GPUS, [name], now)  # the node row and its GPU rows
    if failed:  # replica and reservation changes are changes of their deployments (the mirror reloads them)
        touch(s, DEPLOYMENT, {r.deployment for r in (s.get(ReplicaRow, rid) for rid in failed) if r is not None},
              now)
    return InventoryChange(foreign=foreign, missing=[g.uuid for g in gone], failed=failed, kept=sorted(seen))


def _check_capacity(s: Session, reservations: list[ReservationRow]) -> None:
    """Inside the transaction: the new reservations plus what is held never exceed a GPU's memory."""
    wanted: dict[str, int] = {}
    for r in reservations:
        wanted[r.gpu_uuid] = wanted.get(r.gpu_uuid, 0) + r.bytes
    if not wanted:
        return
    # Lock the GPU rows first (PostgreSQL: SELECT ... FOR UPDATE, in one order so two placements never deadlock):
    # a concurrent placement on any of these GPUs waits here until this one commits, then sees its reservations.
    # SQLite's BEGIN IMMEDIATE already holds the database's one write lock.
    gpus = {g.uuid: g for g in s.exec(select(GpuRow).where(col(GpuRow.uuid).in_(sorted(wanted)))
                                      .order_by(GpuRow.uuid).with_for_update()).all()}
    held = dict(s.exec(select(ReservationRow.gpu_uuid, func.sum(ReservationRow.bytes))
                       .where(col(ReservationRow.gpu_uuid).in_(wanted))
                       .group_by(ReservationRow.gpu_uuid)).all())
    for uuid, need in wanted.items():
        g = gpus.get(uuid)
        if g is None:
            raise FailedPrecondition(f"GPU {uuid} disappeared while placing; try again")
        if int(held.get(uuid, 0)) + need > g.memory_total:
            raise FailedPrecondition(f"GPU {g.index} on {g.node} was reserved by a concurrent placement; try again")


def touch(s: Session, kind: str, keys: Iterable[str], now: float | None = None) -> None:
    """Record in the change feed, inside the transaction, that these nodes or deployments changed."""
    at = time.time() if now is None else now
    for key in sorted(set(keys)):
        s.add(ChangeRow(at=at, kind=kind, key=key))


def _gang_nodes(s: Session, replica_ids: Iterable[str]) -> set[str]:
    """Nodes running a part (other than the main) of these replicas."""
    ids = list(replica_ids)
    if not ids:
        return set()
    return set(s.exec(select(PartRow.node).where(col(PartRow.replica).in_(ids))).all())


def _bump(s: Session, nodes: set[str]) -> None:
    """A new desired-set generation for each node: its agent is sent the set again."""
    for node in nodes:
        row = s.get(NodeRow, node)
        if row is not None:
            row.generation += 1
            s.add(row)
    touch(s, NODE, nodes)


F = TypeVar("F", bound=Callable[..., Any])


def writes(fn: F) -> F:
    """After the write method returns (or fails), bring the mirror up to date with the change feed."""

    @functools.wraps(fn)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        finally:
            self.sync()

    return wrapper  # type: ignore[return-value]


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)
        self.reader = open_reader(url, self.engine)
        self.mirror = Mirror()
        # GPU uuid -> (figures last written, when)
        self._flushed_usage: dict[str, tuple[tuple[int, int, int], float]] = {}
        with self.read() as s:
            self.mirror.load(s)
        # Called with the nodes whose desired-set generation went up, whoever wrote it (the controller pushes).
        self.on_generation: Callable[[set[str]], None] | None = None
        # Called with every node whose row changed (a join, a removal, a replacement), whoever wrote it.
        self.on_nodes: Callable[[set[str]], None] | None = None

    def sync(self) -> set[str]:
        """Apply the change feed to the mirror; returns the nodes whose generation went up."""
        with self.read() as s:
            changes = self.mirror.pending(s)
            if not changes:
                return set()
            before = {key: self.mirror.nodes[key].generation for _, kind, key in changes
                      if kind in (NODE, NODE_GPUS) and key in self.mirror.nodes}
            self.mirror.apply(s, changes)
        bumped = {n for n, g in before.items() if n in self.mirror.nodes and self.mirror.nodes[n].generation > g}
        bumped |= {key for _, kind, key in changes
                   if kind in (NODE, NODE_GPUS) and key not in before and key in self.mirror.nodes}
        nodes = {key for _, kind, key in changes if kind in (NODE, NODE_GPUS)}
        if nodes and self.on_nodes is not None:
            self.on_nodes(nodes)
        if bumped and self.on_generation is not None:
            self.on_generation(bumped)
        return bumped

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.reader, expire_on_commit=False) as s:
            yield s

    # ---- tokens
    def add_token(self, kind: str, token: str, expires_at: float | None = None) -> None:
        with self.session() as s:
            s.add(TokenRow(kind=kind, token_hash=token_hash(token), created_at=time.time(), expires_at=expires_at))
            s.commit()

    def has_token(self, kind: str, token: str) -> bool:
        wanted = token_hash(token)
        with self.read() as s:
            rows = s.exec(select(TokenRow).where(TokenRow.kind == kind)).all()
        return any(same_hash(r.token_hash, wanted) for r in rows)

    def valid_hashes(self, kind: str, now: float | None = None) -> set[str]:
        """Hashes of the usable tokens of a kind (not revoked, not expired): every controller's admin tokens."""
        now = time.time() if now is None else now
        with self.read() as s:
            rows = s.exec(select(TokenRow).where(TokenRow.kind == kind, TokenRow.revoked == False)).all()  # noqa: E712
        return {r.token_hash for r in rows if r.expires_at is None or r.expires_at > now}

    def token_valid(self, kind: str, token: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        wanted = token_hash(token)
        with self.read() as s:
            rows = s.exec(select(TokenRow).where(TokenRow.kind == kind, TokenRow.revoked == False)).all()  # noqa: E712
        return any(same_hash(r.token_hash, wanted) and (r.expires_at is None or r.expires_at > now) for r in rows)

    # ---- nodes
    def get_node(self, name: str) -> NodeRow | None:
        return self.mirror.nodes.get(name)

    def nodes(self) -> list[NodeRow]:
        return [self.mirror.nodes[n] for n in sorted(self.mirror.nodes)]

    def gpus(self, node: str | None = None) -> list[GpuRow]:
        if node is not None:
            return list(self.mirror.gpus.get(node, ()))
        return [g for n in sorted(self.mirror.gpus) for g in self.mirror.gpus[n]]

    def credential_hashes(self) -> dict[str, str]:
        return {n.name: n.credential_hash for n in self.mirror.nodes.values()}

    @writes
    def register_node(self, name: str, credential: str, inventory_json: str, gpus: Iterable[GpuRow], now: float,
                      takeover: bool = False, claim: Callable[[Session], None] | None = None,
                      event: str = "node.registered") -> InventoryChange:
        """Create the node with its inventory, all or nothing; a known name only with `takeover`.

        `takeover`: the caller holds the node's credential, or `claim` consumes the one-time replacement
        token (`fleet node replace`) inside this transaction, so a token is never used twice.
        """
        gpus = list(gpus)
        try:
            with self.session() as s:
                row = s.get(NodeRow, name)
                if row is not None and not takeover:
                    raise AlreadyExists(known_node(name))
                if claim is not None:
                    claim(s)
                if row is None:
                    row = NodeRow(name=name, credential_hash=token_hash(credential), registered_at=now)
                    s.add(row)
                    s.flush()
                else:
                    row.credential_hash = token_hash(credential)
                    row.registered_at = now
                change = _apply_inventory(s, row, inventory_json, gpus, now)
                if change.foreign:
                    uuid, owner = next(iter(sorted(change.foreign.items())))
                    raise AlreadyExists(f"GPU {uuid} belongs to node {owner!r}; a GPU belongs to the node that first "
                                        f"reported it until `fleet node remove {owner}`")
                s.add(EventRow(at=now, kind=event, node=name, message=f"{len(gpus)} GPU(s)"))
                s.commit()
        except IntegrityError:
            # Another controller registered the same name between our read and our insert.
            raise AlreadyExists(known_node(name)) from None
        return change

    @writes
    def save_inventory(self, name: str, inventory_json: str, gpus: Iterable[GpuRow], now: float) -> InventoryChange:
        """A node's fresh inventory (session start): replace its GPU rows, mark it alive.

        GPUs another node owns are left out (and recorded as an event); GPUs the node no longer reports
        are forgotten, and replicas holding them fail and go elsewhere (`InventoryChange.failed`).
        """
        gpus = list(gpus)
        with self.session() as s:
            row = s.get(NodeRow, name)
            if row is None:
                return InventoryChange()
            change = _apply_inventory(s, row, inventory_json, gpus, now)
            for uuid, owner in sorted(change.foreign.items()):
                s.add(EventRow(at=now, kind="gpu.refused", node=name,
                               message=f"GPU {uuid} is reported by {name} but belongs to node {owner}: ignored"))
            s.commit()
        return change

    def node_events(self, node: str, limit: int = 20) -> list[EventRow]:
        """A node's newest events first (`fleet node describe`)."""
        with self.read() as s:
            return list(s.exec(select(EventRow).where(EventRow.node == node)
                               .order_by(col(EventRow.id).desc()).limit(limit)).all())

    def flush_heartbeats(self, beats: dict[str, float], usage: dict[str, tuple[int, int, int]]) -> None:
        """One transaction for a batch: node last_heartbeat and GPU usage (uuid -> used, util, temp).

        Two executemany UPDATEs, not an ORM round trip per row: at 10,000 nodes heartbeating every 5 s this
        runs every second with ~2,000 rows. Not a change for the mirror: reads take liveness from memory."""
        # GPU figures equal to those this controller wrote less than a minute ago are not written again (idle GPUs
        # report the same numbers); once a minute they are, in case another controller wrote since (HA)
        now = time.monotonic()
        usage = {u: v for u, v in usage.items()
                 if (last := self._flushed_usage.get(u)) is None or last[0] != v or now - last[1] > 60.0}
        if not beats and not usage:
            return
        nodes, gpus = NodeRow.__table__, GpuRow.__table__  # type: ignore[attr-defined]
        with self.session() as s:
            conn = s.connection()
            if beats:
                conn.execute(update(nodes).where(nodes.c.name == bindparam("b_name"),
                                                 nodes.c.last_heartbeat < bindparam("b_at"))
                             .values(last_heartbeat=bindparam("b_at")),
                             [{"b_name": n, "b_at": at} for n, at in beats.items()])
            if usage:
                conn.execute(update(gpus).where(gpus.c.uuid == bindparam("b_uuid"))
                             .values(memory_used=bindparam("b_used"), utilization=bindparam("b_util"),
                                     temperature=bindparam("b_temp")),
                             [{"b_uuid": u, "b_used": used, "b_util": util, "b_temp": temp}
                              for u, (used, util, temp) in usage.items()])
            s.commit()
        if len(self._flushed_usage) > 1_000_000:
            self._flushed_usage.clear()
        self._flushed_usage.update((u, (v, now)) for u, v in usage.items())

    @writes
    def set_cordon(self, name: str, cordoned: bool, reason: str, by: str, now: float) -> NodeRow:
        with self.session() as s:
            row = s.get(NodeRow, name)
            if row is None:
                names = ", ".join(n.name for n in s.exec(select(NodeRow)).all()) or "none"
                raise NotFound(f"no node named {name!r}; nodes: {names}")
            if cordoned:
                if row.admin_state == "ready":
                    row.admin_state = "cordoned"
                row.cordon_reason, row.cordoned_by, row.cordoned_at = reason, by, now
            else:
                row.admin_state, row.cordon_reason, row.cordoned_by, row.cordoned_at = "ready", "", "", 0.0
            s.add(row)
            s.add(EventRow(at=now, kind="node.cordoned" if cordoned else "node.uncordoned", node=name,
                           message=(f"{reason} (by {by})" if reason else f"by {by}") if cordoned else f"by {by}"))
            touch(s, NODE, [name], now)
            s.commit()
            return row

    @writes
    def set_alive(self, name: str, alive: bool, now: float, last_heartbeat: float | None = None) -> None:
        """Online or offline, with an event; `last_heartbeat` records when the node was last heard from."""
        with self.session() as s:
            row = s.get(NodeRow, name)
            if row is None or row.alive == alive:
                return
            row.alive = alive
            if last_heartbeat is not None:
                row.last_heartbeat = max(row.last_heartbeat, last_heartbeat)
            s.add(row)
            s.add(EventRow(at=now, kind="node.online" if alive else "node.offline", node=name))
            touch(s, NODE, [name], now)
            s.commit()

    def heartbeats(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Last heartbeat per node as every controller wrote it (not mirrored: it moves every second): the
        nodes believed online, or these nodes."""
        nodes = NodeRow.__table__  # type: ignore[attr-defined]
        q = select(nodes.c.name, nodes.c.last_heartbeat)
        q = q.where(nodes.c.alive) if names is None else q.where(nodes.c.name.in_(list(names)))
        with self.reader.connect() as conn:
            return {name: float(at) for name, at in conn.execute(q)}

    # ---- deployments, replicas, reservations
    def reserved_by_gpu(self) -> dict[str, int]:
        return self.mirror.reserved

    def deployments(self) -> list[DeploymentRow]:
        return [self.mirror.deployments[d] for d in sorted(self.mirror.deployments)]

    def get_deployment(self, name: str) -> DeploymentRow | None:
        return self.mirror.deployments.get(name)

    def replicas(self, deployment: str | None = None, node: str | None = None) -> list[ReplicaRow]:
        m = self.mirror
        if deployment is not None:
            ids: Iterable[str] = m.by_deployment.get(deployment, ())
            if node is not None:
                ids = [i for i in ids if m.replicas[i].node == node]
        elif node is not None:
            ids = m.by_node.get(node, ())
        else:
            ids = m.replicas
        return m.replicas_of(ids)

    def reservations(self, replicas: Iterable[str] | None = None) -> list[ReservationRow]:
        """Every reservation, or those of these replicas."""
        m = self.mirror
        ids = m.reservations if replicas is None else replicas
        return [x for rid in ids for x in m.reservations.get(rid, ())]

    def parts(self, replica: str | None = None, node: str | None = None) -> list[PartRow]:
        """Parts of multi-node replicas other than their mains, by replica and rank."""
        m = self.mirror
        if replica is not None:
            found = list(m.parts.get(replica, ()))
        elif node is not None:
            found = [p for rid in m.parts_by_node.get(node, ()) for p in m.parts.get(rid, ())]
        else:
            found = [p for rows in m.parts.values() for p in rows]
        if node is not None:
            found = [p for p in found if p.node == node]
        return sorted(found, key=lambda p: (p.replica, p.rank))

    def replicas_on(self, node: str) -> list[ReplicaRow]:
        """Every replica with a part on `node`: its main there, or another part."""
        m = self.mirror
        return m.replicas_of(set(m.by_node.get(node, ())) | {r for r in m.parts_by_node.get(node, ())
                                                              if r in m.replicas})

    def replicas_by_id(self, ids: Iterable[str]) -> list[ReplicaRow]:
        m = self.mirror
        return m.replicas_of(i for i in set(ids) if i in m.replicas)

    @writes
    def commit_placement(self, dep: DeploymentRow, replicas: list[ReplicaRow],
                         reservations: list[ReservationRow], now: float, parts: list[PartRow] | None = None) -> None:
        """Deployment, replicas and reservations in one transaction, re-checked against GPU totals inside it.

        The check inside the transaction (not the snapshot the plan was made from) is what makes
        concurrent placements safe: a plan made on stale state is refused, never double-booked.
        """
        exists = AlreadyExists(f"deployment {dep.name!r} exists; pass --name, or `fleet remove {dep.name}`")
        with self.session() as s:
            if s.get(DeploymentRow, dep.name) is not None:
                raise exists
            _check_capacity(s, reservations)
            s.add(dep)  # one flush at commit: the unit of work inserts in foreign-key order
            s.add_all(replicas)
            if parts:
                s.flush()  # parts name their replicas, with no relationship() for the unit of work to order by
                s.add_all(parts)
            s.add_all(reservations)
            _bump(s, {r.node for r in replicas} | {x.node for x in parts or []})
            touch(s, DEPLOYMENT, [dep.name], now)
            where = ", ".join(sorted({r.node for r in replicas}))
            s.add(EventRow(at=now, kind="deployment.placed", deployment=dep.name,
                           message=f"{len(replicas)} replica(s) on {where}: {dep.model} {dep.quant} on {dep.engine}"))
            try:
                s.commit()
            except IntegrityError:
                # another controller committed the same name (or replica id) between our check and our commit
                raise exists from None

    @writes
    def mark_removing(self, name: str, now: float) -> tuple[DeploymentRow, set[str]]:
        """Ask every replica of `name` to stop; reservations stay until the agents report them stopped."""
        with self.session() as s:
            dep = s.get(DeploymentRow, name)
            if dep is None:
                names = ", ".join(d.name for d in s.exec(select(DeploymentRow)).all()) or "none"
                raise NotFound(f"no deployment named {name!r}; deployments: {names}")
            dep.state = "removing"
            s.add(dep)
            nodes = set()
            stopped = []
            for r in s.exec(select(ReplicaRow).where(ReplicaRow.deployment == name)).all():
                if r.desired != "stop":
                    r.desired = "stop"
                    r.state = "stopping" if r.state not in ("stopped", "pending") else r.state
                    s.add(r)
                    nodes.add(r.node)
                    stopped.append(r.id)
            nodes |= _gang_nodes(s, stopped)  # removal stops every part
            _bump(s, nodes)
            touch(s, DEPLOYMENT, [name], now)
            s.add(EventRow(at=now, kind="deployment.removing", deployment=name,
                           message=f"replicas on {', '.join(sorted(nodes)) or 'no node'} asked to stop"))
            s.commit()
            return dep, nodes

    @writes
    def forget_replicas(self, ids: list[str]) -> None:
        """Delete replicas that are stopped (and their reservations); drop deployments left empty while removing."""
        if not ids:
            return
        with self.session() as s:
            deps = set()
            for rid in ids:
                for res in s.exec(select(ReservationRow).where(ReservationRow.replica == rid)).all():
                    s.delete(res)
                s.execute(delete(PartRow).where(col(PartRow.replica) == rid))
                r = s.get(ReplicaRow, rid)
                if r is not None:
                    deps.add(r.deployment)
                    s.delete(r)
            s.flush()
            for name in deps:
                dep = s.get(DeploymentRow, name)
                left = s.exec(select(ReplicaRow).where(ReplicaRow.deployment == name)).first()
                if dep is not None and dep.state == "removing" and left is None:
                    s.delete(dep)
            touch(s, DEPLOYMENT, deps)
            s.commit()

    @writes
    def update_replicas(self, node: str, statuses: list[tuple[str, str, str, str, int]],
                        gang: dict[str, tuple[str, int]] | None = None) -> list[str]:
        """Apply an agent's report (id, state, endpoint, message, restarts) for its own replicas only.

        `gang`: for main parts of multi-node replicas, id -> (rendezvous address, epoch) as reported.
        Returns ids of replicas that were asked to stop and are now stopped.
        """
        done = []
        changed: set[str] = set()
        gang = gang or {}
        with self.session() as s:
            for rid, state, endpoint, message, restarts in statuses:
                r = s.get(ReplicaRow, rid)
                if r is None or r.node != node:
                    continue  # a node reports only for itself
                if (r.state, r.endpoint, r.message, r.restarts) != (state, endpoint, message, restarts):
                    if state != r.state and state in ("healthy", "failed"):
                        # What an operator looks for afterwards: when it started serving, and why it failed.
                        s.add(EventRow(at=time.time(), kind=f"replica.{state}", node=node, deployment=r.deployment,
                                       message=f"{rid}" + (f": {message.splitlines()[0][:500]}" if message else "")))
                    r.state, r.endpoint, r.message, r.restarts = state, endpoint, message, restarts
                    s.add(r)
                    changed.add(r.deployment)
                if rid in gang and (r.address, r.reported_epoch) != gang[rid]:
                    r.address, r.reported_epoch = gang[rid]
                    s.add(r)
                    changed.add(r.deployment)
                if state == "healthy" and not r.healthy_since:
                    r.healthy_since = time.time()
                    s.add(r)
                    changed.add(r.deployment)
                elif state != "healthy" and r.healthy_since:
                    r.healthy_since = 0.0
                    s.add(r)
                    changed.add(r.deployment)
                if r.desired == "stop" and state == "stopped":
                    done.append(rid)
            if changed:  # a report that changes nothing (the agent resends on reconnect) writes nothing
                touch(s, DEPLOYMENT, changed)
                s.commit()
        return done

    @writes
    def update_parts(self, node: str, statuses: list[tuple[str, str, str, str, int, int]]) -> None:
        """Apply an agent's report (id, state, address, message, restarts, epoch) for parts on `node` only.

        A part stopped for good (its replica told to stop) frees its reservations on this node at once (the rest
        of its gang may still be stopping elsewhere).
        """
        with self.session() as s:
            deps: set[str] = set()
            for pid, state, address, message, restarts, epoch in statuses:
                p = s.get(PartRow, pid)
                if p is None or p.node != node:
                    continue  # a node reports only for itself
                r = s.get(ReplicaRow, p.replica)
                if (p.state, p.address, p.message, p.restarts, p.epoch) != (state, address, message, restarts, epoch):
                    p.state, p.address, p.message, p.restarts, p.epoch = state, address, message, restarts, epoch
                    s.add(p)
                    deps.add(r.deployment if r is not None else "")
                if state == "stopped" and (r is None or r.desired == "stop") and self._free_part(s, p):
                    deps.add(r.deployment if r is not None else "")  # stopped for good, not between two specs
            if deps:
                touch(s, DEPLOYMENT, deps - {""})
                s.commit()

    @writes
    def stop_parts(self, node: str, ids: Iterable[str]) -> None:
        """Parts its node no longer runs (it applied a set without them): stopped, reservations freed."""
        with self.session() as s:
            deps: set[str] = set()
            for pid in ids:
                p = s.get(PartRow, pid)
                if p is not None and p.node == node and p.state != "stopped":
                    p.state = "stopped"
                    s.add(p)
                    self._free_part(s, p)
                    r = s.get(ReplicaRow, p.replica)
                    if r is not None:
                        deps.add(r.deployment)
            touch(s, DEPLOYMENT, deps)
            s.commit()

    @staticmethod
    def _free_part(s: Session, p: PartRow) -> bool:
        """Delete what the part holds on its node; True when it held anything."""
        gpus = list(s.exec(select(GpuRow.uuid).where(GpuRow.node == p.node)).all())
        held = gpus and s.exec(select(ReservationRow.id).where(col(ReservationRow.replica) == p.replica,
                                                               col(ReservationRow.gpu_uuid).in_(gpus))).first()
        if held:
            s.execute(delete(ReservationRow).where(col(ReservationRow.replica) == p.replica,
                                                   col(ReservationRow.gpu_uuid).in_(gpus)))
        if not held and not p.ram_bytes:
            return False
        p.ram_bytes = 0
        s.add(p)
        return True

    @writes
    def release(self, rid: str, node: str) -> None:
        """Free what a replica reserved on one node (its part there stopped; other parts may still run)."""
        with self.session() as s:
            r = s.get(ReplicaRow, rid)
            if r is None:
                return
            gpus = list(s.exec(select(GpuRow.uuid).where(GpuRow.node == node)).all())
            if gpus:
                s.execute(delete(ReservationRow).where(col(ReservationRow.replica) == rid,
                                                       col(ReservationRow.gpu_uuid).in_(gpus)))
            if r.node == node and r.ram_bytes:
                r.ram_bytes = 0
                s.add(r)
            touch(s, DEPLOYMENT, [r.deployment])
            s.commit()

    @writes
    def bump_epoch(self, rid: str, epoch: int, why: str, now: float) -> set[str]:
        """A part of the replica crashed in `epoch`: start a new epoch (every part restarts). Returns its nodes."""
        with self.session() as s:
            r = s.get(ReplicaRow, rid)
            if r is None or r.epoch != epoch or r.desired != "run":
                return set()
            r.epoch += 1
            s.add(r)
            nodes = {r.node} | _gang_nodes(s, [rid])
            _bump(s, nodes)
            touch(s, DEPLOYMENT, [r.deployment], now)
            s.add(EventRow(at=now, kind="replica.restarting", node=r.node, message=f"{rid}: {why}"))
            s.commit()
        return nodes

    @writes
    def bump(self, nodes: set[str]) -> None:
        """A new generation for these nodes: what their parts are told changed (addresses, holds)."""
        with self.session() as s:
            _bump(s, nodes)
            s.commit()

    @writes
    def add_replicas(self, replicas: list[ReplicaRow], reservations: list[ReservationRow], now: float,
                     event: str, parts: list[PartRow] | None = None) -> None:
        """More replicas for existing deployments (drain replacements, rescheduling): one transaction."""
        with self.session() as s:
            _check_capacity(s, reservations)
            for r in replicas:
                s.add(r)
            s.flush()
            for p in parts or []:
                s.add(p)
            for x in reservations:
                s.add(x)
            _bump(s, {r.node for r in replicas} | {p.node for p in parts or []})
            touch(s, DEPLOYMENT, {r.deployment for r in replicas}, now)
            for r in replicas:
                s.add(EventRow(at=now, kind="replica.added", node=r.node, deployment=r.deployment, message=event))
            s.commit()

    @writes
    def stop_replicas(self, ids: list[str], now: float, why: str, state: str | None = None) -> set[str]:
        """Tell the replicas' nodes to stop them (fencing: the next desired set no longer holds them)."""
        nodes: set[str] = set()
        deps: set[str] = set()
        with self.session() as s:
            for rid in ids:
                r = s.get(ReplicaRow, rid)
                if r is None or r.desired == "stop":
                    continue
                r.desired = "stop"
                if state is not None:
                    r.state = state
                r.message = why
                s.add(r)
                nodes.add(r.node)
                nodes |= _gang_nodes(s, [rid])  # a gang stops as a whole
                deps.add(r.deployment)
                s.add(EventRow(at=now, kind="replica.stopping", node=r.node, deployment=r.deployment,
                               message=f"{rid}: {why}"))
            _bump(s, nodes)
            touch(s, DEPLOYMENT, deps, now)
            s.commit()
        return nodes

    @writes
    def set_replica_state(self, ids: list[str], state: str, message: str | None = None) -> None:
        if not ids:
            return
        with self.session() as s:
            deps = set()
            for rid in ids:
                r = s.get(ReplicaRow, rid)
                if r is not None and (r.state != state or (message is not None and r.message != message)):
                    r.state = state
                    if message is not None:
                        r.message = message
                    s.add(r)
                    deps.add(r.deployment)
            touch(s, DEPLOYMENT, deps)
            s.commit()

    @writes
    def set_admin_state(self, name: str, state: str, now: float, reason: str = "", by: str = "") -> None:
        with self.session() as s:
            row = s.get(NodeRow, name)
            if row is None:
                raise NotFound(f"no node named {name!r}")
            row.admin_state = state
            if state in ("cordoned", "draining") and not row.cordoned_at:
                row.cordon_reason, row.cordoned_by, row.cordoned_at = reason, by, now
            if state == "ready":
                row.cordon_reason, row.cordoned_by, row.cordoned_at = "", "", 0.0
            s.add(row)
            s.add(EventRow(at=now, kind=f"node.{state}", node=name,
                           message=f"{reason} (by {by})" if reason and by else reason or (f"by {by}" if by else "")))
            touch(s, NODE, [name], now)
            s.commit()

    @writes
    def forget_link(self, rid: str) -> None:
        """A replacement that took over is an ordinary replica from now on."""
        with self.session() as s:
            r = s.get(ReplicaRow, rid)
            if r is not None and r.replaces:
                r.replaces = ""
                s.add(r)
                touch(s, DEPLOYMENT, [r.deployment])
                s.commit()

    # ---- events
    def events(self, node: str = "", deployment: str = "", since: float = 0.0, after_id: int = 0,
               limit: int = 200) -> list[EventRow]:
        """The newest `limit` events matching, oldest first (as `kubectl get events` lists them)."""
        with self.read() as s:
            q = select(EventRow).where(EventRow.at >= since, col(EventRow.id) > after_id)
            if node:
                q = q.where(EventRow.node == node)
            if deployment:
                q = q.where(EventRow.deployment == deployment)
            rows = list(s.exec(q.order_by(col(EventRow.id).desc()).limit(limit)).all())
        return rows[::-1]

    # ---- drains
    def drains(self, active_only: bool = True) -> list[DrainRow]:
        with self.read() as s:
            q = select(DrainRow)
            if active_only:
                q = q.where(DrainRow.state == "active")
            return list(s.exec(q).all())

    def get_drain(self, node: str) -> DrainRow | None:
        with self.read() as s:
            return s.get(DrainRow, node)

    def save_drain(self, drain: DrainRow) -> None:
        with self.session() as s:
            s.merge(drain)
            s.commit()

    # ---- node removal (`fleet node remove`): deleting the row deletes its credential hash with it
    @writes
    def stop_node_replicas(self, name: str) -> bool:
        """desired=stop for every replica with a part on the node, and a new generation for each node running a
        part of them, so that connected agents stop their engines."""
        with self.session() as s:
            ids = set(s.exec(select(PartRow.replica).where(PartRow.node == name)).all())
            deps = set()
            stopped = []
            nodes: set[str] = set()
            for r in s.exec(select(ReplicaRow).where((ReplicaRow.node == name) | col(ReplicaRow.id).in_(ids))).all():
                if r.desired != "stop":
                    r.desired = "stop"
                    s.add(r)
                    deps.add(r.deployment)
                    stopped.append(r.id)
                    nodes.add(r.node)
            _bump(s, nodes | _gang_nodes(s, stopped))
            touch(s, DEPLOYMENT, deps)
            s.commit()
        return bool(deps)

    @writes
    def remove_node(self, name: str, now: float) -> Removed:
        """Forget the node, its replicas (and their reservations), its GPUs and its credential."""
        with self.session() as s:
            node = s.get(NodeRow, name)
            if node is None:
                raise NotFound(f"no node named {name!r}")
            replicas = list(s.exec(select(ReplicaRow).where(ReplicaRow.node == name)).all())
            ids = [r.id for r in replicas]
            gpus = [g.uuid for g in s.exec(select(GpuRow).where(GpuRow.node == name)).all()]
            if ids:
                s.execute(delete(ReservationRow).where(col(ReservationRow.replica).in_(ids)))
                s.execute(delete(PartRow).where(col(PartRow.replica).in_(ids)))  # their parts on other nodes
            # Replicas with a part here whose main is elsewhere lose that part (the gang reconciler replaces them).
            gangs = set(s.exec(select(PartRow.replica).where(PartRow.node == name)).all())
            touch(s, DEPLOYMENT, s.exec(select(ReplicaRow.deployment).where(col(ReplicaRow.id).in_(gangs))).all(), now)
            if gpus:
                # reservations on these GPUs may belong to replicas elsewhere: their deployments change too
                held = s.exec(select(ReservationRow.replica).where(col(ReservationRow.gpu_uuid).in_(gpus))).all()
                elsewhere = s.exec(select(ReplicaRow.deployment).where(col(ReplicaRow.id).in_(set(held)))).all()
                touch(s, DEPLOYMENT, elsewhere, now)
                s.execute(delete(ReservationRow).where(col(ReservationRow.gpu_uuid).in_(gpus)))
            s.execute(delete(ReplicaRow).where(col(ReplicaRow.node) == name))
            _delete_referencing(s, GpuRow.__table__.c.uuid, gpus, {"reservation"})  # type: ignore[attr-defined]
            s.execute(delete(GpuRow).where(col(GpuRow.node) == name))
            _delete_referencing(s, NodeRow.__table__.c.name, [name], {"gpu", "replica"})  # type: ignore[attr-defined]
            # A deployment being removed whose last replica was here is done.
            for dep_name in {r.deployment for r in replicas}:
                dep = s.get(DeploymentRow, dep_name)
                left = s.exec(select(ReplicaRow).where(ReplicaRow.deployment == dep_name)).first()
                if dep is not None and dep.state == "removing" and left is None:
                    s.delete(dep)
            s.delete(node)
            s.add(EventRow(at=now, kind="node.removed", node=name,
                           message=f"{len(ids)} replica(s) forgotten" if ids else ""))
            touch(s, NODE_GPUS, [name], now)
            touch(s, DEPLOYMENT, {r.deployment for r in replicas}, now)
            s.commit()
        return Removed(name=name, replicas=ids, gpus=gpus)
