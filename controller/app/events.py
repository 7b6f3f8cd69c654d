"""Events: what the controller recorded, filtered for `fleet events` (and the console's recent events)."""

from __future__ import annotations

from fleet.controller.app.controller import Controller
from fleet.controller.core.events import WARNING_KINDS
from fleet.controller.store.schema import EventRow

MAX_EVENTS = 1000


def recent(ctl: Controller, node: str = "", deployment: str = "", since: float = 0.0, after_id: int = 0,
           limit: int = 200) -> list[EventRow]:
    """The newest `limit` matching events (at most MAX_EVENTS), oldest first."""
    return ctl.store.events(node, deployment, since, after_id, max(1, min(limit or 200, MAX_EVENTS)))


def warnings(ctl: Controller, since: float, limit: int = 10) -> list[EventRow]:
    """Recent warnings, newest last: what `fleet status` shows under the numbers."""
    rows = [e for e in ctl.store.events(since=since, limit=MAX_EVENTS) if e.kind in WARNING_KINDS]
    return rows[-limit:]
