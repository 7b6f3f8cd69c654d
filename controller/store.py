"""The controller's durable truth: nodes, gpus, tokens and events in SQLModel (SQLite WAL by default).

Only moves data in and out; decisions live in the pure cores. Sessions are short and explicit so that
one transaction is one decision.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select


class NodeRow(SQLModel, table=True):
    __tablename__ = "node"
    name: str = Field(primary_key=True)
    credential_hash: str
    # What the operator asked for: ready, cordoned, draining, drained. Liveness is separate (alive),
    # so a cordon survives the node going offline and coming back.
    admin_state: str = "ready"
    alive: bool = True
    inventory: str = "{}"  # JSON of fleet.v1.Inventory as last reported
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    cordon_reason: str = ""
    cordoned_by: str = ""
    cordoned_at: float = 0.0


class GpuRow(SQLModel, table=True):
    __tablename__ = "gpu"
    uuid: str = Field(primary_key=True)
    node: str = Field(foreign_key="node.name", index=True)
    index: int = 0
    name: str = ""
    memory_total: int = 0
    memory_used: int = 0
    compute_capability: str = ""
    driver: str = ""
    utilization: int = 0
    temperature: int = -1
    declared: bool = False


class TokenRow(SQLModel, table=True):
    __tablename__ = "token"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # join | admin
    token_hash: str = Field(index=True)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked: bool = False


class EventRow(SQLModel, table=True):
    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    kind: str
    node: str = ""
    message: str = ""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer; NORMAL is durable across process crashes in WAL mode.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def open_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    return engine


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'fleet.db'}"


class Store:
    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    # ---- tokens
    def add_token(self, kind: str, token: str, expires_at: float | None = None) -> None:
        with self.session() as s:
            s.add(TokenRow(kind=kind, token_hash=token_hash(token), created_at=time.time(), expires_at=expires_at))
            s.commit()

    def has_tokens(self, kind: str) -> bool:
        with self.session() as s:
            return s.exec(select(TokenRow).where(TokenRow.kind == kind)).first() is not None

    def token_valid(self, kind: str, token: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        wanted = token_hash(token)
        with self.session() as s:
            rows = s.exec(select(TokenRow).where(TokenRow.kind == kind, TokenRow.revoked == False)).all()  # noqa: E712
        return any(same_hash(r.token_hash, wanted) and (r.expires_at is None or r.expires_at > now) for r in rows)

    # ---- nodes
    def get_node(self, name: str) -> NodeRow | None:
        with self.session() as s:
            return s.get(NodeRow, name)

    def nodes(self) -> list[NodeRow]:
        with self.session() as s:
            return list(s.exec(select(NodeRow).order_by(NodeRow.name)).all())

    def gpus(self, node: str | None = None) -> list[GpuRow]:
        with self.session() as s:
            q = select(GpuRow).order_by(GpuRow.node, GpuRow.index)
            if node is not None:
                q = q.where(GpuRow.node == node)
            return list(s.exec(q).all())

    def credential_hashes(self) -> dict[str, str]:
        with self.session() as s:
            return {n.name: n.credential_hash for n in s.exec(select(NodeRow)).all()}

    def register_node(self, name: str, credential: str, inventory_json: str, now: float) -> None:
        """Create the node, or give an existing (re-joining) node a new credential."""
        with self.session() as s:
            row = s.get(NodeRow, name)
            if row is None:
                row = NodeRow(name=name, credential_hash=token_hash(credential), registered_at=now)
            else:
                row.credential_hash = token_hash(credential)
            row.inventory = inventory_json
            row.last_heartbeat = now
            s.add(row)
            s.add(EventRow(at=now, kind="node.registered", node=name))
            s.commit()

    def save_inventory(self, name: str, inventory_json: str, gpus: Iterable[GpuRow], now: float) -> None:
        """A node's fresh inventory (session start): replace its GPU rows, mark it alive."""
        gpus = list(gpus)
        with self.session() as s:
            row = s.get(NodeRow, name)
            if row is None:
                return
            row.inventory = inventory_json
            row.alive = True
            row.last_heartbeat = now
            s.add(row)
            seen = {g.uuid for g in gpus}
            for old in s.exec(select(GpuRow).where(GpuRow.node == name)).all():
                if old.uuid not in seen:
                    s.delete(old)
            for g in gpus:
                s.merge(g)
            s.commit()

    def flush_heartbeats(self, beats: dict[str, float], usage: dict[str, tuple[int, int, int]]) -> None:
        """One transaction for a batch: node last_heartbeat and GPU usage (uuid -> used, util, temp)."""
        if not beats and not usage:
            return
        with self.session() as s:
            for name, at in beats.items():
                row = s.get(NodeRow, name)
                if row is not None and at > row.last_heartbeat:
                    row.last_heartbeat = at
                    s.add(row)
            for uuid, (used, util, temp) in usage.items():
                g = s.get(GpuRow, uuid)
                if g is not None:
                    g.memory_used, g.utilization, g.temperature = used, util, temp
                    s.add(g)
            s.commit()

    def set_alive(self, name: str, alive: bool, now: float) -> None:
        with self.session() as s:
            row = s.get(NodeRow, name)
            if row is None or row.alive == alive:
                return
            row.alive = alive
            s.add(row)
            s.add(EventRow(at=now, kind="node.online" if alive else "node.offline", node=name))
            s.commit()
