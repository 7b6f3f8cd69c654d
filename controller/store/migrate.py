"""`fleet controller migrate`: copy a controller's database to another one (SQLite -> PostgreSQL).

Table by table in foreign-key order, in batches, into a target that must be empty; both are brought to
the current schema first. Stop the controller before: a controller that still holds its duties lease
(or wrote a heartbeat in the last seconds) is refused, since what it writes after the copy would be lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Integer, func, insert, select, text
from sqlmodel import SQLModel

from fleet.controller.core.errors import FailedPrecondition
from fleet.controller.store.db import open_engine

# What is not copied: the schema version (the target has its own), who holds the duties, and the change feed
# (every controller loads the whole state at start).
SKIP = {"schema_version", "lease", "change"}
BATCH = 1000
QUIET = 30.0  # seconds without a heartbeat before the source counts as stopped


def migrate(source: str, target: str, say: Callable[[str], None] = print) -> dict[str, int]:
    """Copy every row; returns rows copied per table. FailedPrecondition when the source is in use or the
    target already holds a fleet."""
    src, dst = open_engine(source), open_engine(target)
    try:
        with src.connect() as conn:
            now = time.time()
            lease = conn.execute(text("SELECT holder, expires_at FROM lease")).first()
            if lease is not None and float(lease[1]) > now:
                raise FailedPrecondition(f"controller {lease[0]} is running on {source}: stop it first "
                                         "(`systemctl stop fleet-controller`), then migrate")
            latest = conn.execute(text("SELECT max(last_heartbeat) FROM node")).scalar()
            if latest is not None and now - float(latest) < QUIET:
                raise FailedPrecondition(f"nodes reported to a controller on {source} in the last {QUIET:.0f} s: "
                                         "stop it first, then migrate")
        with dst.connect() as conn:
            for table in ("node", "deployment", "token"):
                if conn.execute(select(func.count()).select_from(SQLModel.metadata.tables[table])).scalar():
                    raise FailedPrecondition(f"{target} already holds a fleet (table {table} is not empty); "
                                             "migrate into an empty database")
        copied: dict[str, int] = {}
        with src.connect() as read, dst.begin() as write:
            for table in SQLModel.metadata.sorted_tables:
                if table.name in SKIP:
                    continue
                rows = read.execute(select(table)).mappings()
                n = 0
                while chunk := rows.fetchmany(BATCH):
                    write.execute(insert(table), [dict(r) for r in chunk])
                    n += len(chunk)
                copied[table.name] = n
                say(f"  {table.name}: {n} row(s)")
            if write.dialect.name == "postgresql":
                # rows kept their ids: move each id sequence past them, or the next insert would collide
                for table in SQLModel.metadata.sorted_tables:
                    if table.name in SKIP or "id" not in table.c or not isinstance(table.c.id.type, Integer) \
                            or not table.c.id.primary_key:
                        continue
                    write.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                       f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"))
        return copied
    finally:
        src.dispose()
        dst.dispose()
