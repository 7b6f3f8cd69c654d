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

from fleet.controller.app import gang, observed
from fleet.controller.app.controller import Controller
from fleet.controller.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from fleet.controller.core.observed import Memory
from fleet.controller.store import tokens
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.repository import InventoryChange, Removed
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
    address: str = ""  # multi-node parts: where it listens (rpc-server, vLLM rendezvous)
    epoch: int = 0  # multi-node parts: the gang epoch it runs


def admit(ctl: Controller, secret: str) -> str | None:
    """Whether `secret` may register at all: None for a usable join token, the node name for a replacement
    token (`fleet node replace`); Unauthenticated, saying why, for anything else."""
    now = time.time()
    if secret and ctl.store.token_valid("join", secret, now):
        return None
    replaces = tokens.replacement_node(ctl.store, secret, now) if secret else None
    if replaces is not None:
        return replaces
    raise Unauthenticated(join_refusal(ctl.store, secret, now)
                          or "join token rejected: use the token in the controller's DATA_DIR/join-token")


def join(ctl: Controller, name: str, inventory_json: str, gpus: list[GpuRow], *, replaces: str | None = None,
         secret: str = "", credential_held: str = "") -> str:
    """Register a node (its token already admitted); returns its new credential, shown to the agent once.

    A join token creates a new name only. A known name is taken by the agent holding that node's
    one-time replacement token (`secret`, which `admit` found to replace `replaces`), or by one that
    proves it is that node (`credential_held`), e.g. an agent re-registering because the controller's
    address changed.
    """
    now = time.time()
    if replaces is not None and replaces != name:
        raise InvalidArgument(f"this token replaces node {replaces!r} only; run the agent with --name {replaces}")
    holds = bool(credential_held) and ctl.creds.is_node(name, credential_held)
    credential = secrets.token_urlsafe(32)
    claim = (lambda s: tokens.claim_replacement(s, name, secret, now)) if replaces else None
    event = "node.replaced" if replaces else "node.rejoined" if holds else "node.registered"
    change = ctl.store.register_node(name, credential, inventory_json, gpus, now, takeover=holds or bool(replaces),
                                     claim=claim, event=event)
    ctl.creds.node_hashes[name] = token_hash(credential)
    _forget_usage(ctl, change)
    old = ctl.sessions.get(name)
    if old is not None:
        old.put_nowait(None)  # the node's previous agent: its credential is void now
    if change.failed:
        log.warning("node %s: %d GPU(s) gone; replica(s) %s failed and will be placed elsewhere", name,
                    len(change.missing), ", ".join(change.failed))
    log.info("node %s %s with %d GPUs", name, "replaced" if replaces else "re-joined" if holds else "joined",
             len(change.kept))
    return credential


def _forget_usage(ctl: Controller, change: InventoryChange) -> None:
    """No live usage is kept for GPUs that are gone (which GPUs a node owns is the store's, see heartbeat)."""
    for uuid in change.missing:
        ctl.liveness.gpu_usage.pop(uuid, None)


def connect(ctl: Controller, node: str, inventory_json: str, gpus: list[GpuRow], probe: str = "") -> None:
    """A session started: the node's fresh inventory replaces the old one, and it is alive."""
    now = time.time()
    if not ctl.is_alive(node):
        ctl.store.set_alive(node, True, now)  # back online, with its event
    if _unchanged(ctl, node, inventory_json, gpus):
        # a reconnect with the same inventory (a controller restart: 10,000 of these at once) writes nothing
        ctl.liveness.beat(node, now, [(g.uuid, g.memory_used, g.utilization, g.temperature) for g in gpus])
        log.debug("node %s reconnected", node)
        return
    change = ctl.store.save_inventory(node, inventory_json, gpus, now)
    _forget_usage(ctl, change)
    ctl.liveness.beat(node, now, [(g.uuid, g.memory_used, g.utilization, g.temperature)
                                  for g in gpus if g.uuid not in change.foreign])
    for uuid, owner in sorted(change.foreign.items()):
        log.warning("node %s reports GPU %s, which belongs to node %s: ignored", node, uuid, owner)
    if change.failed:
        log.warning("node %s came back without %d GPU(s); replica(s) %s failed and will be placed elsewhere",
                    node, len(change.missing), ", ".join(change.failed))
    log.info("node %s connected (%d GPUs, probe %s)", node, len(change.kept), probe or "?")


