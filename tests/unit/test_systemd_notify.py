"""sd_notify against a real AF_UNIX datagram socket, bound the way systemd binds $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.common import sdnotify as systemd_notify


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # A short directory: AF_UNIX paths are limited to 108 bytes and pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        path = str(Path(d) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield sock
        finally:
            sock.close()


def test_ready_sends_ready_and_status(receiver: socket.socket) -> None:
    assert systemd_notify.ready("serving on 127.0.0.1:50051")
    assert receiver.recv(4096).decode().split("\n") == ["READY=1", "STATUS=serving on 127.0.0.1:50051"]


@pytest.mark.parametrize("call, expected", [
    (systemd_notify.ready, "READY=1"),
    (systemd_notify.stopping, "STOPPING=1"),
    (systemd_notify.watchdog, "WATCHDOG=1"),
])
def test_each_message(receiver: socket.socket, call, expected: str) -> None:
    assert call()
    assert receiver.recv(4096).decode() == expected


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fleet-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd_notify.status("probing GPUs")
        assert sock.recv(4096) == b"STATUS=probing GPUs"


def test_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd_notify.ready() is False
    assert systemd_notify.watchdog() is False
    assert systemd_notify.watchdog_interval() is None
    asyncio.run(asyncio.wait_for(systemd_notify.watchdog_loop(), 1))   # returns at once


def test_missing_socket_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/tmp/fleet-no-such-socket-" + uuid.uuid4().hex)
    assert systemd_notify.ready() is False


def test_watchdog_interval_is_half(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd_notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd_notify.watchdog_interval() == 15.0


@pytest.mark.parametrize("usec, pid", [("0", None), ("junk", None), ("30000000", "1")])
def test_watchdog_not_armed(monkeypatch: pytest.MonkeyPatch, usec: str, pid: str | None) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)   # armed for another process (we inherited the variable)
    assert systemd_notify.watchdog_interval() is None


def test_watchdog_loop_feeds_the_socket(receiver: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")     # 0.1 s -> a ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    pings: list[bytes] = []
    receiver.setblocking(False)

    async def until_three_pings() -> None:
        task = asyncio.create_task(systemd_notify.watchdog_loop())
        loop = asyncio.get_running_loop()
        try:
            while len(pings) < 3:  # waits on the pings themselves, however slow the machine is
                pings.append(await asyncio.wait_for(loop.sock_recv(receiver, 4096), timeout=30))
        finally:
            task.cancel()

    asyncio.run(until_three_pings())
    assert pings == [b"WATCHDOG=1"] * 3
