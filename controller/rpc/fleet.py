"""The Fleet service (the CLI's verbs): parse and bound the request, call one use case, answer."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Mapping

import grpc

from fleet.controller.app import capacity, deployments, drain, events, logs, nodes, observed, place, status
from fleet.controller.app.controller import Controller
from fleet.controller.app.paging import MAX_PAGE
from fleet.controller.core.errors import FleetError, InvalidArgument
from fleet.controller.core.observed import Key
from fleet.controller.core.whatif import parse_requests
from fleet.controller.rpc import convert
from fleet.controller.rpc.auth import metadata_dict
from fleet.controller.rpc.status import rpc, status_of
from fleet.controller.rpc.validate import MAX_STR, validate_observed, validate_place
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

MAX_REQUESTS_JSON = 1_000_000


def _page_size(asked: int) -> int:
    """0 (older CLIs) is everything in one answer; anything else is capped so an answer stays small."""
    return min(asked, MAX_PAGE) if asked else 0


def _who(context: grpc.aio.ServicerContext) -> str:
    """Who is at the keyboard (the CLI sends user@host), recorded with cordons and drains."""
    return metadata_dict(context.invocation_metadata()).get("x-fleet-user", "")[:64] or "admin"


class FleetService(pbg.FleetServicer):
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    @rpc
    async def ListNodes(self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext) -> pb.ListNodesResponse:
        size = _page_size(request.page_size)
        views = capacity.node_views(self.ctl, request.page_token[:MAX_STR], size)
        return pb.ListNodesResponse(nodes=[convert.node_message(v) for v in views],
                                    next_page_token=self._next(views, size, self.ctl.store.mirror.nodes))

    @rpc
    async def DescribeNode(self, request: pb.DescribeNodeRequest,
                           context: grpc.aio.ServicerContext) -> pb.DescribeNodeResponse:
        view = capacity.node_view(self.ctl, request.name[:MAX_STR])
        return pb.DescribeNodeResponse(node=convert.node_message(view, self.ctl.store.node_events(view.name)))

    @rpc
    async def Capacity(self, request: pb.CapacityRequest, context: grpc.aio.ServicerContext) -> pb.CapacityResponse:
        size = _page_size(request.page_size)
        views = capacity.node_views(self.ctl, request.page_token[:MAX_STR], size)
        # with the first page only; added up in a thread (80,000 GPUs at 10,000 nodes)
        totals = None if request.page_token else await asyncio.to_thread(capacity.fleet_totals(self.ctl))
        # the largest variant that fits: planned once, with the first page (it reads the whole fleet)
        fits = place.largest(self.ctl) if request.largest and not request.page_token else []
        resp = convert.capacity_message(views, totals, fits)
        resp.next_page_token = self._next(views, size, self.ctl.store.mirror.nodes)
        return resp

    @staticmethod
    def _next(views: list[capacity.NodeView] | list[deployments.DeploymentRows], size: int,
              every: Mapping[str, object]) -> str:
        if not size or len(views) < size:
            return ""
        last = views[-1].name if isinstance(views[-1], capacity.NodeView) else views[-1].deployment.name
        return last if any(name > last for name in every) else ""

    @rpc
    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        lv = self.ctl.liveness
        return pb.StatsResponse(heartbeats_total=lv.beats_total, sessions_open=len(self.ctl.sessions),
                                uptime=time.time() - self.ctl.started, nodes=len(self.ctl.store.mirror.nodes),
                                nodes_alive=len(self.ctl.alive), controller=self.ctl.id,
                                duties=self.ctl.lease.held())

    @rpc
    async def ListDeployments(self, request: pb.ListDeploymentsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListDeploymentsResponse:
        size = _page_size(request.page_size)
        shown = deployments.every(self.ctl, request.page_token[:MAX_STR], size)
        return pb.ListDeploymentsResponse(deployments=[convert.deployment_message(d) for d in shown],
                                          next_page_token=self._next(shown, size, self.ctl.store.mirror.deployments))

    @rpc
    async def DescribeDeployment(self, request: pb.DescribeDeploymentRequest,
                                 context: grpc.aio.ServicerContext) -> pb.DescribeDeploymentResponse:
        return pb.DescribeDeploymentResponse(
            deployment=convert.deployment_message(deployments.get(self.ctl, request.name)))

    @rpc
    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        left = deployments.remove(self.ctl, request.name)
        if left is None:
            return pb.RemoveResponse(deployment=pb.Deployment(name=request.name, state="removed"))
        return pb.RemoveResponse(deployment=convert.deployment_message(left))

    @rpc
    async def Cordon(self, request: pb.CordonRequest, context: grpc.aio.ServicerContext) -> pb.CordonResponse:
        row = nodes.cordon(self.ctl, request.name, not request.uncordon, request.reason[:MAX_STR], _who(context))
        return pb.CordonResponse(node=convert.node_message(capacity.node_view(self.ctl, row.name)))

    async def Logs(self, request: pb.LogsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.LogChunk]:
        try:
            source = logs.pick_replica(self.ctl, request.deployment, request.replica, request.node[:MAX_STR])
            async for data in logs.stream(self.ctl, source, request.lines, request.follow):
                yield pb.LogChunk(replica_id=source.id, node=source.node, data=data)
        except FleetError as e:
            await context.abort(status_of(e), e.message)

    @rpc
    async def Place(self, request: pb.PlaceRequest, context: grpc.aio.ServicerContext) -> pb.PlaceResponse:
        validate_place(request)
        outcome = place.place_deployment(self.ctl, convert.place_args(request), time.time())
        shown = None
        if outcome.rows is not None:
            dep, replicas, reservations, parts = outcome.rows
            where = {r.node for r in replicas} | {p.node for p in parts}
            shown = (deployments.DeploymentRows(dep, replicas, reservations, parts=parts,
                                                gpu_nodes=deployments.gpu_nodes(self.ctl, where) if parts else {})
                     if request.dry_run else deployments.get(self.ctl, dep.name))
        return convert.place_response(outcome, request.explain, shown)

    @rpc
    async def Drain(self, request: pb.DrainRequest, context: grpc.aio.ServicerContext) -> pb.DrainResponse:
        names, now = list(request.nodes), time.time()
        if request.cancel:
            return convert.drain_response(drain.cancel(self.ctl, names, now, who=_who(context)))
        if request.status_only:
            return convert.drain_response(drain.status(self.ctl, names))
        return convert.drain_response(drain.start(
            self.ctl, names, now, who=_who(context), reason=request.reason, force=request.force,
            deadline_seconds=request.deadline_seconds, dry_run=request.dry_run))

    @rpc
    async def ListEvents(self, request: pb.ListEventsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListEventsResponse:
        since = request.since if math.isfinite(request.since) else 0.0
        rows = events.recent(self.ctl, request.node[:MAX_STR], request.deployment[:MAX_STR], since,
                             min(request.after_id, 2**63 - 1), request.limit)
        return pb.ListEventsResponse(events=[convert.event_message(e) for e in rows])

    @rpc
    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        return convert.status_message(status.summary(self.ctl))

    @rpc
    async def Plan(self, request: pb.PlanRequest, context: grpc.aio.ServicerContext) -> pb.PlanResponse:
        if len(request.requests_json) > MAX_REQUESTS_JSON:
            raise InvalidArgument("REQUESTS.json is larger than 1 MB")
        try:
            data = json.loads(request.requests_json)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"REQUESTS.json is not valid JSON: {e.msg} at line {e.lineno}") from None
        except RecursionError:
            raise InvalidArgument("REQUESTS.json is nested too deeply") from None
        result = place.what_if(self.ctl, parse_requests(data))
        return pb.PlanResponse(result_json=json.dumps(result.as_json()))

    @rpc
    async def Observed(self, request: pb.ObservedRequest, context: grpc.aio.ServicerContext) -> pb.ObservedResponse:
        """What replicas of one key really used (`fleet estimate` asks when a controller is configured)."""
        validate_observed(request)
        model = self.ctl.catalog().get(request.model)
        key = Key(model.name, request.quant, request.engine, request.gpu_type, request.tp or 1,
                           request.context)
        return convert.observed_response(observed.summary(self.ctl, key))
