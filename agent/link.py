"""The agent's one link to the controller: join once, then keep a Session stream open.

Dials out (only the controller listens). Reconnects with capped exponential backoff and full jitter;
a refused credential is final and ends the agent with a message saying what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from fleet.agent import logs
from fleet.agent.probe import Probe
from fleet.agent.supervisor import Supervisor
from fleet.agent.trust import TrustError, ca_path, discover_ca
from fleet.common.trust import NODE_UNKNOWN, REFUSAL_KEY, channel_options, split_token
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

log = logging.getLogger("fleet.agent")

CHANNEL_OPTIONS = [
    # Notice a dead or frozen controller within ~15 s even when no message is due.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class AgentFatal(Exception):
    """Retrying cannot help (credential refused, invalid name): exit with this message and code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class Credential:
    controller: str
    node: str
    secret: str


def addresses(controllers: str) -> list[str]:
    """'a:50051,b:50051' -> ['a:50051', 'b:50051'] (one address is a list of one)."""
    found = [a.strip() for a in controllers.split(",") if a.strip()]
    if not found:
        raise AgentFatal("no controller address: pass --controller HOST:PORT (or several, comma-separated)", 2)
    return found


def credential_path(data_dir: Path) -> Path:
    return data_dir / "node-credential.json"


def load_credential(data_dir: Path) -> Credential | None:
    path = credential_path(data_dir)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Credential(controller=raw["controller"], node=raw["node"], secret=raw["credential"])


def save_credential(data_dir: Path, cred: Credential) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = credential_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"controller": cred.controller, "node": cred.node, "credential": cred.secret}, f)
    os.replace(tmp, path)


def inventory_message(p: Probe, version: str, labels: dict[str, str] | None = None, advertise_address: str = "",
                      allow_public_rpc: bool = False) -> pb.Inventory:
    h = p.host
    return pb.Inventory(
        hostname=h.hostname, cpu_count=h.cpu_count, ram_total=h.ram_total, ram_available=h.ram_available,
        models_dir=h.models_dir, disk_total=h.disk_total, disk_free=h.disk_free, agent_version=version,
        gpu_probe=p.gpu_probe, labels=labels or {}, advertise_address=advertise_address,
        allow_public_rpc=allow_public_rpc,
        gpus=[pb.Gpu(uuid=g.uuid, index=g.index, name=g.name, memory_total=g.memory_total,
                     memory_used=g.memory_used, compute_capability=g.compute_capability, driver=g.driver,
                     utilization=g.utilization, temperature=g.temperature, declared=g.declared) for g in p.gpus],
        engines=[pb.Engine(name=e.name, version=e.version, path=e.path, multinode=e.multinode) for e in p.engines],
    )


# At most this long between reconnect attempts: short enough that a restarted or failed-over controller sees
# every node again within its restart grace (25 s), long enough to spread 10,000 agents' reconnects.
RECONNECT_CAP = 10.0


