"""The controller's scheduled repairs, every second: offline nodes, drains in progress, missing replicas.

A function over the Controller (it holds no reference back): what it remembers between ticks is in
`ctl.repair`, and everything it acts on is in the store first, so a controller killed at any point
picks up where it was.
"""

from __future__ import annotations

import logging
import time

from fleet.controller.app import drain, gang
from fleet.controller.app.controller import Controller
from fleet.controller.app.place import place_one
from fleet.controller.core.errors import FleetError

log = logging.getLogger("fleet.controller")


def tick(ctl: Controller) -> None:
    """One round of repairs; only on the controller holding the duties lease (one at a time on a database)."""
    if not ctl.lease.held():
        return
    now = time.time()
    try:
        fence_offline(ctl, now)
        for row in ctl.store.drains():
            drain.drive(ctl, row, now)
        gang.tick(ctl, now)
        fill_missing(ctl, now)
    except FleetError as e:
        log.warning("reconcile: %s", e.message)


def fence_offline(ctl: Controller, now: float) -> None:
    """An offline node's replicas become `unknown`; after the grace they are fenced and placed elsewhere.

    A multi-node replica with any part on that node moves as a whole: its other parts stop with it.
    """
    store, offline_since = ctl.store, ctl.repair.offline_since
    for name in list(offline_since):
        if ctl.is_alive(name):
            del offline_since[name]
    for node in store.mirror.nodes.values():
        if node.alive:
            continue
        # offline since it was last heard from (the row records it when it is marked offline)
        since = offline_since.setdefault(node.name, node.last_heartbeat or now)
        replicas = [r for r in store.replicas_on(node.name) if r.desired == "run"]  # a gang with a part there too
        if not replicas:
            continue  # a node without replicas has nothing to fence (most offline nodes at scale)
        stale = [r.id for r in replicas if r.state != "unknown" and r.node == node.name]
        if stale:
            store.set_replica_state(stale, "unknown")
        if replicas and now - since >= ctl.settings.reschedule_after:
            # Fencing: the node's next desired set (generation bumped) no longer holds these ids, so
            # when it comes back its agent stops them; their replacements are placed by fill_missing.
            store.stop_replicas([r.id for r in replicas], now, f"node {node.name} offline for "
                                        f"{now - since:.0f}s: rescheduled elsewhere", state="unknown")
            log.warning("node %s offline %.0fs: %d replica(s) rescheduled", node.name, now - since, len(replicas))


def fill_missing(ctl: Controller, now: float) -> None:
    """Deployments with fewer live replicas than wanted get more, retried every `retry_every` seconds."""
    store, last_try, mirror = ctl.store, ctl.repair.last_try, ctl.store.mirror
    for dep in list(mirror.deployments.values()):  # every second, 5,000 deployments: no sorting, no copies
        if dep.state != "active":
            continue
        ids = mirror.by_deployment.get(dep.name, ())
        serving = sum(1 for i in ids if mirror.replicas[i].desired == "run" and not mirror.replicas[i].replaces)
        if serving >= dep.replicas_wanted or now - last_try.get(dep.name, 0.0) < ctl.settings.retry_every:
            continue
        live = [r for r in store.replicas(deployment=dep.name) if r.desired == "run"]
        missing = dep.replicas_wanted - serving
        last_try[dep.name] = now
        used = {r.ordinal for r in live}
        ordinals = [i for i in range(dep.replicas_wanted + len(used)) if i not in used][:missing]
        for ordinal in ordinals:
            if place_one(ctl, dep, ordinal, now) is not None:
                break
