"""Deployments: read them with their replicas and reservations, and remove them (`fleet remove`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fleet.controller.app.controller import Controller
from fleet.controller.core.errors import NotFound
from fleet.controller.store.schema import DeploymentRow, ReplicaRow, ReservationRow


@dataclass(frozen=True)
class DeploymentRows:
    deployment: DeploymentRow
    replicas: list[ReplicaRow]
    reservations: list[ReservationRow]


def get(ctl: Controller, name: str) -> DeploymentRows:
    dep = ctl.store.get_deployment(name)
    if dep is None:
        names = ", ".join(d.name for d in ctl.store.deployments()) or "none"
        raise NotFound(f"no deployment named {name!r}; deployments: {names}")
    replicas = ctl.store.replicas(deployment=name)
    ids = {r.id for r in replicas}
    return DeploymentRows(dep, replicas, [x for x in ctl.store.reservations() if x.replica in ids])


def every(ctl: Controller) -> list[DeploymentRows]:
    """All deployments, each with its own replicas and reservations (one pass over each table)."""
    replicas: dict[str, list[ReplicaRow]] = {}
    for r in ctl.store.replicas():
        replicas.setdefault(r.deployment, []).append(r)
    reservations: dict[str, list[ReservationRow]] = {}
    for x in ctl.store.reservations():
        reservations.setdefault(x.replica, []).append(x)
    out = []
    for d in ctl.store.deployments():
        mine = replicas.get(d.name, [])
        out.append(DeploymentRows(d, mine, [x for r in mine for x in reservations.get(r.id, [])]))
    return out


def remove(ctl: Controller, name: str) -> DeploymentRows | None:
    """Tell every replica's node to stop it; the deployment goes once its last replica has stopped.

    Returns what is left (state `removing`), or None when nothing was running and it is already gone.
    """
    ctl.store.mark_removing(name, time.time())
    # Replicas no agent ever started (still pending) hold nothing running: free them now.
    ctl.store.forget_replicas([r.id for r in ctl.store.replicas(deployment=name) if r.state == "pending"])
    if ctl.store.get_deployment(name) is None:
        return None
    return get(ctl, name)
