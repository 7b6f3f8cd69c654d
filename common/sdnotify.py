"""sd_notify without a dependency: tell systemd we are ready, alive, or stopping.

The units are `Type=notify` with `WatchdogSec=`: the daemon calls `ready()` once it serves, then feeds the
watchdog every `watchdog_interval()` seconds (half of WatchdogSec, as sd_watchdog_enabled(3) advises), e.g. with
`asyncio.create_task(watchdog_loop())` on the event loop that does the work, so a wedged loop gets restarted.
Outside systemd (no $NOTIFY_SOCKET / $WATCHDOG_USEC) every call is a no-op, so the same code runs anywhere.

Protocol (sd_notify(3)): one datagram of newline-separated KEY=VALUE to the AF_UNIX socket named by
$NOTIFY_SOCKET; a leading '@' names a socket in the abstract namespace.
"""

from __future__ import annotations

import asyncio
import os
import socket


def _address(path: str) -> str | bytes:
    # Abstract-namespace sockets have no file; the kernel wants their name after a NUL byte.
    return b"\0" + path[1:].encode() if path.startswith("@") else path


def notify(*fields: str) -> bool:
    """Send KEY=VALUE fields to systemd. False when not under systemd or the send failed (never raises:
    a lost notification must not take the daemon down; systemd's timeouts are the backstop)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or not fields:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(fields).encode(), _address(path))
    except OSError:
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Startup is finished: systemd marks the unit active and starts whatever waits for it."""
    return notify("READY=1", *((f"STATUS={status}",) if status else ()))


def stopping() -> bool:
    """Shutdown has begun (the unit shows 'deactivating' while we drain)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status for `systemctl status`."""
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    """Still alive: resets the WatchdogSec timer."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog() calls (half of WatchdogSec), or None when no watchdog is armed for this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process the watchdog is for; a child that inherited the variable is not it.
    if pid and pid != str(os.getpid()):
        return None
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 2 / 1_000_000


async def watchdog_loop() -> None:
    """Feed the watchdog forever from the calling event loop; returns at once when no watchdog is armed."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        watchdog()
        await asyncio.sleep(interval)
