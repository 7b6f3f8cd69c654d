"""The state of one controller process, and the few primitives every use case shares.

`Controller` owns the store, the in-memory liveness (heartbeats reach the database in batches), the
credentials, the open agent sessions and the catalog. The use cases (place, drain, reconcile, capacity,
nodes, deployments, access) are functions over it in their own modules; nothing here imports them, and
nothing here knows the wire: a session is a queue of `Outgoing` items that the rpc layer turns into
messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleet.controller.app.credentials import Credentials
from fleet.controller.core.catalog import Catalog, load_catalog
from fleet.controller.core.liveness import Liveness, overdue
from fleet.controller.core.snapshot import Snapshot
from fleet.controller.store.files import CatalogFiles, default_catalog_dir
from fleet.controller.store.lease import Lease
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import DeploymentRow, NodeRow, PartRow, ReplicaRow, ReservationRow
from fleet.controller.store.snapshot import SnapshotCache

log = logging.getLogger("fleet.controller")


@dataclass
class Settings:
    heartbeat_interval: float = 5.0
    offline_after: float = 15.0
    flush_interval: float = 1.0
    reschedule_after: float = 60.0  # an offline node's replicas move elsewhere after this grace
    drain_min_healthy: float = 5.0  # a drain's replacement serves this long before the old replica stops
    retry_every: float = 10.0  # a deployment short of replicas is tried again this often
    # After a restart or a failover, nodes that were online get this long to reconnect before they count as
    # offline: longer than the agents' reconnect backoff (10 s at most), so neither takes a node offline.
    restart_grace: float = 25.0
    lease_ttl: float = 10.0  # the duties lease: another controller takes over this long after its holder died
    sync_interval: float = 0.25  # how often the change feed is read (other controllers' writes)


# ---- what a session carries to its agent; the rpc layer turns each into a wire message


@dataclass(frozen=True)
class SendDesired:
    """The node's desired replica set changed: send the complete set (read when it is sent, so always current)."""


@dataclass(frozen=True)
class AskLogs:
    request_id: int
    replica_id: str = ""
    lines: int = 100
    follow: bool = False
    cancel: bool = False


@dataclass(frozen=True)
class LogPiece:
    data: bytes = b""
    eof: bool = False
    error: str = ""


Outgoing = SendDesired | AskLogs | None  # None ends the session
Outbox = asyncio.Queue[Outgoing]