_GPU_FIELDS = ("uuid", "node", "index", "name", "memory_total", "compute_capability", "driver", "declared")


def _unchanged(ctl: Controller, node: str, inventory_json: str, gpus: list[GpuRow]) -> bool:
    row = ctl.store.get_node(node)
    if row is None or row.inventory != inventory_json:
        return False
    stored = ctl.store.gpus(node)
    return len(stored) == len(gpus) and all(
        all(getattr(a, f) == getattr(b, f) for f in _GPU_FIELDS) for a, b in zip(stored, gpus, strict=True))


def heartbeat(ctl: Controller, node: str, usage: Iterable[GpuUsage]) -> None:
    """Memory first; the database sees heartbeats in batches (Controller.flush). Only the node's own GPUs count."""
    now = time.time()
    own = {g.uuid for g in ctl.store.gpus(node)}  # from the store's mirror: whichever controller stored them
    ctl.liveness.beat(node, now, [u for u in usage if u[0] in own])
    if not ctl.is_alive(node):  # marked offline while it was in fact still talking (a pause, a failover)
        ctl.store.set_alive(node, True, now)


def report(ctl: Controller, node: str, statuses: list[ReplicaStatus], applied_generation: int) -> None:
    """An agent's replica states; replicas it was told to stop and no longer runs are forgotten.

    Parts of multi-node replicas report under their own ids; a gang is forgotten once every part stopped.
    """
    parts_here = {p.id: p for p in ctl.store.parts(node=node)}
    mains = [s for s in statuses if s.id not in parts_here]
    theirs = [s for s in statuses if s.id in parts_here]
    touched = {parts_here[s.id].replica for s in theirs} | {s.id for s in mains}
    before = gang.load(ctl, touched)
    observed.record(ctl, node, [observed.Measured(s.id, s.memory) for s in mains if s.memory is not None])
    done = set(ctl.store.update_replicas(node, [(s.id, s.state, s.endpoint, s.message, s.restarts) for s in mains],
                                         {s.id: (s.address, s.epoch) for s in mains if s.id in before}))
    ctl.store.update_parts(node, [(s.id, s.state, s.address, s.message, s.restarts, s.epoch) for s in theirs])
    row = ctl.store.get_node(node)
    stopped_parts: set[str] = {parts_here[s.id].replica for s in theirs if s.state == "stopped"}
    if row is not None and applied_generation >= row.generation:
        # The agent has applied the newest set: whatever it was told to stop and no longer runs is gone.
        running = {s.id for s in statuses if s.state != "stopped"}
        done |= {r.id for r in ctl.store.replicas(node=node) if r.desired == "stop" and r.id not in running}
        wanted = {r.id for r in ctl.store.replicas_on(node) if r.desired == "run"}
        gone = [p for p in parts_here.values() if p.replica not in wanted and p.id not in running]
        ctl.store.stop_parts(node, [p.id for p in gone])
        stopped_parts |= {p.replica for p in gone}
    gang.after_report(ctl, before)
    # A multi-node replica goes once every part has stopped (gang.forget_stopped); until then its main's stop
    # frees only what it held on this node.
    gangs = {r.id for r in ctl.store.replicas(node=node) if r.id in done and r.nodes > 1}
    for rid in sorted(gangs):
        ctl.store.set_replica_state([rid], "stopped")
        ctl.store.release(rid, node)
    ctl.store.forget_replicas(sorted(done - gangs))
    gang.forget_stopped(ctl, gangs | set(before) | stopped_parts)


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
    replicas = ctl.store.replicas_on(name)  # a part of a multi-node replica counts too
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
    ctl.liveness.forget(name, removed.gpus)
    queue = ctl.sessions.get(name)
    if queue is not None:
        queue.put_nowait(None)  # ends the stream; the agent's reconnect is refused (UNAUTHENTICATED)
    log.warning("removed node %s (%d replica(s) forgotten, %d GPU(s))", name, len(removed.replicas),
                len(removed.gpus))
    return removed, queue is not None

