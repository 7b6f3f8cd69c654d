"""Nodes: join, connect, heartbeat, replica reports, cordon, removal.

The rpc layer validates what an agent sends and hands it over as rows and plain values; these functions
keep memory (liveness, credentials, sessions) and the store in step.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from fleet.controller.app import observed
from fleet.controller.app.controller import Controller
from fleet.controller.core.errors import AlreadyExists, FailedPrecondition, NotFound, Unauthenticated
from fleet.controller.core.observed import Memory
from fleet.controller.store.repository import Removed
from fleet.controller.store.schema import GpuRow, NodeRow
from fleet.controller.store.tokens import join_refusal

log = logging.getLogger("fleet.controller")

GpuUsage = tuple[str, int, int, int]  # uuid, memory used, utilization, temperature


@dataclass(frozen=True)
class ReplicaStatus:
    id: str
    state: str
    endpoint: str = ""
    message: str = ""
    restarts: int = 0
    memory: Memory | None = None  # what the engine really uses, as its agent measured it


def admit(ctl: Controller, secret: str) -> None:
    """Unauthenticated, saying why, unless `secret` is a usable join token."""
    if not secret or not ctl.store.token_valid("join", secret):
        raise Unauthenticated(join_refusal(ctl.store, secret, time.time())
                              or "join token rejected: use the token in the controller's DATA_DIR/join-token")


def join(ctl: Controller, name: str, inventory_json: str, gpus: list[GpuRow]) -> str:
    """Register a node (its join token already admitted); returns its new credential, shown to the agent once."""
    existing = ctl.store.get_node(name)
    if existing is not None and name in ctl.liveness.alive and name in ctl.sessions:
        raise AlreadyExists(f"node {name!r} is online with another credential; choose another --name")
    credential = secrets.token_urlsafe(32)
    now = time.time()
    ctl.store.register_node(name, credential, inventory_json, now)
    ctl.store.save_inventory(name, inventory_json, gpus, now)
    ctl.creds.node_hashes[name] = ctl.store.get_node(name).credential_hash  # type: ignore[union-attr]
    log.info("node %s joined with %d GPUs", name, len(gpus))
    return credential


def connect(ctl: Controller, node: str, inventory_json: str, gpus: list[GpuRow], probe: str = "") -> None:
    """A session started: the node's fresh inventory replaces the old one, and it is alive."""
    now = time.time()
    came_back = ctl.liveness.beat(node, now, [(g.uuid, g.memory_used, g.utilization, g.temperature) for g in gpus])
    ctl.store.save_inventory(node, inventory_json, gpus, now)
    if came_back:
        ctl.store.set_alive(node, True, now)
    log.info("node %s connected (%d GPUs, probe %s)", node, len(gpus), probe or "?")


def heartbeat(ctl: Controller, node: str, usage: Iterable[GpuUsage]) -> None:
    """Memory first; the database sees heartbeats in batches (Controller.flush)."""
    now = time.time()
    if ctl.liveness.beat(node, now, list(usage)):
        ctl.store.set_alive(node, True, now)


def report(ctl: Controller, node: str, statuses: list[ReplicaStatus], applied_generation: int) -> None:
    """An agent's replica states; replicas it was told to stop and no longer runs are forgotten."""
    observed.record(ctl, node, [observed.Measured(s.id, s.memory) for s in statuses if s.memory is not None])
    done = set(ctl.store.update_replicas(node, [(s.id, s.state, s.endpoint, s.message, s.restarts)
                                                for s in statuses]))
    row = ctl.store.get_node(node)
    if row is not None and applied_generation >= row.generation:
        # The agent has applied the newest set: whatever it was told to stop and no longer runs is gone.
        running = {s.id for s in statuses if s.state != "stopped"}
        done |= {r.id for r in ctl.store.replicas(node=node) if r.desired == "stop" and r.id not in running}
    ctl.store.forget_replicas(sorted(done))


def cordon(ctl: Controller, name: str, cordoned: bool, reason: str, who: str) -> NodeRow:
    """Cordon or uncordon; uncordoning a node that is draining cancels the drain."""
    if not cordoned and (drain := ctl.store.get_drain(name)) and drain.state == "active":
        drain.state, drain.message = "cancelled", f"uncordoned by {who}"
        ctl.store.save_drain(drain)
    return ctl.store.set_cordon(name, cordoned, reason, who, time.time())


def remove(ctl: Controller, name: str, force: bool) -> tuple[Removed, bool]:
    """`fleet node remove`: forget the node, its GPUs, replicas and credential; returns (what, session closed)."""
    if ctl.store.get_node(name) is None:
        names = [n.name for n in ctl.store.nodes()]
        listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "") if names else "none"
        raise NotFound(f"no node named {name!r}; nodes: {listed}")
    replicas = ctl.store.replicas(node=name)
    if replicas and not force:
        deps = ", ".join(sorted({r.deployment for r in replicas}))
        raise FailedPrecondition(f"node {name} still has {len(replicas)} replica(s) of {deps}: drain it first, "
                                 "or pass --force to forget them (their engines are told to stop)")
    if replicas:
        ctl.store.stop_node_replicas(name)  # a connected agent stops the engines before its session is closed
    # Refuse new sessions first, then forget durably; put the hash back if the store fails.
    known = ctl.creds.node_hashes.pop(name, None)
    try:
        removed = ctl.store.remove_node(name, time.time())
    except Exception:
        if known is not None:
            ctl.creds.node_hashes[name] = known
        raise
    ctl.liveness.forget(name)
    for uuid in removed.gpus:
        ctl.liveness.gpu_usage.pop(uuid, None)
    queue = ctl.sessions.get(name)
    if queue is not None:
        queue.put_nowait(None)  # ends the stream; the agent's reconnect is refused (UNAUTHENTICATED)
    log.warning("removed node %s (%d replica(s) forgotten, %d GPU(s))", name, len(removed.replicas),
                len(removed.gpus))
    return removed, queue is not None
