"""Deployments: read them with their replicas and reservations, and remove them (`fleet remove`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet.controller.app.controller import Controller
from fleet.controller.core.errors import NotFound
from fleet.controller.store.schema import DeploymentRow, PartRow, ReplicaRow, ReservationRow


@dataclass(frozen=True)
class DeploymentRows:
    deployment: DeploymentRow
    replicas: list[ReplicaRow]
    reservations: list[ReservationRow]
    parts: list[PartRow] = field(default_factory=list)  # multi-node replicas: their parts other than the mains
    gpu_nodes: dict[str, str] = field(default_factory=dict)  # GPU uuid -> node, when there are parts


def get(ctl: Controller, name: str) -> DeploymentRows:
    dep = ctl.store.get_deployment(name)
    if dep is None:
        names = ", ".join(d.name for d in ctl.store.deployments()) or "none"
        raise NotFound(f"no deployment named {name!r}; deployments: {names}")
    replicas = ctl.store.replicas(deployment=name)
    ids = {r.id for r in replicas}
    parts = [x for r in replicas if r.nodes > 1 for x in ctl.store.parts(replica=r.id)]
    return DeploymentRows(dep, replicas, [x for x in ctl.store.reservations() if x.replica in ids], parts,
                          gpu_nodes(ctl) if parts else {})


def gpu_nodes(ctl: Controller) -> dict[str, str]:
    """GPU uuid -> node: which part of a multi-node replica a reservation belongs to."""
    return {g.uuid: g.node for g in ctl.store.gpus()}


def every(ctl: Controller) -> list[DeploymentRows]:
    """All deployments, each with its own replicas and reservations (one pass over each table)."""
    replicas: dict[str, list[ReplicaRow]] = {}
    for r in ctl.store.replicas():
        replicas.setdefault(r.deployment, []).append(r)
    reservations: dict[str, list[ReservationRow]] = {}
    for x in ctl.store.reservations():
        reservations.setdefault(x.replica, []).append(x)
    parts: dict[str, list[PartRow]] = {}
    for part in ctl.store.parts():
        parts.setdefault(part.replica, []).append(part)
    out = []
    where = gpu_nodes(ctl) if parts else {}
    for d in ctl.store.deployments():
        mine = replicas.get(d.name, [])
        theirs = [x for r in mine for x in parts.get(r.id, [])]
        out.append(DeploymentRows(d, mine, [x for r in mine for x in reservations.get(r.id, [])], theirs,
                                  where if theirs else {}))
    return out


def remove(ctl: Controller, name: str) -> DeploymentRows | None:
    """Tell every replica's node to stop it; the deployment goes once its last replica has stopped.

    Returns what is left (state `removing`), or None when nothing was running and it is already gone.
    """
    ctl.store.mark_removing(name, time.time())
    # Replicas no agent ever started (still pending) hold nothing running: free them now. A multi-node replica
    # whose main holds (pending) may have parts running elsewhere: those wait for their nodes to stop them.
    ctl.store.forget_replicas([r.id for r in ctl.store.replicas(deployment=name) if r.state == "pending"
                               and all(x.state in ("pending", "stopped") for x in ctl.store.parts(replica=r.id))])
    if ctl.store.get_deployment(name) is None:
        return None
    return get(ctl, name)
