"""Repeated log lines, counted instead of written: a flood of one error must not fill the disk.

Found with the file limit reached: asyncio logged a traceback for every failed accept, 142 MB in 40 s.
"""

from __future__ import annotations

import logging
import time


class RepeatFilter(logging.Filter):
    """Lets the first of a kind of record through per `window` seconds and counts the rest.

    A kind is the logger and the message template, so "accept failed: Too many open files" is one kind
    however many connections hit it. The next record of that kind let through says how many were held back.
    """

    def __init__(self, window: float = 10.0) -> None:
        super().__init__()
        self.window = window
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        first, held = self.seen.get(key, (-self.window, 0))
        if now - first < self.window:
            self.seen[key] = (first, held + 1)
            return False
        if len(self.seen) > 1000:
            self.seen.clear()  # bounded memory; at worst one more line per kind
        self.seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {now - first:.0f}s not logged]"
        return True


def quiet_repeats(*names: str, window: float = 10.0) -> RepeatFilter:
    """Attach one RepeatFilter to these loggers (it sees what they log themselves, not their children)."""
    f = RepeatFilter(window)
    for name in names:
        logging.getLogger(name).addFilter(f)
    return f
