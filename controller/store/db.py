"""Opening the database: the SQLAlchemy engine, SQLite's pragmas, and the schema created at start."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
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
        engine = create_engine(url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    upgrade(engine)
    return engine


# Columns added to existing tables after a release: (table, column, SQL type with its default).
ADDED_COLUMNS = (("deployment", "launch", "VARCHAR NOT NULL DEFAULT '{}'"),
                 ("event", "deployment", "VARCHAR NOT NULL DEFAULT ''"))


def upgrade(engine: Engine) -> None:
    """Add the columns a database written by an older release lacks (idempotent; new tables come from
    create_all)."""
    have = inspect(engine)
    for table, column, sql_type in ADDED_COLUMNS:
        if column not in {c["name"] for c in have.get_columns(table)}:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))


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
