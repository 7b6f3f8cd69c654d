"""Runs the node's replicas: start what is wanted, stop what is not, restart crashes, adopt survivors.

Engines run in their own session (process group) and write their own log files, so an agent restart
or crash leaves healthy engines serving; the next agent adopts them from their pid files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from fleet.agent.footprint import Meter, fingerprint
from fleet.agent.restart import RestartPolicy
from fleet.common.private import private_dir, private_file, write_private
from fleet.proto import fleet_pb2 as pb

log = logging.getLogger("fleet.agent")

LOG_LIMIT = 20 * 1024 * 1024  # rotate an engine log past this size (copy-truncate: the engine keeps its fd)
TAIL_LINES = 20
HEALTH_FAILURES = 3  # consecutive failed checks (0.5 s apart, 5 s timeout each) before healthy -> starting


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)  # path (relative: the replica's dir) -> content, 0600


# spec, port, host -> how to start it; raises WeightsMissing / EngineMissing with an operator-facing message
Launcher = Callable[[pb.ReplicaSpec, int, str], Launch]


class LaunchError(Exception):
    """The replica cannot be started as specified (weights or engine missing): a final `failed`."""


@dataclass
class Replica:
    spec: pb.ReplicaSpec
    dir: Path
    state: str = "pending"
    port: int = 0
    pid: int = 0
    created: float = 0.0  # process create_time: a reused pid is not our engine
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    message: str = ""
    started_at: float = 0.0
    next_start: float = 0.0
    stop_deadline: float = 0.0
    crash_times: list[float] = field(default_factory=list)
    restart_after_stop: bool = False  # the spec changed under the same id: stop, then start the new one
    health_failures: int = 0  # consecutive failed health checks of a healthy engine
    memory: pb.ReplicaMemory | None = None  # the last measurement of the running engine
    next_measure: float = 0.0
    master_port: int = 0  # vLLM main of a multi-node replica: its rendezvous port (--master-port)

    @property
    def role(self) -> str:
        """"" for a one-node replica; main, rpc or follower for a part of a multi-node one."""
        return self.spec.part.role if self.spec.HasField("part") else ""

    def status(self, host: str, part_address: str = "") -> pb.ReplicaStatus:
        serves = self.role in ("", "main")
        endpoint = (f"http://{host}:{self.port}" if serves and self.port and self.state in ("starting", "healthy")
                    else "")
        address, epoch = "", 0
        if self.role:
            epoch = self.spec.part.epoch
            port = self.port if self.role == "rpc" else self.master_port
            address = f"{part_address}:{port}" if port and part_address else ""
        return pb.ReplicaStatus(id=self.spec.id, state=self.state, endpoint=endpoint, pid=self.pid,
                                message=self.message, restarts=self.restarts, memory=self.memory, address=address,
                                epoch=epoch)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def rotate(path: Path, limit: int = LOG_LIMIT, keep: int = 2) -> None:
    """Copy-truncate past `limit` bytes, keeping `keep` old files (engine.log.1, .2)."""
    with contextlib.suppress(OSError):
        if path.stat().st_size <= limit:
            return
        for i in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{i}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
        with open(path, "rb") as src:
            write_private(path.with_name(f"{path.name}.1"), src.read())
        os.truncate(path, 0)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def healthy(port: int, api_key: str, timeout: float = 5.0, host: str = "127.0.0.1") -> bool:
    req = urllib.request.Request(f"http://{host}:{port}/health", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def listening(pid: int, port: int) -> bool:
    """The process listens on `port` (rpc-server: ready). Looked up, not connected to: rpc-server serves one
    client at a time with a backlog of one, so a probe connection would queue behind the main's."""
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.Error:
        return False


