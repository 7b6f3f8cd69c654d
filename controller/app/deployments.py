"""Deployments: read them with their replicas and reservations, and remove them (`fleet remove`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fleet.controller.app.controller import Controller
from fleet.controller.app.paging import page
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
    return DeploymentRows(dep, replicas, ctl.store.reservations(r.id for r in replicas))


def every(ctl: Controller, after: str = "", limit: int = 0) -> list[DeploymentRows]:
    """Deployments in name order, each with its own replicas and reservations: all, or a page after `after`."""
    out = []
    for name in page(sorted(ctl.store.mirror.deployments), after, limit):
        replicas = ctl.store.replicas(deployment=name)
        out.append(DeploymentRows(ctl.store.mirror.deployments[name], replicas,
                                  ctl.store.reservations(r.id for r in replicas)))
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
