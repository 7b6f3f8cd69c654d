"""Many simulated agents in one process, over the real Agent service (TLS gRPC): Register, then a Session
that sends the inventory, heartbeats at the controller's interval and reports every replica it is told to
run as healthy (a declared-GPU node: accounted, never launched). For scale tests and benchmarks/scale_bench.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from fleet.common.trust import SERVER_NAME
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

GIB = 1024**3


def inventory(name: str, gpus: int = 8, gpu: str = "A100-80GB", memory: int = 80 * GIB, cc: str = "8.0",
              labels: dict[str, str] | None = None) -> pb.Inventory:
    return pb.Inventory(
        hostname=name, gpu_probe="declared", cpu_count=64, ram_total=1024 * GIB, ram_available=1000 * GIB,
        disk_total=8192 * GIB, disk_free=8000 * GIB, agent_version="sim", labels=labels or {},
        engines=[pb.Engine(name="vllm", version="0.11.1"), pb.Engine(name="llama.cpp", version="sim")],
        gpus=[pb.Gpu(uuid=f"GPU-sim-{name}-{i}", index=i, name=gpu, memory_total=memory, compute_capability=cc,
                     declared=True) for i in range(gpus)])


def channel(address: str, ca: bytes) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca),
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME),
                                            ("grpc.use_local_subchannel_pool", 1)])


@dataclass
class SimAgent:
    name: str
    inventory: pb.Inventory
    credential: str = ""
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: int = 0  # sessions opened (reconnects included)
    heartbeats: int = 0

    async def register(self, stub: pbg.AgentStub, join_token: str) -> None:
        r = await stub.Register(pb.RegisterRequest(join_token=join_token, name=self.name, inventory=self.inventory),
                                timeout=120)
        self.credential = r.credential

    async def run(self, ch: grpc.aio.Channel, stop: asyncio.Event, rng: random.Random,
                  max_backoff: float = 10.0) -> None:
        """Keep a session open until `stop`; after a failure reconnect with full-jitter backoff (as agents do)."""
        attempt = 0
        while not stop.is_set():
            try:
                await self._session(ch, stop)
                attempt = 0
            except (TimeoutError, grpc.aio.AioRpcError):
                self.connected.clear()
                attempt += 1
                delay = rng.uniform(0, min(max_backoff, 0.5 * 2 ** attempt))
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass

    async def _session(self, ch: grpc.aio.Channel, stop: asyncio.Event) -> None:
        outbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
        outbox.put_nowait(pb.AgentMessage(inventory=self.inventory))

        async def requests():  # type: ignore[no-untyped-def]
            while (msg := await outbox.get()) is not None:
                yield msg

        md = (("authorization", f"Bearer {self.credential}"), ("x-fleet-node", self.name))
        call = pbg.AgentStub(ch).Session(requests(), metadata=md)
        beats: asyncio.Task[None] | None = None
        stopper = asyncio.create_task(stop.wait())
        stopper.add_done_callback(lambda _t: call.cancel())
        try:
            async for msg in call:
                kind = msg.WhichOneof("kind")
                if kind == "config":
                    self.sessions += 1
                    self.connected.set()
                    interval = msg.config.heartbeat_interval_ms / 1000
                    beats = asyncio.create_task(self._beat(outbox, interval))
                elif kind == "desired":
                    outbox.put_nowait(pb.AgentMessage(replicas=pb.ReplicaReport(
                        applied_generation=msg.desired.generation,
                        replicas=[pb.ReplicaStatus(id=r.id, state="healthy", endpoint="http://127.0.0.1:9")
                                  for r in msg.desired.replicas])))
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        finally:
            stopper.cancel()
            if beats is not None:
                beats.cancel()
            outbox.put_nowait(None)
            self.connected.clear()

    async def _beat(self, outbox: asyncio.Queue[pb.AgentMessage | None], interval: float) -> None:
        # the first beat at a random point of the interval: 10,000 agents do not beat in lockstep
        await asyncio.sleep(random.uniform(0, interval))
        seq = 0
        while True:
            seq += 1
            self.heartbeats += 1
            outbox.put_nowait(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=seq)))
            await asyncio.sleep(interval)


async def register_all(agents: Sequence[SimAgent], channels: Sequence[grpc.aio.Channel], join_token: str,
                       concurrency: int = 32) -> None:
    """Register every agent, `concurrency` at a time, spread over the channels."""
    queue: asyncio.Queue[tuple[int, SimAgent]] = asyncio.Queue()
    for i, a in enumerate(agents):
        queue.put_nowait((i, a))

    async def worker() -> None:
        while not queue.empty():
            i, a = queue.get_nowait()
            await a.register(pbg.AgentStub(channels[i % len(channels)]), join_token)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
