"""How many heartbeats/s one controller absorbs, and what one idle agent costs.

    python benchmarks/heartbeat_bench.py [--agents 200] [--seconds 10]

Starts a real `fleet controller run` (SQLite file, TLS gRPC on loopback), joins N in-process simulated agents
over real Session streams (each heartbeat carries 8 GPUs' usage, like an 8-GPU server), sends as fast as
flow control allows, and reads the controller's own count of heartbeats absorbed (Fleet.Stats).
Then runs one idle `fleet agent run --simulate-gpus 8xA100-80GB` and samples its RSS and CPU.
Targets (issue 2): >= 2,000 heartbeats/s; agent <= 60 MB RSS and <= 1 % of a core idle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil

from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

FLEET = [sys.executable, "-m", "fleet.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_controller(data_dir: Path, address: str, heartbeat: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*FLEET, "controller", "run", "--data-dir", str(data_dir), "--listen", address,
                             "--heartbeat-interval", str(heartbeat), "--offline-after", str(heartbeat * 60),
                             "--http-listen", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 30
    host, port = address.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return proc
        except OSError:
            if time.time() > deadline:
                raise SystemExit("controller did not start") from None
            time.sleep(0.1)


def inventory(i: int) -> pb.Inventory:
    return pb.Inventory(hostname=f"bench-{i}", gpu_probe="declared", ram_total=2**40, disk_free=2**42,
                        gpus=[pb.Gpu(uuid=f"GPU-bench-{i}-{g}", index=g, name="A100-80GB", memory_total=80 * 2**30,
                                     compute_capability="8.0", declared=True) for g in range(8)])


def channel(address: str, ca: bytes, extra: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
    # the same verified TLS the agents use
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca),
                                   options=[("grpc.ssl_target_name_override", "fleet-controller"), *(extra or [])])


async def run_agents(address: str, ca: bytes, join_token: str, admin: str, n: int,
                     seconds: float) -> tuple[float, float, int]:
    opts = [("grpc.use_local_subchannel_pool", 1)]
    async with channel(address, ca) as ch:
        stub = pbg.AgentStub(ch)
        creds = []
        for i in range(n):
            r = await stub.Register(pb.RegisterRequest(join_token=join_token, name=f"bench-{i:04d}",
                                                       inventory=inventory(i)))
            creds.append((r.node_name, r.credential))
    # a few channels, like many hosts; each carries n/len(channels) streams
    channels = [channel(address, ca, opts) for _ in range(8)]
    stop = asyncio.Event()
    sent = 0

    async def agent(i: int, node: str, cred: str) -> None:
        nonlocal sent
        stub = pbg.AgentStub(channels[i % len(channels)])
        call = stub.Session(metadata=(("authorization", f"Bearer {cred}"), ("x-fleet-node", node)))
        await call.write(pb.AgentMessage(inventory=inventory(i)))
        hb = pb.Heartbeat(ram_available=2**39, disk_free=2**41,
                          gpus=[pb.GpuUsage(uuid=f"GPU-bench-{i}-{g}", memory_used=g, utilization=50, temperature=60)
                                for g in range(8)])
        seq = 0
        while not stop.is_set():
            seq += 1
            hb.seq = seq
            await call.write(pb.AgentMessage(heartbeat=hb))
            sent += 1
        await call.done_writing()
        call.cancel()

    tasks = [asyncio.create_task(agent(i, node, cred)) for i, (node, cred) in enumerate(creds)]
    async with channel(address, ca) as ch:
        fleet = pbg.FleetStub(ch)
        md = (("authorization", f"Bearer {admin}"),)
        await asyncio.sleep(2.0)  # warm up: every session open
        s0 = await fleet.Stats(pb.StatsRequest(), metadata=md)
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        s1 = await fleet.Stats(pb.StatsRequest(), metadata=md)
        t1 = time.perf_counter()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    for c in channels:
        await c.close()
    return (s1.heartbeats_total - s0.heartbeats_total) / (t1 - t0), t1 - t0, s1.sessions_open


def idle_agent(address: str, join_token: str, root: Path, settle: float, sample: float) -> tuple[float, float]:
    proc = subprocess.Popen([*FLEET, "agent", "run", "--controller", address, "--join-token", join_token,
                             "--data-dir", str(root / "agent"), "--name", "idle-agent",
                             "--simulate-gpus", "8xA100-80GB"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(settle)
        p = psutil.Process(proc.pid)
        c0, t0 = p.cpu_times(), time.perf_counter()
        time.sleep(sample)
        c1, t1 = p.cpu_times(), time.perf_counter()
        rss = p.memory_info().rss / 2**20
        cpu = ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0) * 100
        return rss, cpu
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        address = f"127.0.0.1:{free_port()}"
        ctl = start_controller(root / "controller", address, heartbeat=5.0)
        try:
            join = (root / "controller" / "join-token").read_text().strip()
            admin = (root / "controller" / "admin-token").read_text().strip()
            ca = (root / "controller" / "tls" / "ca.crt").read_bytes()
            rate, window, sessions = asyncio.run(run_agents(address, ca, join, admin, args.agents, args.seconds))
            ctl_cpu = psutil.Process(ctl.pid).cpu_times()
            rss, cpu = idle_agent(address, join, root, settle=5.0, sample=args.idle_seconds)
        finally:
            os.killpg(ctl.pid, signal.SIGTERM)
            ctl.wait(15)
    print(f"machine: {os.cpu_count()} cores; controller and load generator share it")
    print(f"{'metric':<42}{'measured':>12}{'target':>12}{'ratio':>8}")
    rows = [
        (f"heartbeats/s absorbed ({sessions} agents, {window:.0f}s)", rate, 2000.0, rate / 2000.0),
        ("idle agent RSS MB (8xA100-80GB declared)", rss, 60.0, 60.0 / rss),
        (f"idle agent CPU % of a core ({args.idle_seconds:.0f}s)", cpu, 1.0, 1.0 / max(cpu, 1e-3)),
    ]
    for name, value, target, ratio in rows:
        print(f"{name:<42}{value:>12.1f}{target:>12.1f}{ratio:>7.1f}x")
    print(f"controller CPU seconds during the run: user {ctl_cpu.user:.1f}, system {ctl_cpu.system:.1f}")
    ok = rate >= 2000 and rss <= 60 and cpu <= 1.0
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
