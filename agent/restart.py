"""When to restart a crashed engine, and when to stop trying (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    give_up: bool
    delay: float
    reason: str


@dataclass(frozen=True)
class RestartPolicy:
    base: float = 1.0          # first restart after this many seconds, doubling per crash in the window
    cap: float = 60.0
    window: float = 600.0      # crashes older than this are forgiven
    max_crashes: int = 5       # this many crashes inside the window is a crash loop

    def after_crash(self, crash_times: list[float], now: float, was_healthy: bool) -> Decision:
        recent = [t for t in crash_times if now - t <= self.window]
        crash_times[:] = recent  # forget the old ones
        if len(recent) >= self.max_crashes:
            return Decision(True, 0.0, f"crash loop: {len(recent)} crashes within {self.window:.0f}s; not restarting")
        delay = min(self.cap, self.base * 2 ** (len(recent) - 1))
        if was_healthy and len(recent) == 1:
            delay = self.base  # a one-off crash of a serving engine: come back fast
        return Decision(False, delay, "")
