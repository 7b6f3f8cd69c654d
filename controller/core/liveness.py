"""Heartbeats live in memory; the database sees them in batches. Decides which nodes went offline.

Each controller keeps what its own sessions report (`Liveness`); whether a node is online is a fact in the
store that the session holder sets when the node speaks and the controller holding the duties lease
clears when nobody has heard from it for `offline_after` (`overdue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def overdue(last_heard: Mapping[str, float], alive: Iterable[str], now: float, offline_after: float) -> list[str]:
    """Nodes believed alive whose last heartbeat is older than `offline_after` seconds (pure)."""
    return sorted(n for n in alive if now - last_heard.get(n, 0.0) > offline_after)


@dataclass
class Liveness:
    """What this controller's sessions report, memory first. `take_dirty` hands the database what changed."""

    last_seen: dict[str, float] = field(default_factory=dict)  # node -> last heartbeat here
    gpu_usage: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # uuid -> used, util, temp
    _dirty_beats: dict[str, float] = field(default_factory=dict)
    _dirty_usage: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _moved: set[str] = field(default_factory=set)  # nodes whose GPU memory use changed (placement re-reads them)
    beats_total: int = 0

    def beat(self, node: str, now: float, usage: Iterable[tuple[str, int, int, int]] = ()) -> None:
        """Record a heartbeat (or an inventory) from a node whose session is here."""
        self.last_seen[node] = now
        self._dirty_beats[node] = now
        for uuid, used, util, temp in usage:
            value = (used, util, temp)
            old = self.gpu_usage.get(uuid)
            if old != value:
                self.gpu_usage[uuid] = value
                self._dirty_usage[uuid] = value
                if old is None or old[0] != used:
                    self._moved.add(node)
        self.beats_total += 1

    def forget(self, node: str, gpus: Iterable[str] = ()) -> None:
        """A removed node: nothing is kept for it or its GPUs."""
        self.last_seen.pop(node, None)
        self._dirty_beats.pop(node, None)
        for uuid in gpus:
            self.gpu_usage.pop(uuid, None)
            self._dirty_usage.pop(uuid, None)
        self._moved.add(node)

    def take_dirty(self) -> tuple[dict[str, float], dict[str, tuple[int, int, int]]]:
        beats, usage = self._dirty_beats, self._dirty_usage
        self._dirty_beats, self._dirty_usage = {}, {}
        return beats, usage

    def take_moved(self) -> set[str]:
        """Nodes whose GPU memory use changed since the last call (the placement snapshot refreshes them)."""
        moved, self._moved = self._moved, set()
        return moved
