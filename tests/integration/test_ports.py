"""A port someone else holds: `fleet controller run` says so in one line, writes nothing, and never shares it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import FLEET, Fleet, free_port


@pytest.fixture
def taken() -> Iterator[int]:
    """A port held by a plain listener, as any other program on 8080 or 50051 would."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def run_controller(data_dir: Path, listen: str, http: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET, "controller", "run", "--data-dir", str(data_dir), "--listen", listen,
                           "--http-listen", http], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("which", ["grpc", "http"])
def test_a_taken_port_is_one_clear_line(tmp_path: Path, taken: int, which: str) -> None:
    grpc_addr = f"127.0.0.1:{taken if which == 'grpc' else free_port()}"
    http_addr = f"127.0.0.1:{taken if which == 'http' else free_port()}"
    r = run_controller(tmp_path / "ctl", grpc_addr, http_addr)
    assert r.returncode != 0
    lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
    flag = "--listen" if which == "grpc" else "--http-listen"
    assert len(lines) == 1, lines
    assert f"cannot listen on 127.0.0.1:{taken}" in lines[0] and "already in use" in lines[0] and flag in lines[0]
    assert not (tmp_path / "ctl").exists(), "nothing is written before the ports are known to be free"


def test_a_second_controller_on_the_same_port_is_refused(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    fleet = Fleet(tmp_path / "first")
    fleet.start_controller()
    try:
        r = run_controller(tmp_path / "second", fleet.address, f"127.0.0.1:{free_port()}")
        assert r.returncode != 0 and f"cannot listen on {fleet.address} for gRPC" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert fleet.cli("nodes").returncode == 0, "the first controller keeps its port"
    finally:
        fleet.close()
