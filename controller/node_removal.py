"""`fleet node remove`: the durable half, in one transaction (the servicer does the in-memory half).

Deleting the node row deletes its credential hash with it, so a removed node can never open a session
again, even after a controller restart; it must join again with a join token.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session, SQLModel, col, select

from fleet.controller.errors import FailedPrecondition, NotFound
from fleet.controller.store import DeploymentRow, EventRow, GpuRow, NodeRow, ReplicaRow, ReservationRow, Store


@dataclass(frozen=True)
class Removed:
    name: str
    replicas: list[str]
    gpus: list[str]


def check_removable(store: Store, name: str, force: bool) -> list[ReplicaRow]:
    """The node's replicas; refuses (FailedPrecondition) while it has any and `force` is not given."""
    if store.get_node(name) is None:
        names = [n.name for n in store.nodes()]
        listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "") if names else "none"
        raise NotFound(f"no node named {name!r}; nodes: {listed}")
    replicas = store.replicas(node=name)
    if replicas and not force:
        deps = ", ".join(sorted({r.deployment for r in replicas}))
        raise FailedPrecondition(f"node {name} still has {len(replicas)} replica(s) of {deps}: drain it first, "
                                 "or pass --force to forget them (their engines are told to stop)")
    return replicas


def mark_stopping(store: Store, name: str) -> bool:
    """desired=stop for the node's replicas and a new generation, so a connected agent stops their engines."""
    with store.session() as s:
        node = s.get(NodeRow, name)
        changed = False
        for r in s.exec(select(ReplicaRow).where(ReplicaRow.node == name)).all():
            if r.desired != "stop":
                r.desired = "stop"
                s.add(r)
                changed = True
        if node is not None and changed:
            node.generation += 1
            s.add(node)
        s.commit()
    return changed


def _delete_referencing(s: Session, column: object, values: list[str], skip: set[str]) -> None:
    # Tables other modules add (drains, ...) may point at a node or GPU; delete their rows too, so removing a
    # node never trips a foreign key and leaves nothing behind that names it.
    for table in SQLModel.metadata.sorted_tables:
        if table.name in skip:
            continue
        for fk in table.foreign_keys:
            if fk.column is column:
                s.execute(delete(table).where(fk.parent.in_(values)))


def remove(store: Store, name: str, now: float) -> Removed:
    """Forget the node, its replicas (and their reservations), its GPUs and its credential."""
    with store.session() as s:
        node = s.get(NodeRow, name)
        if node is None:
            raise NotFound(f"no node named {name!r}")
        replicas = list(s.exec(select(ReplicaRow).where(ReplicaRow.node == name)).all())
        ids = [r.id for r in replicas]
        gpus = [g.uuid for g in s.exec(select(GpuRow).where(GpuRow.node == name)).all()]
        if ids:
            s.execute(delete(ReservationRow).where(col(ReservationRow.replica).in_(ids)))
        if gpus:
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
        s.commit()
    return Removed(name=name, replicas=ids, gpus=gpus)
