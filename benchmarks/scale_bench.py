"""The control plane at fleet scale: N simulated agents, D placed deployments, measured end to end.

    python benchmarks/scale_bench.py --nodes 1000 --deployments 500 [-o json]

A real `fleet controller run` (SQLite file, TLS gRPC, HTTP on) and, in a separate process, N simulated
agents over the real Agent service (tests/agent_sim.py: Register, a Session per node, heartbeats at the
controller's interval with random phase, every desired replica reported healthy; 8 declared A100s each).
This process places D deployments through the Fleet service (explain off, as operators run it), runs the
CLI's list verbs and the HTTP reads, samples the controller's CPU and RSS, restarts it, and prints each
measure against the target of the scale issue. A thread calls the cheap Stats RPC every 50 ms throughout:
its worst latency is the longest the controller's event loop was blocked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet.common.trust import SERVER_NAME  # noqa: E402
from fleet.proto import fleet_pb2 as pb  # noqa: E402
from fleet.proto import fleet_pb2_grpc as pbg  # noqa: E402

FLEET = [sys.executable, "-m", "fleet.cli"]
# Deployments that fit an A100 node one way or another, in the proportions a fleet runs them.
MIX = [("llama3.1-8b", "bf16"), ("qwen2.5-7b", "awq"), ("mistral-7b", "q4_k_m"), ("qwen2.5-14b", "awq"),
       ("llama3.1-8b", "awq"), ("qwen2.5-32b", "awq"), ("llama3.1-70b", "awq"), ("phi4", "awq")]
TARGETS = {
    "ready_after_start_s": ("nodes ready after start", 60.0, "s"),
    "ready_after_restart_s": ("nodes ready after controller restart", 60.0, "s"),
    "place_p99_ms": ("Place RPC p99 (client side, explain off)", 50.0, "ms"),
    "cli_nodes_s": ("fleet nodes -o json", 2.0, "s"),
    "cli_deployments_s": ("fleet deployments -o json", 2.0, "s"),
    "cli_capacity_s": ("fleet capacity -o json", 2.0, "s"),
    "stall_ms": ("longest event-loop stall (worst Stats latency)", 100.0, "ms"),
    "idle_cpu_pct": ("idle controller CPU, sessions heartbeating", 30.0, "% of a core"),
    "rss_mb": ("controller RSS", 1024.0, "MB"),
    "metrics_s": ("/metrics", 1.0, "s"),
    "api_capacity_s": ("/api/capacity", 1.0, "s"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Controller:
    data_dir: Path
    address: str
    http: str
    heartbeat: float
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data_dir.parent / "controller.log"

    def start(self) -> None:
        logf = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [*FLEET, "controller", "run", "--data-dir", str(self.data_dir), "--listen", self.address,
             "--http-listen", self.http, "--heartbeat-interval", str(self.heartbeat),
             "--offline-after", str(self.heartbeat * 3)],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + 120
        while not (self.data_dir / "admin-token").exists() or not self._listening():
            if self.proc.poll() is not None:
                raise SystemExit(f"the controller exited; see {self.log}")
            if time.monotonic() > deadline:
                raise SystemExit("the controller did not start within 120 s")
            time.sleep(0.1)

    def _listening(self) -> bool:
        host, port = self.address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    @property
    def ps(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)


def fleet_stub(address: str, ca: bytes) -> pbg.FleetStub:
    ch = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca),
                             options=[("grpc.ssl_target_name_override", SERVER_NAME),
                                      ("grpc.max_receive_message_length", 64 * 2**20)])
    return pbg.FleetStub(ch)


class Prober(threading.Thread):
    """Calls Stats every 50 ms; the worst latency is how long the controller's event loop was blocked."""

    def __init__(self, address: str, ca: bytes, admin: str) -> None:
        super().__init__(daemon=True)
        self.stub = fleet_stub(address, ca)
        self.md = (("authorization", f"Bearer {admin}"),)
        self.worst = 0.0
        self.samples: list[float] = []
        self.halt = threading.Event()
        self.phase = "start"
        self.by_phase: dict[str, float] = {}  # phase -> its worst Stats latency: which phase stalls the loop

    def reset(self) -> None:
        self.worst, self.samples = 0.0, []

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.perf_counter()
            try:
                self.stub.Stats(pb.StatsRequest(), metadata=self.md, timeout=30)
            except grpc.RpcError:
                pass  # the controller is restarting
            else:
                took = time.perf_counter() - t0
                self.samples.append(took)
                self.worst = max(self.worst, took)
                self.by_phase[self.phase] = max(self.by_phase.get(self.phase, 0.0), took)
            self.halt.wait(0.05)


OURS = ("controller/", "cli/", "common/", "agent/")


