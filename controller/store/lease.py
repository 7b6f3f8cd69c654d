"""A lease row: which controller does the fleet-wide duties (offline detection, rescheduling, drains).

Several controllers may share one database; exactly one holds the lease at a time. The holder renews it
every few seconds; when it dies, the lease expires after `ttl` and the next controller to try takes it.
Times are the database's clock, so controllers on hosts with skewed clocks agree on expiry.
"""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from fleet.controller.store.repository import Store

DUTIES = "duties"


def db_now(conn: Connection) -> float:
    if conn.dialect.name == "postgresql":
        return float(conn.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar_one())
    return float(conn.execute(text("SELECT (julianday('now') - 2440587.5) * 86400.0")).scalar_one())


class Lease:
    def __init__(self, store: Store, holder: str, ttl: float = 10.0, name: str = DUTIES) -> None:
        self.store, self.holder, self.ttl, self.name = store, holder, ttl, name
        self.valid_until = 0.0  # monotonic: past this, act as if the lease were lost (it may have expired)
        self.since = 0.0  # monotonic: when this controller took it, for the new holder's grace

    def held(self) -> bool:
        """Whether this controller may do the duties now (renewed recently enough that it cannot have expired)."""
        return time.monotonic() < self.valid_until

    def renew(self) -> bool:
        """Take the lease if it is free or expired, or extend it if it is ours; returns whether we hold it."""
        started = time.monotonic()
        try:
            with self.store.engine.begin() as conn:
                now = db_now(conn)
                taken = conn.execute(text(
                    "UPDATE lease SET holder = :me, expires_at = :until WHERE name = :name "
                    "AND (holder = :me OR expires_at < :now)"),
                    {"me": self.holder, "until": now + self.ttl, "name": self.name, "now": now}).rowcount
                if not taken:
                    exists = conn.execute(text("SELECT 1 FROM lease WHERE name = :name"), {"name": self.name}).first()
                    if exists is None:
                        conn.execute(text("INSERT INTO lease (name, holder, expires_at) VALUES (:name, :me, :until)"),
                                     {"name": self.name, "me": self.holder, "until": now + self.ttl})
                        taken = 1
        except IntegrityError:
            taken = 0  # another controller inserted it first
        except Exception:  # the database is unreachable: stop acting on the lease at once
            self.valid_until = 0.0
            raise
        if not taken:
            self.valid_until = 0.0
            return False
        if not self.held():
            self.since = started
        # Acting stops a fifth of the TTL before the lease could have expired in the database.
        self.valid_until = started + self.ttl * 0.8
        return True

    def holder_now(self) -> str:
        """The controller holding the lease, as the database says (empty when nobody does)."""
        with self.store.engine.begin() as conn:
            now = db_now(conn)
            row = conn.execute(text("SELECT holder, expires_at FROM lease WHERE name = :name"),
                               {"name": self.name}).first()
        return str(row[0]) if row is not None and float(row[1]) >= now else ""

    def release(self) -> None:
        """Give the lease up (a clean stop), so another controller takes the duties without waiting for expiry."""
        if not self.held():
            return
        self.valid_until = 0.0
        with self.store.engine.begin() as conn:
            conn.execute(text("UPDATE lease SET expires_at = 0 WHERE name = :name AND holder = :me"),
                         {"name": self.name, "me": self.holder})
