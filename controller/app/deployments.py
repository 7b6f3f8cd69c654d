"""Deployments: read them with their replicas and reservations, and remove them (`fleet remove`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet.controller.app import observed
from fleet.controller.app.controller import Controller
from fleet.controller.core.errors import NotFound
from fleet.controller.core.observed import Key, Observed, summarize
from fleet.controller.store.schema import DeploymentRow, ObservationRow, ReplicaRow, ReservationRow


@dataclass(frozen=True)
class DeploymentRows:
    deployment: DeploymentRow
    replicas: list[ReplicaRow]
    reservations: list[ReservationRow]
    observed: dict[str, ObservationRow] = field(default_factory=dict)  # replica id -> its last measurement
    learned: Observed | None = None  # every replica of the same key, this deployment's or not


def _with_observed(ctl: Controller, d: DeploymentRows, rows: list[ObservationRow] | None = None) -> DeploymentRows:
    dep = d.deployment
    rows = rows if rows is not None else observed.key_rows(ctl, Key(dep.model, dep.quant, dep.engine, "", dep.tp,
                                                                     dep.context))
    mine = {o.replica: o for o in rows if o.replica in {r.id for r in d.replicas}}
    types = {o.gpu_type for o in mine.values()}
    same = [o for o in rows if (o.model, o.quant, o.engine, o.context) == (dep.model, dep.quant, dep.engine,
                                                                          dep.context)
            and (o.tp == dep.tp or o.gpu_type == "cpu") and (not types or o.gpu_type in types)]
    learned = summarize((observed.memory_of(o) for o in same), (o.gpu_type for o in same))
    return DeploymentRows(dep, d.replicas, d.reservations, mine, learned)


def get(ctl: Controller, name: str) -> DeploymentRows:
    dep = ctl.store.get_deployment(name)
    if dep is None:
        names = ", ".join(d.name for d in ctl.store.deployments()) or "none"
        raise NotFound(f"no deployment named {name!r}; deployments: {names}")
    replicas = ctl.store.replicas(deployment=name)
    ids = {r.id for r in replicas}
    return _with_observed(ctl, DeploymentRows(dep, replicas, [x for x in ctl.store.reservations() if x.replica in ids]))


def every(ctl: Controller) -> list[DeploymentRows]:
    """All deployments, each with its own replicas and reservations (one pass over each table)."""
    replicas: dict[str, list[ReplicaRow]] = {}
    for r in ctl.store.replicas():
        replicas.setdefault(r.deployment, []).append(r)
    reservations: dict[str, list[ReservationRow]] = {}
    for x in ctl.store.reservations():
        reservations.setdefault(x.replica, []).append(x)
    seen: dict[str, list[ObservationRow]] = {}
    for o in observed.every(ctl):
        seen.setdefault(o.model, []).append(o)
    out = []
    for d in ctl.store.deployments():
        mine = replicas.get(d.name, [])
        out.append(_with_observed(ctl, DeploymentRows(d, mine, [x for r in mine for x in reservations.get(r.id, [])]),
                                  seen.get(d.model, [])))
    return out


def remove(ctl: Controller, name: str) -> DeploymentRows | None:
    """Tell every replica's node to stop it; the deployment goes once its last replica has stopped.

    Returns what is left (state `removing`), or None when nothing was running and it is already gone.
    """
    _, nodes = ctl.store.mark_removing(name, time.time())
    # Replicas no agent ever started (still pending) hold nothing running: free them now.
    ctl.store.forget_replicas([r.id for r in ctl.store.replicas(deployment=name) if r.state == "pending"])
    ctl.push(nodes)
    if ctl.store.get_deployment(name) is None:
        return None
    return get(ctl, name)
