"""Gangs: the parts of a multi-node replica start, restart and stop together.

After every report from a node running a part, `after_report` compares what the gang looked like before and
after: a part that crashed in the current epoch starts a new epoch (every part restarts, rpc-servers and
followers first, as core/parts.py orders them); a part that now listens (or a main that now holds its
rendezvous port) changes what the others are told, so their nodes get a new desired set. `tick` runs with
the reconciler: replicas that lost a part (its node was removed) are stopped and replaced, and stopped gangs
whose parts have all stopped are forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from fleet.controller.app.controller import Controller
from fleet.controller.core.parts import PartState, crashed, launches
from fleet.controller.store.schema import PartRow, ReplicaRow

log = logging.getLogger("fleet.controller")

Gang = tuple[ReplicaRow, list[PartRow]]


def load(ctl: Controller, ids: Iterable[str]) -> dict[str, Gang]:
    """The multi-node replicas among `ids`, each with its parts."""
    return {r.id: (r, ctl.store.parts(replica=r.id)) for r in ctl.store.replicas_by_id(ids) if r.nodes > 1}


def states(gang: Gang) -> list[PartState]:
    r, parts = gang
    return [PartState(0, r.node, r.state, r.address, r.reported_epoch, r.restarts)] + [
        PartState(p.rank, p.node, p.state, p.address, p.epoch, p.restarts) for p in sorted(parts, key=lambda p: p.rank)]


def nodes_of(gang: Gang) -> set[str]:
    r, parts = gang
    return {r.node} | {p.node for p in parts}


def after_report(ctl: Controller, before: dict[str, Gang]) -> None:
    """Act on what a report changed in these gangs (their rows before the report)."""
    if not before:
        return
    now = time.time()
    after = load(ctl, before)
    engines = {d.name: d.engine for d in ctl.store.deployments()}
    for rid, old in before.items():
        new = after.get(rid)
        if new is None or new[0].desired != "run":
            continue
        r, parts = new
        engine = engines.get(r.deployment, "")
        was, now_states = states(old), states(new)
        down = [a for b, a in zip(was, now_states, strict=False) if crashed(b, a, r.epoch)]
        if down:
            who = ", ".join(f"{'main' if p.rank == 0 else 'part ' + str(p.rank)} on {p.node}" for p in down)
            # A new epoch and generation on every part's node: the store's change feed sends them their sets.
            ctl.store.bump_epoch(rid, r.epoch, f"{who} exited; restarting every part", now)
            log.warning("replica %s: %s exited; restarting its %d parts in order", rid, who, len(nodes_of(new)))
            continue
        failed = [p for p in parts if p.state == "failed"]
        if failed and r.state != "failed":
            p = failed[0]
            ctl.store.set_replica_state([rid], "failed", f"part {p.rank} on {p.node} failed: {p.message}")
        if launches(engine, r.epoch, was) != launches(engine, r.epoch, now_states):
            # Someone now listens (or holds its port): the parts waiting for it are told, and may start.
            ctl.store.bump(nodes_of(new))


def forget_stopped(ctl: Controller, ids: Iterable[str]) -> None:
    """Stopped gangs whose every part has stopped: forgotten (reservations and all)."""
    done = []
    for rid, (r, parts) in load(ctl, ids).items():
        if r.desired == "stop" and r.state == "stopped" and all(p.state == "stopped" for p in parts):
            done.append(rid)
    ctl.store.forget_replicas(done)


def tick(ctl: Controller, now: float) -> None:
    """Gangs that lost a part are stopped (and replaced by fill_missing); stopped gangs are forgotten."""
    # every tick: look at the multi-node replicas only, not a sorted list of all 5,000
    gangs = sorted((r for r in ctl.store.mirror.replicas.values() if r.nodes > 1), key=lambda r: r.id)
    if not gangs:
        return
    done = []
    for r in gangs:
        parts = ctl.store.parts(replica=r.id)
        if r.desired == "run" and len(parts) < r.nodes - 1:
            ctl.store.stop_replicas([r.id], now, "a part's node was removed: placed again elsewhere")
        elif r.desired == "stop" and r.state == "stopped" and all(p.state == "stopped" for p in parts):
            done.append(r.id)
    ctl.store.forget_replicas(done)
