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
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleet.controller.app.credentials import Credentials
from fleet.controller.core.catalog import Catalog, load_catalog
from fleet.controller.core.liveness import Liveness
from fleet.controller.core.snapshot import Snapshot
from fleet.controller.store.files import CatalogFiles, default_catalog_dir
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import DeploymentRow, NodeRow, ReplicaRow, ReservationRow
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
    # After a restart, nodes that were online get this long to reconnect before they count as offline: longer
    # than the agents' reconnect backoff (10 s at most), so a controller restart takes no node offline.
    restart_grace: float = 25.0


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


@dataclass
class RepairState:
    """What the reconciler remembers between ticks (the durable part is in the store)."""

    last_try: dict[str, float] = field(default_factory=dict)  # deployment -> when it was last filled up
    offline_since: dict[str, float] = field(default_factory=dict)  # node -> first tick it was seen offline


@dataclass(frozen=True)
class DesiredRows:
    """Everything a node is told to run, as rows (fleet.controller.rpc.convert builds the message)."""

    generation: int
    replicas: list[ReplicaRow]
    deployments: dict[str, DeploymentRow]
    reservations: list[ReservationRow]


class Controller:
    def __init__(self, store: Store, settings: Settings, creds: Credentials, data_dir: Path | None = None) -> None:
        self.store = store
        self.settings = settings
        self.creds = creds
        self.data_dir = data_dir  # user-added catalog models live in DATA_DIR/catalog
        self.liveness = Liveness()
        self.sessions: dict[str, Outbox] = {}
        self.log_waiters: dict[int, asyncio.Queue[LogPiece]] = {}
        self.next_log_request = 1
        self.repair = RepairState()
        self._snapshots = SnapshotCache(store)
        self.started = time.time()
        self._catalog_files = CatalogFiles([d for d in ((data_dir / "catalog") if data_dir else None,
                                                        default_catalog_dir()) if d is not None])
        self._catalog: tuple[tuple[float, ...], Catalog] | None = None
        # Whoever bumps a node's generation (this controller or another on the same database), the store's
        # change feed reports it and the node's session, if it is here, is sent the new set.
        store.on_generation = self.push
        # A restarted controller gives every node it believed alive the restart grace to reconnect.
        seen = self.started + max(0.0, settings.restart_grace - settings.offline_after)
        for row in store.nodes():
            self.creds.node_hashes[row.name] = row.credential_hash
            if row.alive:
                self.liveness.last_seen[row.name] = seen
                self.liveness.alive.add(row.name)

    # ---- jobs (run by the scheduler)
    def flush(self) -> None:
        """Heartbeats and GPU usage reach the database in one transaction per batch."""
        beats, usage = self.liveness.take_dirty()
        self.store.flush_heartbeats(beats, usage)

    def check_liveness(self) -> None:
        now = time.time()
        for name in self.liveness.expire(now, self.settings.offline_after):
            log.warning("node %s is offline: no heartbeat for %.0f s", name, self.settings.offline_after)
            self.flush()
            self.store.set_alive(name, False, now)

    # ---- reads every use case needs
    def node_state(self, row: NodeRow) -> str:
        return row.admin_state if row.name in self.liveness.alive else "offline"

    def state_of(self, name: str) -> str:
        row = self.store.mirror.nodes.get(name)
        return "offline" if row is None or name not in self.liveness.alive else row.admin_state

    def states(self) -> dict[str, str]:
        alive = self.liveness.alive
        return {name: row.admin_state if name in alive else "offline"
                for name, row in self.store.mirror.nodes.items()}

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
        replicas = self.store.replicas(node=node)
        deployments = {r.deployment: d for r in replicas if (d := self.store.get_deployment(r.deployment))}
        reservations = self.store.reservations(r.id for r in replicas)
        return DesiredRows(row.generation if row else 0, replicas, deployments, reservations)

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
