"""Engine logs on request: the last N lines, then (follow) whatever the engine appends."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

CHUNK = 64 * 1024


def last_lines(path: Path, lines: int) -> tuple[bytes, int]:
    """The last `lines` lines of the file and the offset where they end."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        size = min(end, max(CHUNK, lines * 400))
        f.seek(end - size)
        data = f.read(size)
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]) if lines else b"", end


async def stream(path: Path, lines: int, follow: bool, send: Callable[[bytes, bool, str], None],
                 interval: float = 0.3) -> None:
    """Calls send(data, eof, error). Cancel the task to stop following."""
    if not path.exists():
        send(b"", True, f"no log yet at {path}: the replica has not started on this node")
        return
    data, offset = last_lines(path, lines)
    send(data, not follow, "")
    while follow:
        await asyncio.sleep(interval)
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size < offset:
            offset = 0  # rotated (copy-truncate): start from the top of the new file
        if size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(min(size - offset, CHUNK * 4))
            offset += len(chunk)
            send(chunk, False, "")
