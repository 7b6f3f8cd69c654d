"""README command 1, `bash scripts/demo.sh`: free ports of its own, and a clear stop when a daemon is not up.

Run with FLEET_DEMO_NO_SETUP=1 (the `fleet` of this test run, no pip) but otherwise as a newcomer runs it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    full = {**os.environ, "FLEET_DEMO_NO_SETUP": "1", "FLEET_DEMO_DIR": str(tmp_path / "demo"),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **env}
    for var in ("FLEET_CONTROLLER", "FLEET_DATA_DIR", "FLEET_TOKEN", "FLEET_HTTP"):
        full.pop(var, None)
    return subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], capture_output=True, text=True, env=full,
                          timeout=600, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def occupied(*ports: int) -> Iterator[None]:
    """Hold these ports (if nobody else already does: taken is what the test wants either way)."""
    held = []
    try:
        for port in ports:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
                held.append(s)
            except OSError as e:
                s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
        yield
    finally:
        for s in held:
            s.close()


def test_demo_runs_with_the_default_ports_taken(tmp_path: Path) -> None:
    with occupied(50051, 8080):
        r = demo(tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    for text in ("3 node(s)", "placed qwen2-72b-awq", "drain plan", "nothing fits"):
        assert text in out, text
    assert "127.0.0.1:50051" not in out and "127.0.0.1:8080" not in out
    # the estimate shown is the one of the GPUs the first replica got: it is what that replica reserved
    words = " ".join(out.split())
    shown = re.search(r"placed llama3\.1-8b-bf16: .*? needs ([\d.]+) GiB per GPU", words)
    first = re.search(r"│ 0 │ (\S+) │ 0:GPU-\S+ ([\d.]+) GiB │", out[out.index("placed llama3.1-8b-bf16"):])
    assert shown and first and shown.group(1) == first.group(2), (shown, first)


def test_a_daemon_that_does_not_start_stops_the_demo_with_its_own_words(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = demo(tmp_path, FLEET_DEMO_PORT=str(port))
    assert r.returncode == 1
    assert "error: controller exited" in r.stderr, r.stderr
    assert f"cannot listen on 127.0.0.1:{port} for gRPC" in r.stderr, "the controller's own line is shown"
    assert "== agents" not in r.stdout, "nothing after the failed step runs"
    assert "Traceback" not in r.stdout + r.stderr and len((r.stdout + r.stderr).splitlines()) < 40


@pytest.mark.parametrize("script", ["demo.sh", "test.sh"])
def test_readme_scripts_do_not_name_fixed_ports(script: str) -> None:
    text = (REPO / "scripts" / script).read_text()
    assert "50051" not in text and "8080" not in text