def alive(pid: int, created: float) -> bool:
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - created) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Supervisor:
    def __init__(self, data_dir: Path, launcher: Launcher, host: str = "127.0.0.1", advertise: str = "127.0.0.1",
                 ports: tuple[int, int] = (40000, 40999), policy: RestartPolicy | None = None,
                 stop_grace: float = 10.0, simulate: bool = False, meter: Meter | None = None,
                 measure_every: float = 5.0, part_address: str = "") -> None:
        self.root = private_dir(data_dir / "replicas")
        # Files an older release wrote world-readable: engine keys (state.json), prompts in engine logs.
        for d in self.root.iterdir():
            if d.is_dir() and not d.is_symlink():
                private_dir(d)
                for f in d.iterdir():
                    if f.is_file() and not f.is_symlink():
                        private_file(f)
        self.launcher = launcher
        self.host, self.advertise = host, advertise
        # Where the other parts of a multi-node replica reach this node: rpc-servers bind to it, vLLM's
        # rendezvous is advertised at it.
        self.part_address = part_address
        self.ports = ports
        self.policy = policy or RestartPolicy()
        self.stop_grace = stop_grace
        # Declared GPUs and engines (capacity planning, tests): replicas are accounted, never launched.
        self.simulate = simulate
        # What running engines really use, measured every `measure_every` seconds and sent with the states.
        self.meter = meter
        self.measure_every = measure_every
        self.replicas: dict[str, Replica] = {}
        self.generation = 0
        self.changed = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.adopt()

    def note(self, rid: str, message: str) -> None:
        """Progress from a slow start (weights downloading), shown by the controller; callable from any thread."""
        r = self.replicas.get(rid)
        if r is None:
            return
        r.message = message
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.changed.set)

    # ---- persistence: what survives an agent restart (the spec holds the engine's API key: 0600)
    def _record(self, r: Replica) -> None:
        private_dir(r.dir)
        write_private(r.dir / "state.json", json.dumps({
            "spec": r.spec.SerializeToString().hex(), "port": r.port, "pid": r.pid, "created": r.created,
            "restarts": r.restarts, "master_port": r.master_port}).encode())

    def adopt(self) -> None:
        """Take over engines a previous agent started and that still run; forget the rest."""
        for d in sorted(self.root.iterdir()):
            state = d / "state.json"
            if not state.exists():
                continue
            try:
                raw = json.loads(state.read_text())
                spec = pb.ReplicaSpec.FromString(bytes.fromhex(raw["spec"]))
            except (ValueError, KeyError) as e:
                log.warning("ignoring unreadable replica state %s: %s", state, e)
                continue
            if raw.get("pid") and alive(raw["pid"], raw.get("created", 0.0)):
                r = Replica(spec=spec, dir=d, state="starting", port=raw["port"], pid=raw["pid"],
                            created=raw["created"], restarts=raw.get("restarts", 0), started_at=time.time(),
                            master_port=raw.get("master_port", 0))
                self.replicas[spec.id] = r
                log.info("adopted replica %s (pid %d, port %d)", spec.id, r.pid, r.port)
            else:
                state.unlink()

    # ---- desired state from the controller
    def apply(self, desired: pb.DesiredReplicas) -> None:
        wanted = {s.id: s for s in desired.replicas}
        for rid, r in self.replicas.items():
            if rid not in wanted:
                r.restart_after_stop = False  # no longer wanted: a stop under way stays a stop
                if r.state not in ("stopping", "stopped"):
                    self._begin_stop(r)
        for rid, spec in wanted.items():
            r = self.replicas.get(rid)
            if r is None or (r.state == "stopped" and not r.restart_after_stop):
                self.replicas[rid] = Replica(spec=spec, dir=self.root / rid)
            elif r.state in ("stopping", "stopped"):
                # Still (or again) wanted while its engine stops: start it afterwards, on the newest spec.
                r.spec, r.restart_after_stop = spec, True
            elif r.spec.SerializeToString() != spec.SerializeToString():
                if not r.pid and (r.state in ("pending", "failed") or self.simulate):
                    # Nothing runs (a part held for its gang, or one waiting to restart): take the new spec as is;
                    # a stop would only report a `stopped` that never happened.
                    r.spec, r.state = spec, "pending"
                    continue
                r.spec = spec  # same id, new spec: restart it on the new spec
                self._begin_stop(r, then_restart=True)
        self.generation = desired.generation
        self.changed.set()

    def statuses(self) -> pb.ReplicaReport:
        return pb.ReplicaReport(applied_generation=self.generation,
                                replicas=[r.status(self.advertise, self.part_address) for r in self.replicas.values()])

    # ---- the loop
    async def run(self, interval: float = 0.5) -> None:
        self.loop = asyncio.get_running_loop()
        while True:
            before = self._fingerprint()
            await asyncio.to_thread(self.tick)
            if self._fingerprint() != before:
                self.changed.set()
            await asyncio.sleep(interval)

    def _fingerprint(self) -> tuple[tuple[object, ...], ...]:
        return tuple((r.spec.id, r.state, r.restarts, r.message, fingerprint(r.memory))
                     for r in self.replicas.values())

    def tick(self) -> None:
        now = time.time()
        for rid in list(self.replicas):
            r = self.replicas[rid]
            if r.state == "pending" and r.role:
                self._prepare(r)
            if r.state == "pending" and r.role and r.spec.part.hold:
                # A part waits for its gang: its ports are held and reported, its engine not started yet.
                why = r.spec.part.waiting_for or "the other parts"
                r.message = f"waiting for {why}"
                continue
            if r.state == "pending" and now >= r.next_start:
                self._start(r, now)
            elif r.state in ("starting", "healthy") and not (self.simulate and not r.pid):
                self._watch(r, now)
                self._measure(r, now)
            elif r.state == "stopping":
                self._watch_stop(r, now)
            elif r.state == "stopped" and r.restart_after_stop:
                r.restart_after_stop = False
                r.state, r.next_start = "pending", now
            rotate(r.dir / "engine.log")

    def _measure(self, r: Replica, now: float) -> None:
        if self.meter is None or not r.pid or now < r.next_measure or r.state not in ("starting", "healthy"):
            return
        r.next_measure = now + self.measure_every
        r.memory = self.meter.measure(r.spec.id, r.spec.engine, r.pid, r.spec.gpu_uuids, r.dir / "engine.log", now)

    def forget_stopped(self) -> None:
        """After the controller has seen a stopped replica, drop it (and its files' state); not one that stopped
        only to start again on a new spec."""
        for rid in [rid for rid, r in self.replicas.items() if r.state == "stopped" and not r.restart_after_stop]:
            r = self.replicas.pop(rid)
            with contextlib.suppress(OSError):
                (r.dir / "state.json").unlink()

    def _pick_port(self, host: str | None = None) -> int:
        used = {r.port for r in self.replicas.values() if r.port} | {r.master_port for r in self.replicas.values()}
        bind = host or (self.host if self.host != "0.0.0.0" else "127.0.0.1")
        for port in range(self.ports[0], self.ports[1] + 1):
            if port not in used and port_free(port, bind):
                return port
        raise LaunchError(f"no free port in {self.ports[0]}-{self.ports[1]}; widen --engine-ports")

    def _prepare(self, r: Replica) -> None:
        """Ports of a part, chosen when it arrives (and kept): the rest of the gang is told them before it starts."""
        try:
            if r.role == "rpc" and not (r.port and port_free(r.port, self.part_address or "127.0.0.1")):
                r.port = self._pick_port(self.part_address or None)
            if r.role == "main" and r.spec.engine == "vllm" and not (r.master_port and port_free(r.master_port,
                                                                                                  "0.0.0.0")):
                r.master_port = self._pick_port("0.0.0.0")
        except LaunchError as e:
            r.state, r.message = "failed", str(e)

    def _start(self, r: Replica, now: float) -> None:
        if self.simulate:
            # Accounted for planning, never launched: never "healthy", so nothing waits on it or routes to it.
            r.state, r.message = "declared", "declared node: accounted, engine not launched"
            return
        try:
            if r.role != "rpc":
                r.port = r.port if r.port and port_free(r.port) else self._pick_port()
            spec = r.spec
            if r.role == "main" and spec.engine == "vllm":
                spec = pb.ReplicaSpec()
                spec.CopyFrom(r.spec)
                spec.part.master_address = f"{self.part_address}:{r.master_port}"
            launch = self.launcher(spec, r.port, self.host)
        except LaunchError as e:
            r.state, r.message = "failed", str(e)
            log.error("replica %s cannot start: %s", r.spec.id, e)
            return
        private_dir(r.dir)
        for path, content in launch.files.items():  # secrets the engine reads from a file (its API key)
            write_private(r.dir / path, content.encode())
        # Engine logs hold prompts and errors: 0600. The command line carries no secret (see engines.py).
        fd = os.open(r.dir / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        logf = os.fdopen(fd, "ab")  # the child owns it; we close our copy below
        logf.write(f"\n==== fleet: starting {' '.join(launch.argv)}\n".encode())
        logf.flush()
        try:
            r.proc = subprocess.Popen(launch.argv, env=launch.env, stdout=logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, cwd=r.dir)
        except OSError as e:
            r.state, r.message = "failed", f"cannot execute {launch.argv[0]}: {e}"
            return
        finally:
            logf.close()
        r.pid = r.proc.pid
        try:
            r.created = psutil.Process(r.pid).create_time()
        except psutil.Error:
            r.created = now
        r.state, r.started_at, r.message = "starting", now, ""
        self._record(r)
        log.info("replica %s starting: pid %d port %d", r.spec.id, r.pid, r.port)

    def _exited(self, r: Replica) -> int | None:
        """Exit code when the engine is gone (None while it runs; -1 for an adopted one we cannot reap)."""
        if r.proc is not None:
            return r.proc.poll()
        return None if alive(r.pid, r.created) else -1

    def _watch(self, r: Replica, now: float) -> None:
        code = self._exited(r)
        if code is not None:
            r.crash_times.append(now)
            last = tail(r.dir / "engine.log")
            decision = self.policy.after_crash(r.crash_times, now, was_healthy=r.state == "healthy")
            r.proc, r.pid = None, 0
            if decision.give_up:
                r.state = "failed"
                r.message = f"engine exited with code {code}; {decision.reason}. Last log lines:\n{last}"
                log.error("replica %s failed: %s", r.spec.id, decision.reason)
            else:
                r.restarts += 1
                r.state, r.next_start = "pending", now + decision.delay
                r.message = f"engine exited with code {code}; restart {r.restarts} in {decision.delay:.0f}s"
                log.warning("replica %s exited (%s); restarting in %.1fs", r.spec.id, code, decision.delay)
            self._record(r)
            return
        if r.role == "rpc":
            ok = listening(r.pid, r.port)
        elif r.role == "follower":
            ok = True  # no HTTP of its own: it serves through the main, whose health is the replica's
        else:
            # An engine bound to one address answers there only; bound to all, loopback reaches it.
            ok = healthy(r.port, r.spec.api_key, host=self.host if self.host not in ("0.0.0.0", "::", "") else
                         "127.0.0.1")
        if ok:
            r.health_failures = 0
        if ok and r.state == "starting":
            r.state, r.message = "healthy", ""
            log.info("replica %s healthy on port %d", r.spec.id, r.port)
        elif not ok and r.state == "healthy":
            # One slow answer on a busy machine is not an outage: drains and the gateway act on this state.
            r.health_failures += 1
            if r.health_failures >= HEALTH_FAILURES:
                r.state = "starting"  # serving stopped answering; the exit check above catches a crash
                log.warning("replica %s stopped answering /health", r.spec.id)

    def _begin_stop(self, r: Replica, then_restart: bool = False) -> None:
        r.restart_after_stop = then_restart
        if r.pid and self._exited(r) is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.pid, signal.SIGTERM)
            r.state, r.stop_deadline = "stopping", time.time() + self.stop_grace
            log.info("replica %s stopping (SIGTERM, SIGKILL after %.0fs)", r.spec.id, self.stop_grace)
        else:
            r.state = "stopped"
            r.pid = 0
            log.info("replica %s stopped (no engine process was running)", r.spec.id)

    def _watch_stop(self, r: Replica, now: float) -> None:
        if self._exited(r) is not None:
            r.state, r.pid, r.proc = "stopped", 0, None
            with contextlib.suppress(OSError):
                (r.dir / "state.json").unlink()
            log.info("replica %s stopped", r.spec.id)
        elif now >= r.stop_deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.pid, signal.SIGKILL)
            log.warning("replica %s did not stop within %.0fs: SIGKILL", r.spec.id, self.stop_grace)
