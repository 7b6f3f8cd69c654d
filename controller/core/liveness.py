"""Heartbeats live in memory; the database sees them in batches. Decides which nodes went offline."""

from __future__ import annotations

from dataclasses import dataclass, field


def overdue(last_seen: dict[str, float], alive: set[str], now: float, offline_after: float) -> list[str]:
    """Nodes believed alive whose last heartbeat is older than `offline_after` seconds (pure)."""
    return sorted(n for n in alive if now - last_seen.get(n, 0.0) > offline_after)


@dataclass
class Liveness:
    """Memory-first heartbeat state. Decisions read this; `take_dirty` hands the database what changed."""

    last_seen: dict[str, float] = field(default_factory=dict)
    alive: set[str] = field(default_factory=set)
    gpu_usage: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # uuid -> used, util, temp
    _dirty_beats: dict[str, float] = field(default_factory=dict)
    _dirty_usage: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _moved: set[str] = field(default_factory=set)  # nodes whose liveness or GPU memory use changed (placement)
    beats_total: int = 0

    def beat(self, node: str, now: float, usage: list[tuple[str, int, int, int]] = ()) -> bool:  # type: ignore[assignment]
        """Record a heartbeat; returns True when the node was offline and just came back."""
        came_back = node not in self.alive
        if came_back:
            self._moved.add(node)
        self.last_seen[node] = now
        self.alive.add(node)
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
        return came_back

    def expire(self, now: float, offline_after: float) -> list[str]:
        gone = overdue(self.last_seen, self.alive, now, offline_after)
        self.alive.difference_update(gone)
        self._moved.update(gone)
        return gone

    def forget(self, node: str) -> None:
        """A removed node: no liveness, no usage kept for it (its GPUs' usage is dropped by the caller)."""
        self.alive.discard(node)
        self.last_seen.pop(node, None)
        self._moved.add(node)

    def take_dirty(self) -> tuple[dict[str, float], dict[str, tuple[int, int, int]]]:
        beats, usage = self._dirty_beats, self._dirty_usage
        self._dirty_beats, self._dirty_usage = {}, {}
        return beats, usage

    def take_moved(self) -> set[str]:
        """Nodes that came or went, or whose GPU memory use changed, since the last call (for placement)."""
        moved, self._moved = self._moved, set()
        return moved
