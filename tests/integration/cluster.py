"""Several real controllers on one PostgreSQL database, real agents that know them all, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import FLEET, free_port, wait_for


class Cluster:
    def __init__(self, root: Path, db_url: str, controllers: int = 2, heartbeat: float = 0.5,
                 offline_after: float = 3.0, lease_ttl: float = 4.0, extra: tuple[str, ...] = ()) -> None:
        self.root, self.db_url = root, db_url
        self.heartbeat, self.offline_after, self.lease_ttl, self.extra = heartbeat, offline_after, lease_ttl, extra
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(controllers)]
        self.https = [f"127.0.0.1:{free_port()}" for _ in range(controllers)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * controllers
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "FLEET_CONTROLLER": ",".join(self.addresses), "FLEET_DATA_DIR": str(self.data(0))}
        self.env.pop("FLEET_TOKEN", None)

    def data(self, i: int) -> Path:
        return self.root / f"controller-{i}"

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        f = open(log, "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([*FLEET, *args], stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)

    def start(self, i: int) -> None:
        self.procs[i] = self._spawn(
            ["controller", "run", "--data-dir", str(self.data(i)), "--listen", self.addresses[i], "--db", self.db_url,
             "--http-listen", self.https[i], "--heartbeat-interval", str(self.heartbeat),
             "--offline-after", str(self.offline_after), "--lease-ttl", str(self.lease_ttl), *self.extra],
            self.root / f"controller-{i}.log")
        try:
            wait_for(lambda: (self.data(i) / "admin-token").exists() and self.cli_on(i, "nodes", "-o", "json")
                     .returncode == 0, 60, f"controller {i} to answer")
        except BaseException:
            self.close()
            raise

    def start_all(self) -> None:
        for i in range(len(self.addresses)):
            self.start(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(sig)
        proc.wait(30)
        self.procs[i] = None

    @property
    def join_token(self) -> str:
        return (self.data(0) / "join-token").read_text().strip()

    def start_agent(self, name: str, gpus: str | None = None, extra: tuple[str, ...] = (),
                    first: int = 0) -> subprocess.Popen[bytes]:
        """An agent given every controller's address, controller `first` first (where its session starts)."""
        order = self.addresses[first:] + self.addresses[:first]
        args = ["agent", "run", "--controller", ",".join(order), "--data-dir", str(self.root / f"agent-{name}"),
                "--name", name, "--join-token", self.join_token, *extra]
        if gpus:
            args += ["--simulate-gpus", gpus, "--declare-engines", "vllm,llama.cpp"]
        proc = self._spawn(args, self.root / f"agent-{name}.log")
        self.agents[name] = proc
        return proc

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The CLI with every controller address (it moves on when one does not answer)."""
        return subprocess.run([*FLEET, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def cli_on(self, i: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The CLI talking to controller i only."""
        env = {**self.env, "FLEET_CONTROLLER": self.addresses[i]}
        return subprocess.run([*FLEET, *args], capture_output=True, text=True, env=env, timeout=timeout)

    def json_on(self, i: int, *args: str) -> Any:
        r = self.cli_on(i, *args, "-o", "json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def states(self, i: int) -> dict[str, str]:
        return {n["name"]: n["state"] for n in self.json_on(i, "nodes")}

    def stats(self, i: int) -> dict[str, Any]:
        """Which controller this is and whether it holds the duties (the Stats RPC)."""
        import grpc

        from fleet.common.trust import SERVER_NAME
        from fleet.proto import fleet_pb2 as pb
        from fleet.proto import fleet_pb2_grpc as pbg

        ca = (self.data(0) / "tls" / "ca.crt").read_bytes()
        admin = (self.data(0) / "admin-token").read_text().strip()
        with grpc.secure_channel(self.addresses[i], grpc.ssl_channel_credentials(ca),
                                 options=[("grpc.ssl_target_name_override", SERVER_NAME)]) as ch:
            r = pbg.FleetStub(ch).Stats(pb.StatsRequest(), metadata=(("authorization", f"Bearer {admin}"),),
                                        timeout=10)
        return {"controller": r.controller, "duties": r.duties, "nodes_alive": r.nodes_alive,
                "sessions": r.sessions_open}

    def duties(self) -> int | None:
        """Which running controller holds the duties lease, if any."""
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    if self.stats(i)["duties"]:
                        return i
                except Exception:  # noqa: BLE001 - a controller that is going away
                    continue
        return None

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in [*self.agents.values(), *(p for p in self.procs if p is not None)]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


def elapsed(since: float) -> float:
    return time.monotonic() - since
