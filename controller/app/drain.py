"""Drain: move every replica off a node, make-before-break, then mark it drained.

`start`, `cancel` and `status` answer `fleet drain`; `drive` advances one active drain and runs every
second from the reconciler. Every decision is recorded in the store first (a drain row, replicas with
a `replaces` link, replicas asked to stop), so a controller killed at any point picks up where it was.
The moves themselves are planned by the pure core (fleet.controller.core.drain_plan) on a copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fleet.controller.app import observed
from fleet.controller.app.controller import Controller
from fleet.controller.app.place import deployment_request, place_one, snapshot
from fleet.controller.core.drain_plan import DrainPlan, Movable, plan_drain
from fleet.controller.core.errors import InvalidArgument, NotFound
from fleet.controller.core.replica_states import DECLARED, SERVING
from fleet.controller.store.schema import DrainRow, ReplicaRow

log = logging.getLogger("fleet.controller")

MAX_NODES = 64
MAX_TEXT = 256


@dataclass(frozen=True)
class DrainView:
    """One node's drain as `fleet drain` shows it; moves and blocked only when a plan was made."""

    node: str
    state: str  # none | planned | active | done | cancelled
    message: str
    remaining: int  # replicas still on the node
    node_state: str
    moves: list[tuple[str, str, str, tuple[int, ...]]] = field(default_factory=list)  # replica, deployment, to, gpus
    blocked: list[tuple[str, str, str]] = field(default_factory=list)  # replica, deployment, reason
    deadline: float = 0.0  # 0: none
    started_at: float = 0.0
    force: bool = False


def _check_nodes(ctl: Controller, nodes: list[str]) -> list[str]:
    names = list(dict.fromkeys(nodes))[:MAX_NODES]
    if not names:
        raise InvalidArgument("name the node(s) to drain")
    for name in names:
        if ctl.store.get_node(name) is None:
            known = ", ".join(n.name for n in ctl.store.nodes()) or "none"
            raise NotFound(f"no node named {name!r}; nodes: {known}")
    return names


def plan(ctl: Controller, nodes: list[str], only: set[str] | None = None) -> DrainPlan:
    """Every move a drain of `nodes` would make (of the replicas `only`, if given), decided on a copy of the
    fleet (changes nothing)."""
    snap = snapshot(ctl)
    catalog = ctl.catalog()
    deps = {d.name: d for d in ctl.store.deployments()}
    movables = []
    touching = {r.id: r for name in nodes for r in ctl.store.replicas_on(name)}  # a gang moves as a whole
    for r in touching.values():
        if only is not None and r.id not in only:
            continue
        if r.desired == "run" and r.deployment in deps and deps[r.deployment].state == "active":
            dep = deps[r.deployment]
            movables.append(Movable(r.id, r.deployment, deployment_request(
                dep, catalog, snap, seen=observed.lookup(ctl, dep.model, dep.context))))
    return plan_drain(snap, nodes, movables, catalog.workload)


def blocked_now(ctl: Controller, node: str) -> list[tuple[str, str, str]]:
    """A drain in progress: its replicas with no replacement under way that cannot move now, and why."""
    started = {r.replaces for r in ctl.store.replicas() if r.replaces and r.desired == "run"}
    waiting = {r.id for r in ctl.store.replicas_on(node) if r.desired == "run" and r.id not in started}
    if not waiting:
        return []
    return [(b.replica, b.deployment, b.reason) for b in plan(ctl, [node], only=waiting).blocked]


def blocked_advice(drain: DrainRow, now: float) -> str:
    """What ends a block: with no deadline only the operator does (never "wait for the deadline")."""
    if drain.force:
        return "being stopped (--force)"
    if drain.deadline:
        return f"stopped at the deadline, in {max(0.0, drain.deadline - now) / 60:.0f} min, unless room frees up"
    return ("no deadline was set: it waits for room; `fleet drain NODE --force` stops it, "
            "`--deadline 30m` sets a deadline, `--cancel` ends the drain")


def status(ctl: Controller, nodes: list[str], drain_plan: DrainPlan | None = None,
           planned: bool = False) -> list[DrainView]:
    names = _check_nodes(ctl, nodes)
    rows = {n.name: n for n in ctl.store.nodes()}
    out = []
    for name in names:
        drain = ctl.store.get_drain(name)
        here = {r.id for r in ctl.store.replicas_on(name)}
        view = DrainView(
            node=name, state="planned" if planned else (drain.state if drain else "none"),
            message="" if planned or drain is None else drain.message,
            remaining=len(here),
            node_state=ctl.node_state(rows[name]) if name in rows else "",
            deadline=drain.deadline if drain and not planned else 0.0,
            started_at=drain.started_at if drain and not planned else 0.0,
            force=bool(drain and drain.force and not planned))
        if drain_plan is None and drain is not None and drain.state == "active":
            view.blocked.extend(blocked_now(ctl, name))  # the same list the text shows, for -o json too
        if drain_plan is not None:
            view.moves.extend((m.replica, m.deployment, "+".join(m.placement.nodes), m.placement.gpus)
                              for m in drain_plan.moves if m.replica in here)
            view.blocked.extend((b.replica, b.deployment, b.reason)
                                for b in drain_plan.blocked if b.replica in here)
        out.append(view)
    return out


