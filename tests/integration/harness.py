"""Real processes on 127.0.0.1: a controller, agents with declared GPUs, and the `fleet` CLI."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FLEET = [sys.executable, "-m", "fleet.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Fleet:
    """One controller (restartable) and any number of agents, all real subprocesses."""

    def __init__(self, root: Path, heartbeat: float = 0.5, offline_after: float = 3.0,
                 controller_args: tuple[str, ...] = (), controller_files: int | None = None) -> None:
        self.controller_args = controller_args
        self.controller_files = controller_files  # RLIMIT_NOFILE (soft and hard) for the controller process
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.http = f"127.0.0.1:{free_port()}"
        self.data_dir = root / "controller"
        self.heartbeat, self.offline_after = heartbeat, offline_after
        self.controller: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "FLEET_CONTROLLER": self.address, "FLEET_DATA_DIR": str(self.data_dir),
                    "FLEET_HTTP": f"http://{self.http}"}
        self.env.pop("FLEET_TOKEN", None)

    def _spawn(self, args: list[str], log: Path, files: int | None = None,
               wrap: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        f = open(log, "ab")  # noqa: SIM115 - closed with the process

        def limit() -> None:
            if files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

        return subprocess.Popen([*wrap, *FLEET, *args], stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True, preexec_fn=limit if files is not None else None)

    def start_controller(self) -> None:
        self.controller = self._spawn(
            ["controller", "run", "--data-dir", str(self.data_dir), "--listen", self.address,
             "--heartbeat-interval", str(self.heartbeat), "--offline-after", str(self.offline_after),
             "--http-listen", self.http, *self.controller_args],
            self.root / "controller.log", self.controller_files)
        try:
            wait_for(lambda: (self.data_dir / "admin-token").exists()
                     and self.cli("nodes", "-o", "json").returncode == 0, 20, "the controller to answer")
        except BaseException:
            self.close()  # never leave a half-started controller behind a failed test
            raise

    def stop_controller(self, sig: int = signal.SIGTERM) -> None:
        assert self.controller is not None
        self.controller.send_signal(sig)
        self.controller.wait(15)
        self.controller = None

    @property
    def join_token(self) -> str:
        return (self.data_dir / "join-token").read_text().strip()

    def start_agent(self, name: str, gpus: str | None = None, join_token: str | None = None,
                    extra: tuple[str, ...] = (), wrap: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """`wrap` runs the agent under a prefix, e.g. ("ip", "netns", "exec", NS) for a host of its own."""
        args = ["agent", "run", "--controller", self.address, "--data-dir", str(self.root / f"agent-{name}"),
                "--name", name, "--join-token", join_token if join_token is not None else self.join_token, *extra]
        if gpus:
            args += ["--simulate-gpus", gpus]
        proc = self._spawn(args, self.root / f"agent-{name}.log", wrap=wrap)
        self.agents[name] = proc
        return proc

    def kill_agent(self, name: str) -> None:
        proc = self.agents.pop(name)
        proc.kill()
        proc.wait(10)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FLEET, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def nodes(self) -> list[dict[str, Any]]:
        r = self.cli("nodes", "-o", "json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def states(self) -> dict[str, str]:
        return {n["name"]: n["state"] for n in self.nodes()}

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in [*self.agents.values(), *([self.controller] if self.controller else [])]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