class Spy:
    """py-spy sampling the controller during one phase (`--profile`): the profile that explains a miss."""

    def __init__(self, pid: int, folder: Path | None, phase: str) -> None:
        self.path = folder / f"{phase}.txt" if folder else None
        self.phase = phase
        self.proc: subprocess.Popen[bytes] | None = None
        if self.path is not None:
            spy = Path(sys.executable).with_name("py-spy")
            self.proc = subprocess.Popen([str(spy), "record", "-p", str(pid), "--format", "raw", "-r", "50",
                                          "--nonblocking", "-o", str(self.path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> list[tuple[float, str]]:
        """The fleet functions the controller spent the phase in: (share of samples, function), largest first."""
        if self.proc is None or self.path is None:
            return []
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        total = 0
        inclusive: dict[str, int] = {}  # our functions, counted once per sample that has them on its stack
        leaf: dict[str, int] = {}  # where the CPU was: the package of the innermost frame
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            frames = [(f.split(" (")[0], f.rpartition("(")[2].split(":")[0]) for f in stack.split(";")]
            if frames:
                where = frames[-1][1]
                pkg = where.split("/")[0] if "/" in where else where.removesuffix(".py")
                leaf[pkg] = leaf.get(pkg, 0) + n
            for fn in {f"{name} ({path})" for name, path in frames if path.startswith(OURS)}:
                inclusive[fn] = inclusive.get(fn, 0) + n
        # entry frames (the CLI that started the controller, its run loop) are on most stacks and explain nothing
        top = sorted(((n / max(1, total), fn) for fn, n in inclusive.items()
                      if "(cli/" not in fn and fn != "run (controller/main.py)"), reverse=True)[:10]
        cpu = sorted(((n / max(1, total), pkg) for pkg, n in leaf.items()), reverse=True)[:6]
        say(f"profile of {self.phase} ({total} samples at 50/s while busy): in " +
            ", ".join(f"{pkg} {share:.0%}" for share, pkg in cpu) + "; under " +
            "; ".join(f"{fn} {share:.0%}" for share, fn in top))
        return top


def stats(stub: pbg.FleetStub, admin: str) -> pb.StatsResponse:
    return stub.Stats(pb.StatsRequest(), metadata=(("authorization", f"Bearer {admin}"),), timeout=30)


def wait_ready(stub: pbg.FleetStub, admin: str, n: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if stats(stub, admin).nodes_alive >= n:
                return time.monotonic() - t0
        except grpc.RpcError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"not all {n} nodes ready within {timeout:.0f} s")


def timed_cli(env: dict[str, str], *args: str) -> tuple[float, int]:
    t0 = time.monotonic()
    r = subprocess.run([*FLEET, *args], capture_output=True, text=True, env=env, timeout=600)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"fleet {' '.join(args)} failed: {r.stderr[-500:]}")
    return took, len(json.loads(r.stdout)) if args[0] != "capacity" else len(json.loads(r.stdout)["nodes"])


def timed_get(url: str, admin: str) -> tuple[float, int]:
    t0 = time.monotonic()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {admin}"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        size = len(resp.read())
    return time.monotonic() - t0, size


def cpu_percent(proc: psutil.Process, seconds: float) -> float:
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    return 100.0 * ((after.user - before.user) + (after.system - before.system)) / seconds


# ---------------------------------------------------------------- the simulated fleet (its own process)

async def simulate(address: str, ca: bytes, join_token: str, n: int, per_channel: int, seed: int) -> None:
    from tests.agent_sim import SimAgent, channel, inventory, register_all

    rng = random.Random(seed)
    agents = [SimAgent(f"sim-{i:05d}", inventory(f"sim-{i:05d}", labels={"rack": f"r{i // 40}"})) for i in range(n)]
    channels = [channel(address, ca) for _ in range(max(1, (n + per_channel - 1) // per_channel))]
    await register_all(agents, channels, join_token, concurrency=64)
    print(f"registered {n}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.gather(*(a.run(channels[i % len(channels)], stop, rng) for i, a in enumerate(agents)))


# ---------------------------------------------------------------- the measurement

def place_all(stub: pbg.FleetStub, admin: str, d: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    md = (("authorization", f"Bearer {admin}"),)
    took: list[float] = []
    for i in range(d):
        model, quant = rng.choice(MIX)
        t0 = time.perf_counter()
        r = stub.Place(pb.PlaceRequest(model=model, quant=quant, name=f"d{i:05d}", context=8192), metadata=md,
                       timeout=120)
        took.append(time.perf_counter() - t0)
        if not r.placed:
            raise SystemExit(f"placement {i} did not fit: {r.summary}")
    return took


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": args.nodes, "deployments": args.deployments,
                           "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"}
    with tempfile.TemporaryDirectory(prefix="fleet-scale-") as tmp:
        ctl = Controller(Path(tmp) / "controller", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
                         args.heartbeat)
        t_start = time.monotonic()
        ctl.start()
        ca = (ctl.data_dir / "tls" / "ca.crt").read_bytes()
        admin = (ctl.data_dir / "admin-token").read_text().strip()
        join = (ctl.data_dir / "join-token").read_text().strip()
        stub = fleet_stub(ctl.address, ca)
        sim = subprocess.Popen([sys.executable, __file__, "--simulate", "--address", ctl.address,
                                "--ca", str(ctl.data_dir / "tls" / "ca.crt"), "--join-token", join,
                                "--nodes", str(args.nodes), "--per-channel", str(args.per_channel)],
                               start_new_session=True)
        prober = Prober(ctl.address, ca, admin)
        env = {**os.environ, "FLEET_CONTROLLER": ctl.address, "FLEET_DATA_DIR": str(ctl.data_dir),
               "FLEET_TOKEN": admin}
        try:
            wait_ready(stub, admin, args.nodes, args.timeout)
            out["ready_after_start_s"] = time.monotonic() - t_start
            prober.start()
            say(f"{args.nodes} nodes ready in {out['ready_after_start_s']:.1f} s; placing {args.deployments}")

            prober.phase = "place"
            spy = Spy(ctl.ps.pid, args.profile, "place")
            took = place_all(stub, admin, args.deployments, args.seed)
            out["profile_place"] = spy.stop()
            out["place_p50_ms"] = 1000 * statistics.median(took)
            out["place_p99_ms"] = 1000 * percentile(took, 99)
            say(f"placed: p50 {out['place_p50_ms']:.1f} ms, p99 {out['place_p99_ms']:.1f} ms")

            for key, verb in (("cli_nodes_s", "nodes"), ("cli_deployments_s", "deployments"),
                              ("cli_capacity_s", "capacity")):
                prober.phase = f"fleet {verb}"
                spy = Spy(ctl.ps.pid, args.profile, verb)
                out[key], count = timed_cli(env, verb, "-o", "json")
                out[f"profile_{verb}"] = spy.stop()
                say(f"fleet {verb} -o json: {out[key]:.2f} s, {count} items")
            prober.phase = "/metrics"
            out["metrics_s"], size = timed_get(f"http://{ctl.http}/metrics", admin)
            say(f"/metrics: {out['metrics_s']:.2f} s, {size / 2**20:.1f} MiB")
            prober.phase = "/api/capacity"
            out["api_capacity_s"], size = timed_get(f"http://{ctl.http}/api/capacity", admin)
            say(f"/api/capacity: {out['api_capacity_s']:.2f} s, {size / 2**20:.1f} MiB")
            out["stall_ms"] = 1000 * prober.worst
            out["stats_p50_ms"] = 1000 * statistics.median(prober.samples)

            prober.phase = "idle"
            spy = Spy(ctl.ps.pid, args.profile, "idle")
            out["idle_cpu_pct"] = cpu_percent(ctl.ps, args.idle_seconds)
            out["profile_idle"] = spy.stop()
            out["rss_mb"] = ctl.ps.memory_info().rss / 2**20
            out["stall_ms_by_phase"] = {k: round(1000 * v, 1) for k, v in prober.by_phase.items()}
            say(f"idle: {out['idle_cpu_pct']:.1f} % of a core, RSS {out['rss_mb']:.0f} MB")

            ctl.stop()
            t_restart = time.monotonic()
            ctl.start()
            wait_ready(stub, admin, args.nodes, args.timeout)
            out["ready_after_restart_s"] = time.monotonic() - t_restart
            say(f"after a restart, {args.nodes} nodes ready in {out['ready_after_restart_s']:.1f} s")
        finally:
            prober.halt.set()
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(30)
            except subprocess.TimeoutExpired:
                sim.kill()
            ctl.stop()
    return out


def say(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def render(out: dict[str, Any]) -> None:
    print(f"\nfleet at scale: {out['nodes']} nodes × 8 GPUs, {out['deployments']} deployments ({out['machine']}, "
          "SQLite, TLS)")
    print(f"{'measure':52} {'measured':>12} {'target':>12}  ok")
    for key, (label, target, unit) in TARGETS.items():
        value = out.get(key)
        shown = "-" if value is None else f"{value:.1f} {unit.split()[0]}"
        ok = "" if value is None else ("yes" if value <= target else "NO")
        print(f"{label:52} {shown:>12} {f'{target:g} {unit.split()[0]}':>12}  {ok}")
    print(f"(Place p50 {out.get('place_p50_ms', 0):.1f} ms; Stats p50 {out.get('stats_p50_ms', 0):.1f} ms)")
    if out.get("stall_ms_by_phase"):
        phases = out["stall_ms_by_phase"].items()
        print("worst Stats latency by phase: " + ", ".join(f"{k} {v:.0f} ms" for k, v in phases))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--deployments", type=int, default=500)
    ap.add_argument("--heartbeat", type=float, default=5.0, help="agents' heartbeat interval (s)")
    ap.add_argument("--per-channel", type=int, default=100, help="agent sessions per gRPC connection")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=900.0, help="give up waiting for nodes after this (s)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="sample the controller with py-spy in each phase (raw stacks in DIR; root or ptrace rights)")
    ap.add_argument("-o", "--output", choices=("table", "json"), default="table")
    ap.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)  # the simulated fleet process
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--ca", help=argparse.SUPPRESS)
    ap.add_argument("--join-token", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.simulate:
        asyncio.run(simulate(args.address, Path(args.ca).read_bytes(), args.join_token, args.nodes,
                             args.per_channel, args.seed))
        return
    out = measure(args)
    if args.output == "json":
        print(json.dumps(out, indent=1))
    else:
        render(out)


if __name__ == "__main__":
    main()
