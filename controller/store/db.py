"""Opening the database: the SQLAlchemy engine, SQLite's pragmas, and the schema brought up to date at start.

Migrations are SQLModel's metadata plus versioned upgrade steps, not Alembic: the schema has one source
(store/schema.py), `create_all` adds new tables, and each release that changes an existing table appends
one idempotent step below. A `schema_version` row says which steps a database has had. Every controller
runs this at start; on PostgreSQL under an advisory lock, so controllers starting together take turns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel, create_engine

from fleet.controller.store import schema  # noqa: F401 - registers every table with SQLModel.metadata


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: a transaction takes the write lock before
    # it reads, so two placements can never both read the same free GPU and both commit.
    dbapi_conn.isolation_level = None
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
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    migrate(engine)
    return engine


def _add_launch(conn: Connection) -> None:
    if "launch" not in {c["name"] for c in inspect(conn).get_columns("deployment")}:
        conn.execute(text("ALTER TABLE deployment ADD COLUMN launch VARCHAR NOT NULL DEFAULT '{}'"))


def _add_apikey_role(conn: Connection) -> None:
    if "role" not in {c["name"] for c in inspect(conn).get_columns("apikey")}:
        conn.execute(text("ALTER TABLE apikey ADD COLUMN role VARCHAR NOT NULL DEFAULT 'client'"))


def _add_multinode(conn: Connection) -> None:
    """Replicas spanning several nodes: the replica row is the main part (the `part` table, new, holds the
    others and is made by create_all)."""
    have = {c["name"] for c in inspect(conn).get_columns("replica")}
    for column, kind in (("nodes", "INTEGER NOT NULL DEFAULT 1"), ("epoch", "BIGINT NOT NULL DEFAULT 0"),
                         ("reported_epoch", "BIGINT NOT NULL DEFAULT 0"), ("address", "VARCHAR NOT NULL DEFAULT ''"),
                         ("gpu_layers", "INTEGER NOT NULL DEFAULT 0")):
        if column not in have:
            conn.execute(text(f"ALTER TABLE replica ADD COLUMN {column} {kind}"))


def _add_event_deployment(conn: Connection) -> None:
    if "deployment" not in {c["name"] for c in inspect(conn).get_columns("event")}:
        conn.execute(text("ALTER TABLE event ADD COLUMN deployment VARCHAR NOT NULL DEFAULT ''"))


# (version, what, step): release 0.1's schema is version 0; each step brings a database to its version.
STEPS: tuple[tuple[int, str, Callable[[Connection], None]], ...] = (
    (1, "deployment.launch: how a replica is launched (rope scaling)", _add_launch),
    (2, "apikey.role: client keys call the gateway, viewer keys read the page and /metrics", _add_apikey_role),
    (3, "replica.nodes, epoch, reported_epoch, address, gpu_layers: replicas over several nodes", _add_multinode),
    (4, "event.deployment: the deployment an event is about (fleet events --deployment)", _add_event_deployment),
)
VERSION = STEPS[-1][0]
LOCK = 7_203_411  # the advisory lock controllers take turns on while migrating (PostgreSQL)


def migrate(engine: Engine) -> int:
    """Create missing tables, run the steps this database has not had; returns the version it is at."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})
        SQLModel.metadata.create_all(conn)
        row = conn.execute(text("SELECT version FROM schema_version WHERE id = 1")).first()
        current = int(row[0]) if row else 0
        if current > VERSION:
            raise RuntimeError(f"the database is at schema version {current}, newer than this fleet ({VERSION}): "
                               "upgrade fleet on this controller")
        for version, _what, step in STEPS:
            if version > current:
                step(conn)
        if row is None:
            conn.execute(text("INSERT INTO schema_version (id, version) VALUES (1, :v)"), {"v": VERSION})
        elif current < VERSION:
            conn.execute(text("UPDATE schema_version SET version = :v WHERE id = 1"), {"v": VERSION})
    return VERSION


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'fleet.db'}"


def open_reader(url: str, writer: Engine) -> Engine:
    """Reads need no write lock (WAL): a separate engine without BEGIN IMMEDIATE, so the gateway's and the
    CLI's reads never queue behind a placement or a heartbeat flush. Other databases read through the writer."""
    if not url.startswith("sqlite"):
        return writer
    reader = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
    event.listen(reader, "connect", _sqlite_pragmas)
    return reader