def backoff_delays(base: float = 0.5, cap: float = RECONNECT_CAP,
                   rng: random.Random | None = None) -> AsyncIterator[float]:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**n))."""
    rng = rng or random.Random()

    async def gen() -> AsyncIterator[float]:
        n = 0
        while True:
            yield rng.uniform(0, min(cap, base * 2**n))
            n = min(n + 1, 30)

    return gen()


class Link:
    def __init__(self, controller: str, data_dir: Path, probe: Probe, name: str, join_token: str | None,
                 version: str, usage: Callable[[], dict[str, tuple[int, int, int]]] | None = None,
                 labels: dict[str, str] | None = None, supervisor: Supervisor | None = None,
                 insecure: bool = False, ca_file: Path | None = None, advertise_address: str = "",
                 allow_public_rpc: bool = False) -> None:
        # Several controllers on one database are one control plane: any of them will do, the next one is tried
        # when the current one cannot be reached.
        self.controllers = addresses(controller)
        self._at = 0
        self.data_dir = data_dir
        self.probe = probe
        self.name = name
        self.join_token = join_token
        self.version = version
        self.usage = usage  # fresh GPU usage per heartbeat (NVML); None: report the probe's numbers
        self.labels = labels or {}
        self.advertise_address, self.allow_public_rpc = advertise_address, allow_public_rpc
        self.supervisor = supervisor
        self.insecure = insecure
        self.root_ca: bytes | None = None
        if not insecure:
            stored = ca_path(data_dir)
            if ca_file is not None:
                self.root_ca = ca_file.read_bytes()
            elif stored.exists():
                self.root_ca = stored.read_bytes()
        self.log_tasks: dict[int, asyncio.Task[None]] = {}
        self.connected = asyncio.Event()
        self.sessions_opened = 0
        self.ever_connected = False  # this process had a session: a later refusal is a removal, not a restart

    def inventory(self) -> pb.Inventory:
        return inventory_message(self.probe, self.version, self.labels, self.advertise_address, self.allow_public_rpc)

    @property
    def controller(self) -> str:
        return self.controllers[self._at]

    def next_controller(self) -> None:
        """Try the next controller address (after this one failed)."""
        if len(self.controllers) > 1:
            self._at = (self._at + 1) % len(self.controllers)
            log.info("trying the controller at %s", self.controller)

    def _channel(self) -> grpc.aio.Channel:
        if self.insecure:
            return grpc.aio.insecure_channel(self.controller, options=CHANNEL_OPTIONS)
        if self.root_ca is None:
            raise AgentFatal("no CA to verify the controller: join with a token that carries its fingerprint "
                             "(the controller's DATA_DIR/join-token), or pass --ca-file, or --insecure for a "
                             "plaintext loopback controller", 2)
        return grpc.aio.secure_channel(self.controller, grpc.ssl_channel_credentials(self.root_ca),
                                       options=CHANNEL_OPTIONS + channel_options(True))

    async def discover(self) -> None:
        """First join over TLS: learn the controller's CA from the chain it presents, pinned by the token."""
        _, fingerprint = split_token(self.join_token or "")
        if self.insecure or self.root_ca is not None or not fingerprint:
            return
        async for delay in backoff_delays():
            try:
                ca = await asyncio.to_thread(discover_ca, self.controller, fingerprint)
                break
            except OSError as e:
                log.warning("cannot reach the controller at %s (%s); retrying in %.1fs", self.controller, e, delay)
                self.next_controller()
                await asyncio.sleep(delay)
            except TrustError as e:
                raise AgentFatal(str(e), 3) from e
        self.root_ca = ca
        path = ca_path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_bytes(ca)
        log.info("verified the controller's CA (fingerprint %s…), saved to %s", fingerprint[:16], path)

    async def register(self, held: Credential | None = None) -> Credential:
        """Join with the join token. `held`: this node's credential from another controller address, sent so
        the controller lets this agent keep its name (a join token alone never takes over a known node)."""
        if not self.join_token:
            raise AgentFatal(f"this agent has not joined yet ({credential_path(self.data_dir)} is missing): "
                             "pass --join-token (the controller's DATA_DIR/join-token)", 2)
        await self.discover()
        req = pb.RegisterRequest(join_token=self.join_token, name=self.name,
                                 inventory=self.inventory())
        async for delay in backoff_delays():
            async with self._channel() as ch:
                try:
                    md = (("authorization", f"Bearer {held.secret}"), ("x-fleet-node", held.node)) if held else ()
                    resp = await pbg.AgentStub(ch).Register(req, metadata=md, timeout=15)
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                        raise AgentFatal(f"the controller at {self.controller} refused to join: {e.details()}",
                                         3) from e
                    if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS):
                        raise AgentFatal(f"cannot join: {e.details()}", 2) from e
                    log.warning("cannot reach the controller at %s (%s); retrying in %.1fs",
                                self.controller, e.code().name, delay)
                    self.next_controller()
                    await asyncio.sleep(delay)
                    continue
            cred = Credential(controller=",".join(self.controllers), node=resp.node_name, secret=resp.credential)
            save_credential(self.data_dir, cred)
            log.info("joined the fleet as node %s", cred.node)
            return cred
        raise AssertionError("unreachable")

    async def run(self) -> None:
        cred = load_credential(self.data_dir)
        if cred is None or not set(addresses(cred.controller)) & set(self.controllers):
            cred = await self.register(held=cred if cred is not None and cred.node == self.name else None)
        self.name = cred.node
        delays = backoff_delays()
        while True:
            try:
                await self.session(cred)
                log.warning("session with the controller ended; reconnecting")
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    cred = await self.refused(cred, e)
                    continue
                log.warning("session with the controller at %s failed (%s: %s)", self.controller,
                            e.code().name, e.details())
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.next_controller()
            self.connected.clear()
            if self.sessions_opened:
                delays = backoff_delays()  # a session that worked resets the backoff
                self.sessions_opened = 0
            delay = await anext(delays)
            log.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def refused(self, cred: Credential, e: grpc.aio.AioRpcError) -> Credential:
        """The controller refused this node's credential: join again, or end the agent naming the file to delete.

        An agent *started* with --join-token whose node the controller no longer knows (removed, so the name
        is free) joins again by itself. A running agent whose node is removed stops: removal must stick until
        someone starts the agent again.
        """
        path = credential_path(self.data_dir)
        kind = dict(e.trailing_metadata() or ()).get(REFUSAL_KEY, "")
        if kind == NODE_UNKNOWN and self.join_token and not self.ever_connected:
            aside = path.with_name(path.name + ".refused")
            path.replace(aside)
            log.warning("the controller at %s no longer knows node %s (removed); its old credential is set aside as "
                        "%s; joining again with --join-token", self.controller, cred.node, aside)
            return await self.register()
        if kind == NODE_UNKNOWN and self.ever_connected:
            raise AgentFatal(f"node {cred.node} was removed from the controller at {self.controller}: {e.details()}. "
                             f"To bring it back, start the agent again with --join-token (it then replaces {path})",
                             3) from e
        if kind == NODE_UNKNOWN:
            raise AgentFatal(f"the controller at {self.controller} does not know node {cred.node} (removed, or never "
                             f"joined): start the agent with --join-token to join again (it then replaces {path})",
                             3) from e
        # Another agent holds the name now (it re-registered, or took over with `fleet node replace`'s token).
        raise AgentFatal(f"the controller refused node {cred.node}'s credential: {e.details()}. To join again, "
                         f"delete {path} and start the agent with --join-token under another --name, or with the "
                         f"token of `fleet node replace {cred.node}` to take the name back", 3) from e

    async def session(self, cred: Credential) -> None:
        outbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
        outbox.put_nowait(pb.AgentMessage(inventory=self.inventory()))

        async def requests() -> AsyncIterator[pb.AgentMessage]:
            while (msg := await outbox.get()) is not None:
                yield msg

        heartbeats: asyncio.Task[None] | None = None
        reports = asyncio.create_task(self._reports(outbox)) if self.supervisor else None
        md = (("authorization", f"Bearer {cred.secret}"), ("x-fleet-node", cred.node))
        async with self._channel() as ch:
            call = pbg.AgentStub(ch).Session(requests(), metadata=md)
            try:
                async for msg in call:
                    kind = msg.WhichOneof("kind")
                    if kind == "config":
                        interval = max(0.05, msg.config.heartbeat_interval_ms / 1000)
                        if heartbeats:
                            heartbeats.cancel()
                        heartbeats = asyncio.create_task(self._heartbeats(outbox, interval))
                        self.sessions_opened += 1
                        self.ever_connected = True
                        self.connected.set()
                        log.info("connected to the controller at %s as node %s", self.controller, cred.node)
                    elif kind == "desired":
                        if self.supervisor is None:
                            outbox.put_nowait(pb.AgentMessage(replicas=pb.ReplicaReport(
                                applied_generation=msg.desired.generation)))
                        else:
                            self.supervisor.apply(msg.desired)  # its change event sends the report
                    elif kind == "logs":
                        self._logs(msg.logs, outbox)
            finally:
                for task in (heartbeats, reports):
                    if task:
                        task.cancel()
                outbox.put_nowait(None)

    def _logs(self, req: pb.LogRequest, outbox: asyncio.Queue[pb.AgentMessage | None]) -> None:
        if req.cancel:
            task = self.log_tasks.pop(req.request_id, None)
            if task:
                task.cancel()
            return

        def send(data: bytes, eof: bool, error: str) -> None:
            outbox.put_nowait(pb.AgentMessage(log=pb.LogData(request_id=req.request_id, data=data, eof=eof,
                                                             error=error)))

        replica = self.supervisor.replicas.get(req.replica_id) if self.supervisor else None
        path = (replica.dir if replica else self.data_dir / "replicas" / req.replica_id) / "engine.log"
        task = asyncio.create_task(logs.stream(path, req.lines, req.follow, send))
        self.log_tasks[req.request_id] = task
        task.add_done_callback(lambda _t: self.log_tasks.pop(req.request_id, None))

    async def _reports(self, outbox: asyncio.Queue[pb.AgentMessage | None]) -> None:
        """Every replica state change reaches the controller as a full report (reconnect = resend)."""
        assert self.supervisor is not None
        self.supervisor.changed.set()
        while True:
            await self.supervisor.changed.wait()
            self.supervisor.changed.clear()
            outbox.put_nowait(pb.AgentMessage(replicas=self.supervisor.statuses()))
            self.supervisor.forget_stopped()

    async def _heartbeats(self, outbox: asyncio.Queue[pb.AgentMessage | None], interval: float) -> None:
        seq = 0
        while True:
            await asyncio.sleep(interval)
            seq += 1
            outbox.put_nowait(pb.AgentMessage(heartbeat=self.heartbeat(seq)))

    def heartbeat(self, seq: int) -> pb.Heartbeat:
        usage = self.usage() if self.usage else {g.uuid: (g.memory_used, g.utilization, g.temperature)
                                                 for g in self.probe.gpus}
        vm = psutil.virtual_memory()
        try:
            disk_free = psutil.disk_usage(self.probe.host.models_dir).free
        except OSError:
            disk_free = 0
        return pb.Heartbeat(seq=seq, ram_available=vm.available, disk_free=disk_free,
                            gpus=[pb.GpuUsage(uuid=u, memory_used=m, utilization=ut, temperature=t)
                                  for u, (m, ut, t) in usage.items()])
