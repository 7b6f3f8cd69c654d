"""Observed memory: store what agents measure per replica, flag a replica that uses more than it reserved,
and answer "what did replicas of this key really use" for placement, `fleet estimate` and describe."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from fleet.controller.app.controller import Controller
from fleet.controller.core.observed import Key, Memory, Observed, over_reservation, summarize
from fleet.controller.core.options import ObservedLookup
from fleet.controller.store import observations
from fleet.controller.store.schema import DeploymentRow, ObservationRow

log = logging.getLogger("fleet.controller")

CHANGE = 64 * 2**20  # a measurement this close to the stored one is not written again


@dataclass(frozen=True)
class Measured:
    replica: str
    memory: Memory


def memory_of(row: ObservationRow) -> Memory:
    gpus = tuple(sorted((u, int(b)) for u, b in json.loads(row.gpus or "{}").items()))
    return Memory(gpus=gpus, ram=row.ram, weights=row.weights, kv_cache=row.kv_cache, activations=row.activations,
                  runtime=row.runtime, total=row.total, engine_version=row.engine_version,
                  measured_at=row.measured_at)


def _changed(old: ObservationRow | None, new: ObservationRow) -> bool:
    if old is None or old.over != new.over:
        return True
    terms = ("weights", "kv_cache", "activations", "runtime", "total", "ram")
    return any(abs(getattr(old, t) - getattr(new, t)) >= CHANGE or bool(getattr(old, t)) != bool(getattr(new, t))
               for t in terms) or old.gpus != new.gpus


def record(ctl: Controller, node: str, measured: Iterable[Measured]) -> None:
    """Keep each replica's latest measurement; a replica above its reservation gets one event when it crosses."""
    measured = [m for m in measured if m.memory.measured]
    if not measured:
        return
    replicas = {r.id: r for r in ctl.store.replicas(node=node)}
    mine = [m for m in measured if m.replica in replicas]  # a node reports only for its own replicas
    if not mine:
        return
    names = {g.uuid: g.name for g in ctl.store.gpus(node)}
    deps: dict[str, DeploymentRow | None] = {}
    stored = {o.replica: o for o in observations.rows(ctl.store, replicas={m.replica for m in mine})}
    reservations = ctl.store.reservations(m.replica for m in mine)
    for m in mine:
        r = replicas[m.replica]
        dep = deps.setdefault(r.deployment, ctl.store.get_deployment(r.deployment))
        if dep is None:
            continue
        # this node's GPUs only: a multi-node replica reserves on its other parts' nodes too
        reserved = {x.gpu_uuid: x.bytes for x in reservations if x.replica == r.id and x.gpu_uuid in names}
        first_gpu = min(reserved, key=lambda u: next(x.gpu_index for x in reservations if x.gpu_uuid == u),
                        default=None)
        over = over_reservation(m.memory, reserved, r.ram_bytes)
        row = ObservationRow(
            replica=r.id, deployment=dep.name, node=node, model=dep.model, quant=dep.quant, engine=dep.engine,
            engine_version=m.memory.engine_version, gpu_type=names.get(first_gpu, "") if first_gpu else "cpu",
            tp=r.tp if reserved else 1, pp=max(1, r.nodes), context=dep.context, weights=m.memory.weights,
            kv_cache=m.memory.kv_cache, activations=m.memory.activations, runtime=m.memory.runtime,
            total=m.memory.total, ram=m.memory.ram, gpus=json.dumps(dict(m.memory.gpus), sort_keys=True),
            reserved=max(reserved.values(), default=r.ram_bytes), over=bool(over), measured_at=m.memory.measured_at)
        old = stored.get(r.id)
        if not _changed(old, row):
            continue
        event = ""
        if over and not (old and old.over):
            event = (f"{r.id} of {dep.name} on {node} uses more memory than it reserved: "
                     + ", ".join(f"{where} {used} > {res} bytes" for where, used, res in over)
                     + "; it can starve its neighbours")
            log.warning("%s", event)
        observations.save(ctl.store, row, event)


def key_rows(ctl: Controller, key: Key) -> list[ObservationRow]:
    return [o for o in observations.rows(ctl.store, model=key.model)
            if (o.quant, o.engine, o.tp, o.pp, o.context) == (key.quant, key.engine, key.tp, key.pp, key.context)
            and (not key.gpu_type or o.gpu_type == key.gpu_type)]


def summary(ctl: Controller, key: Key) -> Observed | None:
    """What replicas of `key` really used (any GPU type when key.gpu_type is empty)."""
    found = key_rows(ctl, key)
    return summarize((memory_of(o) for o in found), (o.gpu_type for o in found))


def lookup(ctl: Controller, model: str, context: int) -> ObservedLookup:
    """Placement's view of the observations of one model at one context (read once per placement)."""
    by_key: dict[tuple[str, str, str, int], list[ObservationRow]] = {}
    for o in observations.rows(ctl.store, model=model):
        if o.context == context:
            by_key.setdefault((o.quant, o.engine, o.gpu_type, o.tp), []).append(o)

    def find(quant: str, engine: str, gpu_type: str, tp: int) -> Observed | None:
        found = by_key.get((quant, engine, gpu_type, tp if gpu_type != "cpu" else 1), [])
        return summarize((memory_of(o) for o in found), (o.gpu_type for o in found))

    return find


def of_replicas(ctl: Controller, ids: set[str]) -> dict[str, ObservationRow]:
    return {o.replica: o for o in observations.rows(ctl.store, replicas=ids)} if ids else {}


def every(ctl: Controller) -> list[ObservationRow]:
    return observations.rows(ctl.store)


def of_model(ctl: Controller, model: str) -> list[ObservationRow]:
    return observations.rows(ctl.store, model=model)