def start(ctl: Controller, nodes: list[str], now: float, *, who: str, reason: str = "", force: bool = False,
          deadline_seconds: float = 0.0, dry_run: bool = False) -> list[DrainView]:
    names = _check_nodes(ctl, nodes)
    drain_plan = plan(ctl, names)
    if dry_run:
        return status(ctl, names, drain_plan, planned=True)
    reason = reason[:MAX_TEXT]
    # every node is cordoned before any replica moves, so no move lands on a node about to drain
    for name in names:
        ctl.store.set_admin_state(name, "draining", now, reason, who)
    for name in names:
        ctl.store.save_drain(DrainRow(node=name, state="active", started_at=now, force=force,
                                      deadline=now + deadline_seconds if deadline_seconds > 0 else 0.0,
                                      reason=reason, by=who, message="starting"))
    log.info("draining %s (by %s)", ", ".join(names), who)
    if ctl.lease.held():  # otherwise the controller with the duties lease drives it within a second
        for name in names:
            drain = ctl.store.get_drain(name)
            if drain is not None:
                drive(ctl, drain, now)
    return status(ctl, names, drain_plan)


def cancel(ctl: Controller, nodes: list[str], now: float, *, who: str) -> list[DrainView]:
    names = _check_nodes(ctl, nodes)
    for name in names:
        drain = ctl.store.get_drain(name)
        if drain is not None and drain.state == "active":
            drain.state, drain.message = "cancelled", f"cancelled by {who}"
            ctl.store.save_drain(drain)
            # stays cordoned; uncordon to reuse it
            ctl.store.set_admin_state(name, "cordoned", now, reason=f"drain cancelled by {who}")
    return status(ctl, names)


def drive(ctl: Controller, drain: DrainRow, now: float) -> None:
    """One step of a drain: stop replaced replicas, start replacements, or say what blocks it."""
    store = ctl.store
    min_healthy = ctl.settings.drain_min_healthy
    running = [r for r in store.replicas_on(drain.node) if r.desired == "run"]
    replacement = {r.replaces: r for r in store.replicas() if r.replaces and r.desired == "run"}
    deps = {d.name: d for d in store.deployments()}
    in_flight: dict[str, int] = {}
    waiting: list[ReplicaRow] = []
    notes: list[str] = []
    for old in running:
        rep = replacement.get(old.id)
        if rep is None:
            waiting.append(old)
        elif rep.state == DECLARED or (rep.state == SERVING and now - rep.healthy_since >= min_healthy):
            store.stop_replicas([old.id], now, f"drained: replaced by {rep.id} on {rep.node}")
            store.forget_link(rep.id)
            notes.append(f"{old.deployment}: moved to {rep.node}")
        elif rep.state == "failed":
            store.stop_replicas([rep.id], now, "replacement failed; trying again")
            notes.append(f"{old.deployment}: replacement on {rep.node} failed: {rep.message[:200]}")
        else:
            in_flight[old.deployment] = in_flight.get(old.deployment, 0) + 1
            notes.append(f"{old.deployment}: waiting for {rep.id} on {rep.node} ({rep.state})")
    late = drain.force or (drain.deadline and now >= drain.deadline)
    for old in sorted(waiting, key=lambda r: r.id):
        dep = deps.get(old.deployment)
        if dep is None or dep.state != "active":
            continue
        if in_flight.get(old.deployment, 0) >= max(1, dep.max_moves):
            continue
        why = place_one(ctl, dep, old.ordinal, now, replaces=old.id)
        if why is None:
            in_flight[old.deployment] = in_flight.get(old.deployment, 0) + 1
            notes.append(f"{old.deployment}: starting a replacement")
        elif late:
            # Break-before-make, as the operator allowed (--force) or the deadline demands.
            store.stop_replicas([old.id], now, f"drain {'forced' if drain.force else 'deadline'}: "
                                        f"stopped without a replacement ({why})")
            notes.append(f"{old.deployment}: stopped without a replacement ({why})")
        else:
            notes.append(f"{old.deployment}: blocked: {why} ({blocked_advice(drain, now)})")
    left = store.replicas_on(drain.node)
    if not left:
        store.set_admin_state(drain.node, "drained", now)
        drain.state, drain.message = "done", "drained"
        log.info("node %s drained", drain.node)
    else:
        drain.message = "; ".join(notes) or f"{len(left)} replica(s) stopping"
    store.save_drain(drain)
