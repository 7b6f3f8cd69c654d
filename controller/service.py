"""gRPC servicers: move data between the wire, the in-memory liveness state and the store."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from fleet.agent.trust import split_token
from fleet.controller.auth import Credentials, metadata_dict
from fleet.controller.desired import deployment_message, desired_set
from fleet.controller.drain import DrainPlan, Movable, plan_drain
from fleet.controller.errors import (
    AlreadyExists,
    FailedPrecondition,
    FleetError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from fleet.controller.liveness import Liveness
from fleet.controller.metrics import PLACEMENT_SECONDS
from fleet.controller.placing import Catalog, build_snapshot, catalog_for, deployment_request, plan_placement
from fleet.controller.reconcile import Reconciler, RepairSettings
from fleet.controller.store import DrainRow, GpuRow, NodeRow, Store
from fleet.controller.tokens import join_refusal
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

log = logging.getLogger("fleet.controller")

STATUS = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}

NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
MAX_GPUS = 64
MAX_STR = 256

R = TypeVar("R")


def rpc(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Map FleetError to its gRPC status once, for every unary method."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await fn(self, request, context)
        except FleetError as e:
            await context.abort(STATUS.get(type(e), grpc.StatusCode.INTERNAL), e.message)
            raise  # unreachable: abort raises

    return wrapper


@dataclass
class Settings:
    heartbeat_interval: float = 5.0
    offline_after: float = 15.0
    flush_interval: float = 1.0
    reschedule_after: float = 60.0  # an offline node's replicas move elsewhere after this grace
    drain_min_healthy: float = 5.0  # a drain's replacement serves this long before the old replica stops


def validate_node_name(name: str) -> str:
    name = name.strip().lower()
    if not NODE_NAME.match(name):
        raise InvalidArgument(
            f"invalid node name {name!r}: use 1-63 lowercase letters, digits, '-' or '.', starting and ending "
            "with a letter or digit (pass --name)"
        )
    return name


def validate_inventory(inv: pb.Inventory) -> None:
    if len(inv.gpus) > MAX_GPUS:
        raise InvalidArgument(f"inventory reports {len(inv.gpus)} GPUs; at most {MAX_GPUS} per node")
    strings = [inv.hostname, inv.models_dir, inv.agent_version, inv.gpu_probe]
    for g in inv.gpus:
        strings += [g.uuid, g.name, g.compute_capability, g.driver]
        if not g.uuid:
            raise InvalidArgument("inventory has a GPU without a UUID")
    for e in inv.engines:
        strings += [e.name, e.version, e.path]
    for k, v in inv.labels.items():
        strings += [k, v]
    if any(len(s) > MAX_STR * 4 for s in strings):
        raise InvalidArgument("inventory has a string longer than 1024 characters")
    if len({g.uuid for g in inv.gpus}) != len(inv.gpus):
        raise InvalidArgument("inventory lists the same GPU UUID twice")


def gpu_rows(node: str, inv: pb.Inventory) -> list[GpuRow]:
    return [
        GpuRow(uuid=g.uuid, node=node, index=g.index, name=g.name, memory_total=g.memory_total,
               memory_used=g.memory_used, compute_capability=g.compute_capability, driver=g.driver,
               utilization=g.utilization, temperature=g.temperature, declared=g.declared)
        for g in inv.gpus
    ]


class Controller:
    """Shared state of one controller process: store, liveness, open sessions, credentials."""

    def __init__(self, store: Store, settings: Settings, creds: Credentials) -> None:
        self.store = store
        self.settings = settings
        self.creds = creds
        self.liveness = Liveness()
        self.sessions: dict[str, asyncio.Queue[pb.ControllerMessage | None]] = {}
        self.started = time.time()
        self.reconciler = Reconciler(self, RepairSettings(min_healthy=settings.drain_min_healthy,
                                                          reschedule_after=settings.reschedule_after))
        self.data_dir: Path | None = None  # set by main; user-added catalog models live in DATA_DIR/catalog
        self._catalog: tuple[tuple[float, ...], Catalog] | None = None
        self.log_waiters: dict[int, asyncio.Queue[pb.LogData]] = {}
        self.next_log_request = 1
        # A restarted controller gives every node it believed alive a full timeout to reconnect.
        for row in store.nodes():
            self.creds.node_hashes[row.name] = row.credential_hash
            if row.alive:
                self.liveness.last_seen[row.name] = self.started
                self.liveness.alive.add(row.name)

    # ---- jobs (run by the scheduler)
    def flush(self) -> None:
        beats, usage = self.liveness.drain_batch()
        self.store.flush_heartbeats(beats, usage)

    def check_liveness(self) -> None:
        now = time.time()
        for name in self.liveness.expire(now, self.settings.offline_after):
            log.warning("node %s is offline: no heartbeat for %.0f s", name, self.settings.offline_after)
            self.flush()
            self.store.set_alive(name, False, now)

    # ---- views
    def node_state(self, row: NodeRow) -> str:
        return row.admin_state if row.name in self.liveness.alive else "offline"

    def node_message(self, row: NodeRow, gpus: list[GpuRow], reserved: dict[str, int]) -> pb.Node:
        inv = pb.Inventory()
        json_format.Parse(row.inventory or "{}", inv, ignore_unknown_fields=True)
        views = []
        for g in gpus:
            used, util, temp = self.liveness.gpu_usage.get(g.uuid, (g.memory_used, g.utilization, g.temperature))
            views.append(pb.GpuView(
                gpu=pb.Gpu(uuid=g.uuid, index=g.index, name=g.name, memory_total=g.memory_total, memory_used=used,
                           compute_capability=g.compute_capability, driver=g.driver, utilization=util,
                           temperature=temp, declared=g.declared),
                memory_reserved=reserved.get(g.uuid, 0),
            ))
        return pb.Node(
            name=row.name, state=self.node_state(row), inventory=inv, gpus=views,
            last_heartbeat=max(row.last_heartbeat, self.liveness.last_seen.get(row.name, 0.0)),
            registered_at=row.registered_at, cordon_reason=row.cordon_reason, cordoned_by=row.cordoned_by,
            cordoned_at=row.cordoned_at,
        )

    def catalog(self) -> Catalog:
        """The catalog, re-read only when an operator added a model (a catalog folder changed)."""
        import os

        dirs = [d for d in ((self.data_dir / "catalog") if self.data_dir else None,
                            Path(os.environ.get("FLEET_CATALOG_DIR") or Path.home() / ".local/share/fleet/catalog"))
                if d is not None]
        stamp = tuple(d.stat().st_mtime if d.is_dir() else 0.0 for d in dirs)
        if self._catalog is None or self._catalog[0] != stamp:
            self._catalog = (stamp, catalog_for(self.data_dir))
        return self._catalog[1]

    def drain_plan(self, nodes: list[str]) -> DrainPlan:
        """Every move a drain of `nodes` would make, decided on a copy of the fleet (changes nothing)."""
        snapshot = build_snapshot(self.store, self.states(), self.liveness.gpu_usage)
        deps = {d.name: d for d in self.store.deployments()}
        movables = []
        for r in self.store.replicas():
            if r.node in nodes and r.desired == "run" and r.deployment in deps and deps[r.deployment].state == "active":
                request = deployment_request(deps[r.deployment], self.catalog(), snapshot)
                movables.append(Movable(r.id, r.deployment, request))
        return plan_drain(snapshot, nodes, movables)

    def states(self) -> dict[str, str]:
        return {row.name: self.node_state(row) for row in self.store.nodes()}

    def reserved_by_gpu(self) -> dict[str, int]:
        return self.store.reserved_by_gpu()

    # ---- desired state
    def desired_for(self, node: str) -> pb.DesiredReplicas:
        row = self.store.get_node(node)
        deployments = {d.name: d for d in self.store.deployments()}
        replicas = self.store.replicas(node=node)
        ids = {r.id for r in replicas}
        reservations = [x for x in self.store.reservations() if x.replica in ids]
        return desired_set(row.generation if row else 0, replicas, deployments, reservations)

    def push(self, nodes: set[str] | list[str]) -> None:
        """Send each connected node its complete desired set; a node not connected gets it on reconnect."""
        for node in nodes:
            queue = self.sessions.get(node)
            if queue is not None:
                queue.put_nowait(pb.ControllerMessage(desired=self.desired_for(node)))

    def apply_report(self, node: str, report: pb.ReplicaReport) -> None:
        statuses = [(r.id, r.state, r.endpoint, r.message[:4000], r.restarts) for r in report.replicas[:256]]
        done = set(self.store.update_replicas(node, statuses))
        row = self.store.get_node(node)
        if row is not None and report.applied_generation >= row.generation:
            # The agent has applied the newest set: whatever it was told to stop and no longer runs is gone.
            running = {r.id for r in report.replicas if r.state not in ("stopped",)}
            done |= {r.id for r in self.store.replicas(node=node) if r.desired == "stop" and r.id not in running}
        self.store.forget_replicas(sorted(done))

    def deployment_message(self, name: str) -> pb.Deployment:
        dep = self.store.get_deployment(name)
        if dep is None:
            names = ", ".join(d.name for d in self.store.deployments()) or "none"
            raise NotFound(f"no deployment named {name!r}; deployments: {names}")
        replicas = self.store.replicas(deployment=name)
        ids = {r.id for r in replicas}
        return deployment_message(dep, replicas, [x for x in self.store.reservations() if x.replica in ids])

    def node_messages(self) -> list[pb.Node]:
        gpus: dict[str, list[GpuRow]] = {}
        for g in self.store.gpus():
            gpus.setdefault(g.node, []).append(g)
        reserved = self.reserved_by_gpu()
        return [self.node_message(r, gpus.get(r.name, []), reserved) for r in self.store.nodes()]


class AgentService(pbg.AgentServicer):
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    @rpc
    async def Register(self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext) -> pb.RegisterResponse:
        secret = split_token(request.join_token[:MAX_STR])[0]
        if not secret or not self.ctl.store.token_valid("join", secret):
            log.warning("refused a join with a wrong or expired token from %s", context.peer())
            raise Unauthenticated(join_refusal(self.ctl.store, secret, time.time())
                                  or "join token rejected: use the token in the controller's DATA_DIR/join-token")
        name = validate_node_name(request.name or request.inventory.hostname)
        validate_inventory(request.inventory)
        existing = self.ctl.store.get_node(name)
        if existing is not None and name in self.ctl.liveness.alive and name in self.ctl.sessions:
            raise AlreadyExists(f"node {name!r} is online with another credential; choose another --name")
        credential = secrets.token_urlsafe(32)
        now = time.time()
        self.ctl.store.register_node(name, credential, json_format.MessageToJson(request.inventory), now)
        self.ctl.store.save_inventory(name, json_format.MessageToJson(request.inventory),
                                      gpu_rows(name, request.inventory), now)
        self.ctl.creds.node_hashes[name] = self.ctl.store.credential_hashes()[name]
        log.info("node %s joined with %d GPUs", name, len(request.inventory.gpus))
        return pb.RegisterResponse(node_name=name, credential=credential)

    async def Session(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ControllerMessage]:
        node = metadata_dict(context.invocation_metadata()).get("x-fleet-node", "")
        queue: asyncio.Queue[pb.ControllerMessage | None] = asyncio.Queue()
        old = self.ctl.sessions.get(node)
        if old is not None:
            old.put_nowait(None)  # one session per node: the newest wins
        self.ctl.sessions[node] = queue

        try:
            try:
                first = await anext(aiter(request_iterator), None)
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                raise
            except Exception:  # undecodable first message
                first = None
            if first is None or first.WhichOneof("kind") != "inventory":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a session must start with the inventory")
            try:
                validate_inventory(first.inventory)
            except InvalidArgument as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
            self._inventory(node, first.inventory)
            yield pb.ControllerMessage(config=pb.SessionConfig(
                heartbeat_interval_ms=int(self.ctl.settings.heartbeat_interval * 1000)))
            yield pb.ControllerMessage(desired=self.ctl.desired_for(node))

            reader = asyncio.create_task(self._read(node, request_iterator, queue))
            try:
                while True:
                    msg = await queue.get()
                    if msg is None:
                        break
                    yield msg
            finally:
                reader.cancel()
        finally:
            if self.ctl.sessions.get(node) is queue:
                del self.ctl.sessions[node]

    def _inventory(self, node: str, inv: pb.Inventory) -> None:
        now = time.time()
        came_back = self.ctl.liveness.beat(node, now, [(g.uuid, g.memory_used, g.utilization, g.temperature)
                                                        for g in inv.gpus])
        self.ctl.store.save_inventory(node, json_format.MessageToJson(inv), gpu_rows(node, inv), now)
        if came_back:
            self.ctl.store.set_alive(node, True, now)
        log.info("node %s connected (%d GPUs, probe %s)", node, len(inv.gpus), inv.gpu_probe or "?")

    async def _read(self, node: str, request_iterator: AsyncIterator[pb.AgentMessage],
                    queue: asyncio.Queue[pb.ControllerMessage | None]) -> None:
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("kind")
                if kind == "heartbeat":
                    hb = msg.heartbeat
                    if self.ctl.liveness.beat(node, time.time(), [(u.uuid, u.memory_used, u.utilization,
                                                                   u.temperature) for u in hb.gpus[:MAX_GPUS]]):
                        self.ctl.store.set_alive(node, True, time.time())
                elif kind == "inventory":
                    validate_inventory(msg.inventory)
                    self._inventory(node, msg.inventory)
                elif kind == "replicas":
                    self.ctl.apply_report(node, msg.replicas)
                elif kind == "log":
                    waiter = self.ctl.log_waiters.get(msg.log.request_id)
                    if waiter is not None:
                        waiter.put_nowait(msg.log)
        except (grpc.aio.AioRpcError, asyncio.CancelledError, InvalidArgument):
            pass
        except Exception as e:  # an unreadable message from a node: end its session, keep the controller quiet
            log.warning("node %s sent an unreadable message (%s); closing its session", node, type(e).__name__)
        finally:
            queue.put_nowait(None)


class FleetService(pbg.FleetServicer):
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    @rpc
    async def ListNodes(self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext) -> pb.ListNodesResponse:
        return pb.ListNodesResponse(nodes=self.ctl.node_messages())

    @rpc
    async def DescribeNode(self, request: pb.DescribeNodeRequest,
                           context: grpc.aio.ServicerContext) -> pb.DescribeNodeResponse:
        row = self.ctl.store.get_node(request.name)
        if row is None:
            names = ", ".join(n.name for n in self.ctl.store.nodes()) or "none yet"
            raise NotFound(f"no node named {request.name!r}; nodes: {names}")
        node = self.ctl.node_message(row, self.ctl.store.gpus(row.name), self.ctl.reserved_by_gpu())
        return pb.DescribeNodeResponse(node=node)

    @rpc
    async def Capacity(self, request: pb.CapacityRequest, context: grpc.aio.ServicerContext) -> pb.CapacityResponse:
        nodes = self.ctl.node_messages()
        gpus = [g for n in nodes for g in n.gpus]
        total = sum(g.gpu.memory_total for g in gpus)
        reserved = sum(g.memory_reserved for g in gpus)
        return pb.CapacityResponse(
            nodes=nodes, gpu_count=len(gpus), vram_total=total, vram_reserved=reserved,
            vram_free=max(0, total - reserved),
            ram_total=sum(n.inventory.ram_total for n in nodes),
            disk_free=sum(n.inventory.disk_free for n in nodes),
        )

    @rpc
    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        lv = self.ctl.liveness
        return pb.StatsResponse(heartbeats_total=lv.beats_total, sessions_open=len(self.ctl.sessions),
                                uptime=time.time() - self.ctl.started, nodes=len(self.ctl.creds.node_hashes),
                                nodes_alive=len(lv.alive))

    @rpc
    async def ListDeployments(self, request: pb.ListDeploymentsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListDeploymentsResponse:
        return pb.ListDeploymentsResponse(deployments=[self.ctl.deployment_message(d.name)
                                                       for d in self.ctl.store.deployments()])

    @rpc
    async def DescribeDeployment(self, request: pb.DescribeDeploymentRequest,
                                 context: grpc.aio.ServicerContext) -> pb.DescribeDeploymentResponse:
        return pb.DescribeDeploymentResponse(deployment=self.ctl.deployment_message(request.name))

    @rpc
    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        _, nodes = self.ctl.store.mark_removing(request.name, time.time())
        # Replicas no agent ever started (still pending) hold nothing running: free them now.
        self.ctl.store.forget_replicas([r.id for r in self.ctl.store.replicas(deployment=request.name)
                                        if r.state == "pending"])
        self.ctl.push(nodes)
        dep = self.ctl.store.get_deployment(request.name)
        if dep is None:
            return pb.RemoveResponse(deployment=pb.Deployment(name=request.name, state="removed"))
        return pb.RemoveResponse(deployment=self.ctl.deployment_message(request.name))

    @rpc
    async def Cordon(self, request: pb.CordonRequest, context: grpc.aio.ServicerContext) -> pb.CordonResponse:
        md = metadata_dict(context.invocation_metadata())
        who = md.get("x-fleet-user", "")[:64] or "admin"
        if request.uncordon and (drain := self.ctl.store.get_drain(request.name)) and drain.state == "active":
            drain.state, drain.message = "cancelled", f"uncordoned by {who}"
            self.ctl.store.save_drain(drain)
        row = self.ctl.store.set_cordon(request.name, not request.uncordon, request.reason[:MAX_STR], who, time.time())
        return pb.CordonResponse(node=self.ctl.node_message(row, self.ctl.store.gpus(row.name),
                                                            self.ctl.reserved_by_gpu()))

    async def Logs(self, request: pb.LogsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.LogChunk]:
        replicas = self.ctl.store.replicas(deployment=request.deployment)
        if self.ctl.store.get_deployment(request.deployment) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no deployment named {request.deployment!r}")
        pick = [r for r in replicas if request.replica < 0 or r.ordinal == request.replica]
        if not pick:
            ordinals = ", ".join(str(r.ordinal) for r in replicas) or "none"
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"{request.deployment} has no replica {request.replica}; replicas: {ordinals}")
        replica = pick[0]
        queue = self.ctl.sessions.get(replica.node)
        if queue is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"node {replica.node} is not connected; its logs are in the agent's data dir")
        rid = self.ctl.next_log_request
        self.ctl.next_log_request += 1
        waiter: asyncio.Queue[pb.LogData] = asyncio.Queue()
        self.ctl.log_waiters[rid] = waiter
        queue.put_nowait(pb.ControllerMessage(logs=pb.LogRequest(
            request_id=rid, replica_id=replica.id, lines=min(request.lines or 100, 10000), follow=request.follow)))
        try:
            while True:
                try:
                    data = await asyncio.wait_for(waiter.get(), timeout=None if request.follow else 30)
                except TimeoutError:
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"node {replica.node} sent no logs")
                if data.error:
                    await context.abort(grpc.StatusCode.NOT_FOUND, data.error)
                if data.data:
                    yield pb.LogChunk(replica_id=replica.id, node=replica.node, data=data.data)
                if data.eof:
                    return
        finally:
            del self.ctl.log_waiters[rid]
            if request.follow and (q := self.ctl.sessions.get(replica.node)) is not None:
                q.put_nowait(pb.ControllerMessage(logs=pb.LogRequest(request_id=rid, cancel=True)))

    @rpc
    async def Place(self, request: pb.PlaceRequest, context: grpc.aio.ServicerContext) -> pb.PlaceResponse:
        # No await between the snapshot and the commit: one controller never interleaves two placements,
        # and the commit re-checks GPU totals inside its transaction for any other writer.
        with PLACEMENT_SECONDS.time():
            resp, rows = plan_placement(self.ctl.store, self.ctl.catalog(), self.ctl.states(),
                                        self.ctl.liveness.gpu_usage, request, time.time())
            if rows is None:
                return resp
            dep, replicas, reservations = rows
            if request.dry_run:
                resp.deployment.CopyFrom(deployment_message(dep, replicas, reservations))
                return resp
            self.ctl.store.commit_placement(dep, replicas, reservations, time.time())
        log.info("placed %s: %s", dep.name, resp.summary)
        self.ctl.push({r.node for r in replicas})
        resp.deployment.CopyFrom(self.ctl.deployment_message(dep.name))
        return resp

    @rpc
    async def Drain(self, request: pb.DrainRequest, context: grpc.aio.ServicerContext) -> pb.DrainResponse:
        store, now = self.ctl.store, time.time()
        names = list(dict.fromkeys(request.nodes))[:64]
        if not names:
            raise InvalidArgument("name the node(s) to drain")
        for name in names:
            if store.get_node(name) is None:
                raise NotFound(f"no node named {name!r}; nodes: {', '.join(n.name for n in store.nodes()) or 'none'}")
        who = metadata_dict(context.invocation_metadata()).get("x-fleet-user", "")[:64] or "admin"
        if request.cancel:
            for name in names:
                drain = store.get_drain(name)
                if drain is not None and drain.state == "active":
                    drain.state, drain.message = "cancelled", f"cancelled by {who}"
                    store.save_drain(drain)
                    store.set_admin_state(name, "cordoned", now)  # stays cordoned; uncordon to reuse it
            return self._drain_statuses(names)
        if request.status_only:
            return self._drain_statuses(names)
        plan = self.ctl.drain_plan(names)
        if request.dry_run:
            return self._drain_statuses(names, plan, planned=True)
        # every node is cordoned before any replica moves, so no move lands on a node about to drain
        for name in names:
            store.set_admin_state(name, "draining", now, request.reason[:MAX_STR], who)
        for name in names:
            store.save_drain(DrainRow(node=name, state="active", started_at=now, force=request.force,
                                      deadline=now + request.deadline_seconds if request.deadline_seconds > 0 else 0.0,
                                      reason=request.reason[:MAX_STR], by=who, message="starting"))
        log.info("draining %s (by %s)", ", ".join(names), who)
        self.ctl.reconciler.tick()
        return self._drain_statuses(names, plan)

    def _drain_statuses(self, names: list[str], plan: DrainPlan | None = None,
                        planned: bool = False) -> pb.DrainResponse:
        out = []
        replicas = self.ctl.store.replicas()
        node_of = {r.id: r.node for r in replicas}
        rows = {n.name: n for n in self.ctl.store.nodes()}
        for name in names:
            drain = self.ctl.store.get_drain(name)
            status = pb.DrainStatus(
                node=name, state="planned" if planned else (drain.state if drain else "none"),
                message="" if planned or drain is None else drain.message,
                remaining=sum(1 for r in replicas if r.node == name),
                node_state=self.ctl.node_state(rows[name]) if name in rows else "")
            if plan is not None:
                status.moves.extend(pb.DrainMove(replica=m.replica, deployment=m.deployment, to_node=m.placement.node,
                                                 gpus=list(m.placement.gpus))
                                    for m in plan.moves if node_of.get(m.replica) == name)
                status.blocked.extend(pb.DrainBlocked(replica=b.replica, deployment=b.deployment, reason=b.reason)
                                      for b in plan.blocked if node_of.get(b.replica) == name)
            out.append(status)
        return pb.DrainResponse(drains=out)

    @rpc
    async def Plan(self, request: pb.PlanRequest, context: grpc.aio.ServicerContext) -> pb.PlanResponse:
        from functools import partial

        from fleet.controller.demand import options_for
        from fleet.controller.whatif import parse_requests, plan

        if len(request.requests_json) > 1_000_000:
            raise InvalidArgument("REQUESTS.json is larger than 1 MB")
        try:
            data = json.loads(request.requests_json)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"REQUESTS.json is not valid JSON: {e.msg} at line {e.lineno}") from None
        except RecursionError:
            raise InvalidArgument("REQUESTS.json is nested too deeply") from None
        snapshot = build_snapshot(self.ctl.store, self.ctl.states(), self.ctl.liveness.gpu_usage)
        result = plan(snapshot, parse_requests(data), partial(options_for, catalog=self.ctl.catalog()))
        return pb.PlanResponse(result_json=json.dumps(result.as_json()))
