"""Observed memory in the store: one row per replica (its latest measurement), kept after the replica is
gone so that the controller goes on learning from it; the oldest beyond KEEP per key are dropped."""

from __future__ import annotations

from sqlmodel import col, select

from fleet.controller.store.repository import Store
from fleet.controller.store.schema import EventRow, ObservationRow

KEEP = 20  # rows per (model, quant, engine, gpu type, TP, PP, context)


def save(store: Store, row: ObservationRow, event: str = "") -> None:
    """Insert or replace the replica's row; with `event`, also record a replica.memory_over event."""
    with store.session() as s:
        s.merge(row)
        if event:
            s.add(EventRow(at=row.measured_at, kind="replica.memory_over", node=row.node,
                           deployment=row.deployment, message=event))
        s.flush()
        same = s.exec(select(ObservationRow).where(
            ObservationRow.model == row.model, ObservationRow.quant == row.quant,
            ObservationRow.engine == row.engine, ObservationRow.gpu_type == row.gpu_type,
            ObservationRow.tp == row.tp, ObservationRow.pp == row.pp, ObservationRow.context == row.context,
        ).order_by(col(ObservationRow.measured_at).desc())).all()
        for old in same[KEEP:]:
            s.delete(old)
        s.commit()


def rows(store: Store, model: str | None = None, replicas: set[str] | None = None) -> list[ObservationRow]:
    with store.read() as s:
        q = select(ObservationRow)
        if model is not None:
            q = q.where(ObservationRow.model == model)
        if replicas is not None:
            q = q.where(col(ObservationRow.replica).in_(sorted(replicas)))
        return list(s.exec(q).all())
