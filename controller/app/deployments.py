"""Deployments: read them with their replicas and reservations, and remove them (`fleet remove`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from fleet.controller.app import observed
from fleet.controller.app.controller import Controller
from fleet.controller.app.paging import page
from fleet.controller.core.errors import NotFound
from fleet.controller.core.observed import Key, Observed, summarize
from fleet.controller.store.schema import DeploymentRow, ObservationRow, PartRow, ReplicaRow, ReservationRow


@dataclass(frozen=True)
class DeploymentRows:
    deployment: DeploymentRow
    replicas: list[ReplicaRow]
    reservations: list[ReservationRow]
    observed: dict[str, ObservationRow] = field(default_factory=dict)  # replica id -> its last measurement
    learned: Observed | None = None  # every replica of the same key, this deployment's or not
    parts: list[PartRow] = field(default_factory=list)  # multi-node replicas: their parts other than the mains
    gpu_nodes: dict[str, str] = field(default_factory=dict)  # GPU uuid -> node, when there are parts


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
    return replace(d, observed=mine, learned=learned)


def with_parts(ctl: Controller, dep: DeploymentRow, replicas: list[ReplicaRow]) -> DeploymentRows:
    """A deployment's rows; a multi-node replica's parts with the node of each GPU it reserved."""
    parts = [p for r in replicas if r.nodes > 1 for p in ctl.store.parts(replica=r.id)]
    return DeploymentRows(dep, replicas, ctl.store.reservations(r.id for r in replicas), parts=parts,
                          gpu_nodes=gpu_nodes(ctl, {r.node for r in replicas} | {p.node for p in parts})
                          if parts else {})


def gpu_nodes(ctl: Controller, nodes: set[str]) -> dict[str, str]:
    """GPU uuid -> node over these nodes: which part of a multi-node replica a reservation belongs to."""
    return {g.uuid: g.node for n in nodes for g in ctl.store.gpus(n)}


def get(ctl: Controller, name: str) -> DeploymentRows:
    dep = ctl.store.get_deployment(name)
    if dep is None:
        names = ", ".join(d.name for d in ctl.store.deployments()) or "none"
        raise NotFound(f"no deployment named {name!r}; deployments: {names}")
    return _with_observed(ctl, with_parts(ctl, dep, ctl.store.replicas(deployment=name)))


def every(ctl: Controller, after: str = "", limit: int = 0) -> list[DeploymentRows]:
    """Deployments in name order, each with its replicas, reservations and what replicas of it used:
    all of them, or a page after the name `after`."""
    mirror = ctl.store.mirror
    names = page(sorted(mirror.deployments), after, limit)
    seen = {m: observed.of_model(ctl, m) for m in {mirror.deployments[n].model for n in names}}
    out = []
    for name in names:
        dep = mirror.deployments[name]
        out.append(_with_observed(ctl, with_parts(ctl, dep, ctl.store.replicas(deployment=name)), seen[dep.model]))
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
