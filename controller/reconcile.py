"""The controller's scheduled repairs: drains (make-before-break), offline nodes, missing replicas.

Runs every second from APScheduler. Every decision it acts on is recorded in the store first, so a
controller killed at any point picks up where it was: a drain row, replicas with `replaces` links,
replicas asked to stop.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from fleet.controller.drain import Movable, plan_drain
from fleet.controller.errors import FleetError
from fleet.controller.placing import build_snapshot, deployment_request, replica_rows
from fleet.controller.store import DeploymentRow, DrainRow, ReplicaRow

log = logging.getLogger("fleet.controller")


@dataclass
class RepairSettings:
    min_healthy: float = 5.0        # a replacement serves this long before the old replica stops
    reschedule_after: float = 60.0  # an offline node's replicas are placed elsewhere after this grace
    retry_every: float = 10.0       # a deployment that could not be completed is retried this often


class Reconciler:
    def __init__(self, ctl, settings: RepairSettings | None = None) -> None:  # type: ignore[no-untyped-def]
        self.ctl = ctl
        self.settings = settings or RepairSettings()
        self.last_try: dict[str, float] = {}
        self.offline_since: dict[str, float] = {}

    def tick(self) -> None:
        now = time.time()
        try:
            self.fence_offline(now)
            for drain in self.ctl.store.drains():
                self.drive(drain, now)
            self.fill_missing(now)
        except FleetError as e:
            log.warning("reconcile: %s", e.message)

    # ---- offline nodes: unknown, then fenced and replaced
    def fence_offline(self, now: float) -> None:
        store, alive = self.ctl.store, self.ctl.liveness.alive
        for node in store.nodes():
            if node.name in alive:
                self.offline_since.pop(node.name, None)
                continue
            since = self.offline_since.setdefault(node.name, self.ctl.liveness.last_seen.get(node.name, now))
            replicas = [r for r in store.replicas(node=node.name) if r.desired == "run"]
            store.set_replica_state([r.id for r in replicas if r.state != "unknown"], "unknown")
            if replicas and now - since >= self.settings.reschedule_after:
                # Fencing: the node's next desired set (generation bumped) no longer holds these ids, so
                # when it comes back its agent stops them; their replacements are placed by fill_missing.
                nodes = store.stop_replicas([r.id for r in replicas], now, f"node {node.name} offline for "
                                            f"{now - since:.0f}s: rescheduled elsewhere", state="unknown")
                log.warning("node %s offline %.0fs: %d replica(s) rescheduled", node.name, now - since,
                            len(replicas))
                self.ctl.push(nodes)

    # ---- deployments with fewer live replicas than wanted
    def fill_missing(self, now: float) -> None:
        store = self.ctl.store
        for dep in store.deployments():
            if dep.state != "active":
                continue
            live = [r for r in store.replicas(deployment=dep.name) if r.desired == "run"]
            missing = dep.replicas_wanted - len([r for r in live if not r.replaces])
            if missing <= 0 or now - self.last_try.get(dep.name, 0.0) < self.settings.retry_every:
                continue
            self.last_try[dep.name] = now
            used = {r.ordinal for r in live}
            ordinals = [i for i in range(dep.replicas_wanted + len(used)) if i not in used][:missing]
            for ordinal in ordinals:
                if not self.place_one(dep, ordinal, now, replaces=""):
                    break

    def place_one(self, dep: DeploymentRow, ordinal: int, now: float, replaces: str) -> str | None:
        """Place one more replica of `dep`; returns why not, or None on success."""
        snapshot = build_snapshot(self.ctl.store, self.ctl.states(), self.ctl.liveness.gpu_usage)
        request = deployment_request(dep, self.ctl.catalog(), snapshot)
        plan = plan_drain(snapshot, (), [Movable(replaces or f"{dep.name}-{ordinal}", dep.name, request)])
        if not plan.moves:
            why = plan.blocked[0].reason if plan.blocked else "no node fits"
            log.info("cannot place a replica of %s: %s", dep.name, why)
            return why
        p = plan.moves[0].placement
        node = snapshot.by_name[p.node]
        option = next(o for o in request.options if (o.quant, o.engine, o.tp) == (p.option.quant, p.option.engine,
                                                                                  p.option.tp))
        kv = int(_estimate_field(dep, "kv_cache"))
        row, res = replica_rows(dep.name, p, option, node, kv, now, ordinal=ordinal, replaces=replaces)
        self.ctl.store.add_replicas([row], res, now, f"{row.id} on {p.node}"
                                    + (f" replacing {replaces}" if replaces else ""))
        self.ctl.push({p.node})
        log.info("placed replica %s of %s on %s%s", row.id, dep.name, p.node,
                 f" (replaces {replaces})" if replaces else "")
        return None

    # ---- drains
    def drive(self, drain: DrainRow, now: float) -> None:
        store = self.ctl.store
        on_node = store.replicas(node=drain.node)
        running = [r for r in on_node if r.desired == "run"]
        everything = store.replicas()
        replacement = {r.replaces: r for r in everything if r.replaces and r.desired == "run"}
        deps = {d.name: d for d in store.deployments()}
        in_flight: dict[str, int] = {}
        waiting: list[ReplicaRow] = []
        notes: list[str] = []
        for old in running:
            rep = replacement.get(old.id)
            if rep is None:
                waiting.append(old)
            elif rep.state == "healthy" and now - rep.healthy_since >= self.settings.min_healthy:
                nodes = store.stop_replicas([old.id], now, f"drained: replaced by {rep.id} on {rep.node}")
                store.forget_link(rep.id)
                self.ctl.push(nodes)
                notes.append(f"{old.deployment}: moved to {rep.node}")
            elif rep.state == "failed":
                nodes = store.stop_replicas([rep.id], now, "replacement failed; trying again")
                self.ctl.push(nodes)
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
            why = self.place_one(dep, old.ordinal, now, replaces=old.id)
            if why is None:
                in_flight[old.deployment] = in_flight.get(old.deployment, 0) + 1
                notes.append(f"{old.deployment}: starting a replacement")
            elif late:
                # Break-before-make, as the operator allowed (--force) or the deadline demands.
                nodes = store.stop_replicas([old.id], now, f"drain {'forced' if drain.force else 'deadline'}: "
                                            f"stopped without a replacement ({why})")
                self.ctl.push(nodes)
                notes.append(f"{old.deployment}: stopped without a replacement ({why})")
            else:
                notes.append(f"{old.deployment}: blocked: {why} (use --force, or wait for the deadline)")
        left = [r for r in store.replicas(node=drain.node)]
        if not left:
            store.set_admin_state(drain.node, "drained", now)
            drain.state, drain.message = "done", "drained"
            log.info("node %s drained", drain.node)
        else:
            drain.message = "; ".join(notes) or f"{len(left)} replica(s) stopping"
        store.save_drain(drain)


def _estimate_field(dep: DeploymentRow, key: str) -> int:
    return int(json.loads(dep.estimate or "{}").get(key, 0))