class AliveNodes:
    """`name in ctl.alive`: whether the store says the node is online (whichever controller its session is on)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._count: tuple[tuple[int, int, int], int] = ((-1, -1, -1), 0)

    def __contains__(self, name: object) -> bool:
        row = self.store.mirror.nodes.get(name) if isinstance(name, str) else None
        return row is not None and row.alive

    def __len__(self) -> int:
        # Stats asks often; at 10,000 nodes recount only after the mirror changed a node (every change marks it)
        m = self.store.mirror
        key = (id(m.nodes), m.seq, len(m.nodes))
        if self._count[0] != key:
            self._count = (key, sum(1 for row in m.nodes.values() if row.alive))
        return self._count[1]


@dataclass
class RepairState:
    """What the reconciler remembers between ticks (the durable part is in the store)."""

    last_try: dict[str, float] = field(default_factory=dict)  # deployment -> when it was last filled up
    offline_since: dict[str, float] = field(default_factory=dict)  # node -> first tick it was seen offline


@dataclass(frozen=True)
class DesiredRows:
    """Everything a node is told to run, as rows (fleet.controller.rpc.convert builds the message).

    `replicas` are those with a part on the node: its main here, or (multi-node) another part, with every
    part of those in `parts` and the node of each reserved GPU in `gpu_nodes`.
    """

    generation: int
    replicas: list[ReplicaRow]
    deployments: dict[str, DeploymentRow]
    reservations: list[ReservationRow]
    node: str = ""
    parts: list[PartRow] = field(default_factory=list)
    gpu_nodes: dict[str, str] = field(default_factory=dict)


class Controller:
    def __init__(self, store: Store, settings: Settings, creds: Credentials, data_dir: Path | None = None,
                 controller_id: str = "") -> None:
        self.id = controller_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.store = store
        self.settings = settings
        self.creds = creds
        self.data_dir = data_dir  # user-added catalog models live in DATA_DIR/catalog
        self.liveness = Liveness()
        self.sessions: dict[str, Outbox] = {}
        # request id -> (the node asked, where its answer goes): a node answers only what it was asked
        self.log_waiters: dict[int, tuple[str, asyncio.Queue[LogPiece]]] = {}
        self.next_log_request = 1
        self.repair = RepairState()
        self._snapshots = SnapshotCache(store)
        self.started = time.time()
        self._catalog_files = CatalogFiles([d for d in ((data_dir / "catalog") if data_dir else None,
                                                        default_catalog_dir()) if d is not None])
        self._catalog: tuple[tuple[float, ...], Catalog] | None = None
        # Bumped when an API key is revoked: the HTTP edge forgets the keys it had already checked.
        self.keys_epoch = 0
        # Whoever bumps a node's generation (this controller or another on the same database), the store's
        # change feed reports it and the node's session, if it is here, is sent the new set.
        store.on_generation = self.push
        store.on_nodes = self._nodes_changed
        # The fleet-wide duties (offline detection, rescheduling, drains) run where this lease is held.
        self.lease = Lease(store, self.id, settings.lease_ttl)
        self.alive = AliveNodes(store)
        for row in store.nodes():
            self.creds.node_hashes[row.name] = row.credential_hash

    # ---- jobs (run by the scheduler)
    def flush(self) -> None:
        """Heartbeats and GPU usage reach the database in one transaction per batch."""
        beats, usage = self.liveness.take_dirty()
        self.store.flush_heartbeats(beats, usage)

    def _nodes_changed(self, names: set[str]) -> None:
        """A node joined, was replaced or removed (here or on another controller): its credential follows, and
        a session opened with a credential that is no longer the node's is ended."""
        for name in names:
            row = self.store.mirror.nodes.get(name)
            old = self.creds.node_hashes.get(name)
            if row is None:
                self.creds.node_hashes.pop(name, None)
            else:
                self.creds.node_hashes[name] = row.credential_hash
            if old is not None and (row is None or row.credential_hash != old):
                queue = self.sessions.get(name)
                if queue is not None:
                    queue.put_nowait(None)

    def refresh_credentials(self) -> None:
        """Admin tokens live in the store: one made on any controller works on every controller."""
        self.creds.admin_hashes = self.store.valid_hashes("admin")

    def renew_lease(self) -> None:
        was = self.lease.held()
        try:
            now = self.lease.renew()
        except Exception as e:  # noqa: BLE001 - the database is unreachable: no duties until it is back
            log.error("cannot renew the duties lease (%s); this controller stops its fleet-wide duties", e)
            now = False
        if now and not was:
            log.info("controller %s took the duties lease: offline detection, rescheduling and drains run here",
                     self.id)
        elif was and not now:
            log.warning("controller %s lost the duties lease", self.id)

    def check_liveness(self) -> None:
        """With the duties lease: nodes nobody has heard from for offline_after are offline (every controller
        writes its sessions' heartbeats to the store; this one reads them all)."""
        if not self.lease.held():
            return
        self.flush()
        now = time.time()
        # A new holder (a start or a failover) gives the nodes last heard from before it took over the restart
        # grace to reconnect somewhere; a node heard from since gets the usual offline_after.
        took_over = now - (time.monotonic() - self.lease.since)
        grace = took_over + self.settings.restart_grace - self.settings.offline_after
        heard = self.store.heartbeats()
        for name, at in self.liveness.last_seen.items():
            if name in heard:
                heard[name] = max(heard[name], at)
        last = {name: at if at >= took_over else max(at, grace) for name, at in heard.items()}
        for name in overdue(last, heard, now, self.settings.offline_after):
            log.warning("node %s is offline: no heartbeat for %.0f s", name, now - heard[name])
            self.store.set_alive(name, False, now, last_heartbeat=heard[name])

    # ---- reads every use case needs
    def is_alive(self, name: str) -> bool:
        row = self.store.mirror.nodes.get(name)
        return row is not None and row.alive

    def node_state(self, row: NodeRow) -> str:
        return row.admin_state if row.alive else "offline"

    def state_of(self, name: str) -> str:
        row = self.store.mirror.nodes.get(name)
        return "offline" if row is None or not row.alive else row.admin_state

    def states(self) -> dict[str, str]:
        return {name: row.admin_state if row.alive else "offline" for name, row in self.store.mirror.nodes.items()}

    def snapshot(self) -> Snapshot:
        """The fleet as placement sees it now (kept incremental: only changed nodes are recomputed)."""
        return self._snapshots.get(self.state_of, self.liveness.gpu_usage, self.liveness.take_moved())

    def catalog(self) -> Catalog:
        """The catalog, read again only when an operator added or changed a model file."""
        stamp = self._catalog_files.stamp()
        if self._catalog is None or self._catalog[0] != stamp:
            self._catalog = (stamp, load_catalog(self._catalog_files))
        return self._catalog[1]

    def desired_rows(self, node: str) -> DesiredRows:
        row = self.store.get_node(node)
        replicas = self.store.replicas_on(node)
        deployments = {r.deployment: d for r in replicas if (d := self.store.get_deployment(r.deployment))}
        reservations = self.store.reservations(r.id for r in replicas)
        gangs = [r.id for r in replicas if r.nodes > 1]
        parts = [x for rid in gangs for x in self.store.parts(replica=rid)]
        gpu_nodes = {g.uuid: g.node for n in {r.node for r in replicas} | {x.node for x in parts}
                     for g in self.store.gpus(n)} if gangs else {}
        return DesiredRows(row.generation if row else 0, replicas, deployments, reservations, node, parts, gpu_nodes)

    # ---- sessions
    def open_session(self, node: str) -> Outbox:
        """One session per node: the newest wins and the older one is ended."""
        queue: Outbox = asyncio.Queue()
        old = self.sessions.get(node)
        if old is not None:
            old.put_nowait(None)
        self.sessions[node] = queue
        return queue

    def close_session(self, node: str, queue: Outbox) -> None:
        if self.sessions.get(node) is queue:
            del self.sessions[node]

    def push(self, nodes: set[str] | list[str]) -> None:
        """Tell each connected node its desired set changed; a node not connected gets it on reconnect.

        Called by the store for every generation bump (Store.on_generation); use cases need not call it."""
        for node in nodes:
            queue = self.sessions.get(node)
            if queue is not None:
                queue.put_nowait(SendDesired())
