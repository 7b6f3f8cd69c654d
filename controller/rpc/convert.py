"""Between the wire and the use cases: protobuf messages from rows and views, and plain values from requests.

No decisions and no I/O; every message the controller sends is built here.
"""

from __future__ import annotations

import json

from google.protobuf import json_format

from fleet.controller.app.capacity import NodeView, Totals
from fleet.controller.app.controller import AskLogs, DesiredRows, LogPiece, Outgoing, SendDesired
from fleet.controller.app.deployments import DeploymentRows
from fleet.controller.app.drain import DrainView
from fleet.controller.app.nodes import ReplicaStatus
from fleet.controller.app.place import ESTIMATE_TERMS, PlaceArgs, PlaceOutcome
from fleet.controller.app.status import Summary
from fleet.controller.core.events import event_type
from fleet.controller.core.largest import Fit
from fleet.controller.core.observed import Memory, Observed
from fleet.controller.core.parts import PartState, launches, role, tensor_split
from fleet.controller.core.placement import Plan
from fleet.controller.rpc.validate import MAX_GPUS, MAX_STR
from fleet.controller.store.schema import (
    DeploymentRow,
    EventRow,
    GpuRow,
    ObservationRow,
    PartRow,
    ReplicaRow,
    ReservationRow,
)
from fleet.proto import fleet_pb2 as pb

MAX_REPORTED_REPLICAS = 256
MAX_MESSAGE_TEXT = 4000
MAX_ADDRESS = 300  # host:port; a DNS name is at most 253 characters


# ---------------------------------------------------------------- agent -> controller


def gpu_rows(node: str, inv: pb.Inventory) -> list[GpuRow]:
    return [
        GpuRow(uuid=g.uuid, node=node, index=g.index, name=g.name, memory_total=g.memory_total,
               memory_used=g.memory_used, compute_capability=g.compute_capability, driver=g.driver,
               utilization=g.utilization, temperature=g.temperature, declared=g.declared)
        for g in inv.gpus
    ]


def inventory_json(inv: pb.Inventory) -> str:
    return json_format.MessageToJson(inv)


def memory(m: pb.ReplicaMemory) -> Memory:
    """An agent's measurement, bounded: at most MAX_GPUS GPUs, short strings."""
    return Memory(gpus=tuple((g.uuid[:MAX_STR], g.bytes) for g in m.gpus[:MAX_GPUS]), ram=m.ram, weights=m.weights,
                  kv_cache=m.kv_cache, activations=m.activations, runtime=m.runtime, total=m.total,
                  engine_version=m.engine_version[:MAX_STR], measured_at=m.measured_at)


def replica_statuses(report: pb.ReplicaReport) -> list[ReplicaStatus]:
    return [ReplicaStatus(r.id, r.state, r.endpoint, r.message[:MAX_MESSAGE_TEXT], r.restarts,
                          memory(r.memory) if r.HasField("memory") else None, address=r.address[:MAX_ADDRESS],
                          epoch=r.epoch)
            for r in report.replicas[:MAX_REPORTED_REPLICAS]]


def log_piece(data: pb.LogData) -> LogPiece:
    return LogPiece(data.data, data.eof, data.error)


# ---------------------------------------------------------------- controller -> agent


def replica_spec(r: ReplicaRow, dep: DeploymentRow, res: list[ReservationRow]) -> pb.ReplicaSpec:
    res = sorted(res, key=lambda x: x.gpu_index)
    total = sum(x.bytes for x in res) or 1
    rope = json.loads(dep.launch or "{}").get("rope") or {}
    return pb.ReplicaSpec(
        rope_scaling=str(rope.get("scaling", "")), rope_factor=float(rope.get("factor", 0.0)),
        rope_original_context=int(rope.get("original_context", 0)), rope_theta=float(rope.get("theta", 0.0)),
        id=r.id, deployment=dep.name, model=dep.model, quant=dep.quant, engine=dep.engine,
        gpu_uuids=[x.gpu_uuid for x in res], context=dep.context, tp=r.tp,
        reserved_bytes=[x.bytes for x in res], gpu_memory_utilization=r.gpu_memory_utilization,
        source=dep.source, file=dep.file, api_key=r.api_key,
        # llama.cpp splits layers by these proportions; equal reservations give an even split
        tensor_split=[round(x.bytes / total, 4) for x in res] if len(res) > 1 else [],
        kv_cache_bytes=r.kv_cache_bytes, ram_bytes=r.ram_bytes, device=dep.device,
    )


def gang_specs(r: ReplicaRow, dep: DeploymentRow, res: list[ReservationRow], parts: list[PartRow],
               gpu_nodes: dict[str, str], node: str) -> list[pb.ReplicaSpec]:
    """The specs `node` runs of a multi-node replica: its main (with the rpc-servers' addresses once they listen)
    or another part; who holds and who is told which address comes from the pure core (core/parts.py)."""
    mine = sorted(parts, key=lambda p: p.rank)
    on: dict[str, list[ReservationRow]] = {}
    for x in sorted(res, key=lambda x: x.gpu_index):
        on.setdefault(gpu_nodes.get(x.gpu_uuid, ""), []).append(x)
    cpu = dep.device == "cpu"
    states = [PartState(0, r.node, r.state, r.address, r.reported_epoch, r.restarts, len(on.get(r.node, [])) or 1)]
    states += [PartState(p.rank, p.node, p.state, p.address, p.epoch, p.restarts, len(on.get(p.node, [])) or 1)
               for p in mine]
    plan = {x.rank: x for x in launches(dep.engine, r.epoch, states)}
    nnodes = 1 + len(mine)
    out = []
    if r.node == node:
        spec = replica_spec(r, dep, on.get(r.node, []))
        launch = plan[0]
        if dep.engine == "llama.cpp":
            # llama.cpp puts the rpc-servers' devices first (by --rpc order), then its own GPUs.
            split = tensor_split([] if cpu else [x.bytes for x in on.get(r.node, [])],
                                 [[p.ram_bytes] if cpu else [x.bytes for x in on.get(p.node, [])] for p in mine])
            spec.tensor_split[:] = list(split) if len(split) > 1 else []
        spec.part.CopyFrom(pb.PartSpec(replica_id=r.id, rank=0, role="main", nnodes=nnodes, peers=list(launch.peers),
                                       hold=launch.hold, epoch=r.epoch, gpu_layers=r.gpu_layers,
                                       waiting_for=launch.waiting_for))
        out.append(spec)
    for p in mine:
        if p.node != node:
            continue
        launch = plan[p.rank]
        here = on.get(p.node, [])
        follower = dep.engine == "vllm"
        out.append(pb.ReplicaSpec(
            id=p.id, deployment=dep.name, model=dep.model, quant=dep.quant, engine=dep.engine,
            gpu_uuids=[x.gpu_uuid for x in here], context=dep.context, tp=r.tp, reserved_bytes=[x.bytes for x in here],
            gpu_memory_utilization=r.gpu_memory_utilization,
            # vLLM followers load their stage from their own copy; rpc-servers get tensors from the main.
            source=dep.source if follower else "", file=dep.file if follower else "",
            kv_cache_bytes=r.kv_cache_bytes if follower else 0, ram_bytes=p.ram_bytes, device=dep.device,
            part=pb.PartSpec(replica_id=r.id, rank=p.rank, role=role(dep.engine, p.rank), nnodes=nnodes,
                             master_address=launch.master_address, hold=launch.hold, epoch=r.epoch,
                             waiting_for=launch.waiting_for)))
    return out


def desired_set(rows: DesiredRows) -> pb.DesiredReplicas:
    by_replica: dict[str, list[ReservationRow]] = {}
    for x in rows.reservations:
        by_replica.setdefault(x.replica, []).append(x)
    parts: dict[str, list[PartRow]] = {}
    for p in rows.parts:
        parts.setdefault(p.replica, []).append(p)
    specs = []
    for r in rows.replicas:
        if r.desired != "run" or r.deployment not in rows.deployments:
            continue
        dep = rows.deployments[r.deployment]
        if r.nodes > 1:
            specs += gang_specs(r, dep, by_replica.get(r.id, []), parts.get(r.id, []), rows.gpu_nodes, rows.node)
        elif r.node == rows.node or not rows.node:
            specs.append(replica_spec(r, dep, by_replica.get(r.id, [])))
    return pb.DesiredReplicas(generation=rows.generation, replicas=specs)


def outgoing(item: Outgoing, desired: DesiredRows | None = None) -> pb.ControllerMessage:
    """One session item as its wire message; SendDesired needs the node's current desired rows."""
    if isinstance(item, SendDesired):
        assert desired is not None
        return pb.ControllerMessage(desired=desired_set(desired))
    assert isinstance(item, AskLogs)
    return pb.ControllerMessage(logs=pb.LogRequest(request_id=item.request_id, replica_id=item.replica_id,
                                                   lines=item.lines, follow=item.follow, cancel=item.cancel))


# ---------------------------------------------------------------- CLI answers


def estimate_message(estimate_json: str) -> pb.Estimate:
    e = json.loads(estimate_json or "{}")
    return pb.Estimate(**{k: int(e.get(k, 0)) for k in ESTIMATE_TERMS})


def observed_message(o: Observed | None) -> pb.ReplicaMemory | None:
    if o is None:
        return None
    return pb.ReplicaMemory(weights=o.weights, kv_cache=o.kv_cache, activations=o.activations, runtime=o.runtime,
                            total=o.total)


def observation_message(o: ObservationRow | None) -> pb.ReplicaMemory | None:
    if o is None:
        return None
    gpus = json.loads(o.gpus or "{}")
    return pb.ReplicaMemory(gpus=[pb.GpuMemoryUse(uuid=u, bytes=int(b)) for u, b in sorted(gpus.items())], ram=o.ram,
                            weights=o.weights, kv_cache=o.kv_cache, activations=o.activations, runtime=o.runtime,
                            total=o.total, engine_version=o.engine_version, measured_at=o.measured_at)


def _part_messages(r: ReplicaRow, engine: str, res: list[ReservationRow], parts: list[PartRow],
                   gpu_nodes: dict[str, str]) -> list[pb.ReplicaPart]:
    """Every part of a multi-node replica, the main first; a part's GPUs are the reserved ones on its node."""
    on: dict[str, list[pb.Reservation]] = {}
    for x in sorted(res, key=lambda x: x.gpu_index):
        on.setdefault(gpu_nodes.get(x.gpu_uuid, ""), []).append(
            pb.Reservation(gpu_uuid=x.gpu_uuid, gpu_index=x.gpu_index, bytes=x.bytes))
    main = pb.ReplicaPart(rank=0, node=r.node, role="main", gpus=on.get(r.node, []), ram_bytes=r.ram_bytes,
                          state=r.state, address=r.address, message=r.message, restarts=r.restarts, id=r.id)
    return [main] + [pb.ReplicaPart(rank=p.rank, node=p.node, role=role(engine, p.rank), gpus=on.get(p.node, []),
                                    ram_bytes=p.ram_bytes, state=p.state, address=p.address, message=p.message,
                                    restarts=p.restarts, id=p.id) for p in sorted(parts, key=lambda p: p.rank)]


def deployment_message(d: DeploymentRows) -> pb.Deployment:
    dep = d.deployment
    by_replica: dict[str, list[ReservationRow]] = {}
    for x in d.reservations:
        by_replica.setdefault(x.replica, []).append(x)
    reserved = max((x.bytes for x in d.reservations), default=max((r.ram_bytes for r in d.replicas), default=0))
    parts: dict[str, list[PartRow]] = {}
    for p in d.parts:
        parts.setdefault(p.replica, []).append(p)

    def replica(r: ReplicaRow) -> pb.Replica:
        res = by_replica.get(r.id, [])
        gang = r.nodes > 1
        main = [x for x in res if d.gpu_nodes.get(x.gpu_uuid, r.node) == r.node] if gang else res
        return pb.Replica(
            id=r.id, deployment=r.deployment, ordinal=r.ordinal, node=r.node,
            gpus=[pb.Reservation(gpu_uuid=x.gpu_uuid, gpu_index=x.gpu_index, bytes=x.bytes)
                  for x in sorted(main, key=lambda x: x.gpu_index)],
            state=r.state, endpoint=r.endpoint, api_key=r.api_key, gpu_memory_utilization=r.gpu_memory_utilization,
            tp=r.tp, message=r.message, restarts=r.restarts, ram_bytes=r.ram_bytes,
            observed=observation_message(d.observed.get(r.id)),
            over_reservation=bool(d.observed.get(r.id) and d.observed[r.id].over),
            parts=_part_messages(r, dep.engine, res, parts.get(r.id, []), d.gpu_nodes) if gang else [])

    return pb.Deployment(
        name=dep.name, model=dep.model, quant=dep.quant, engine=dep.engine, context=dep.context,
        replicas_wanted=dep.replicas_wanted, created_at=dep.created_at, device=dep.device, strategy=dep.strategy,
        state=dep.state, estimate=estimate_message(dep.estimate), tp=dep.tp, source=dep.source, why=dep.why,
        observed=observed_message(d.learned), observed_replicas=d.learned.replicas if d.learned else 0,
        reserved=reserved, launch_notes=list(json.loads(dep.launch or "{}").get("notes", [])),
        replicas=[replica(r) for r in d.replicas],
    )


UINT64 = 2**64 - 1


def _u64(n: int) -> int:
    # Edge validation bounds every reported size; sums over a large fleet still must never break a reply.
    return max(0, min(int(n), UINT64))


_INVENTORIES: dict[str, tuple[str, pb.Inventory]] = {}  # node -> (inventory JSON, parsed): parse once per report


def remember_inventory(name: str, inventory_json: str, inv: pb.Inventory) -> None:
    """The message an agent sent, kept beside its JSON: listing 10,000 nodes then parses none of them again."""
    if len(_INVENTORIES) > 100_000:
        _INVENTORIES.clear()
    kept = pb.Inventory()
    kept.CopyFrom(inv)
    _INVENTORIES[name] = (inventory_json, kept)


def inventory_message(name: str, inventory_json: str) -> pb.Inventory:
    cached = _INVENTORIES.get(name)
    if cached is None or cached[0] != inventory_json:
        inv = pb.Inventory()
        json_format.Parse(inventory_json or "{}", inv, ignore_unknown_fields=True)
        if len(_INVENTORIES) > 100_000:
            _INVENTORIES.clear()  # bounded; removed nodes' entries go with it
        cached = _INVENTORIES[name] = (inventory_json, inv)
    return cached[1]


# node -> (row, GPU views, state, message): a node whose row, GPU figures and state are the same objects as last
# time gets its message again with a fresh heartbeat time, instead of being built anew.
_NODES: dict[str, tuple[object, object, str, pb.Node]] = {}


def node_message(v: NodeView, events: list[EventRow] | None = None) -> pb.Node:
    cached = _NODES.get(v.row.name)
    if cached is not None and cached[0] is v.row and cached[1] is v.gpus and cached[2] == v.state:
        msg = pb.Node()
        msg.CopyFrom(cached[3])
    else:
        msg = _node_message(v)
        if len(_NODES) > 100_000:
            _NODES.clear()
        _NODES[v.row.name] = (v.row, v.gpus, v.state, msg)
        msg = pb.Node()
        msg.CopyFrom(_NODES[v.row.name][3])
    msg.last_heartbeat = v.last_heartbeat
    if events:
        msg.events.extend(pb.NodeEvent(at=e.at, kind=e.kind, message=e.message) for e in events)
    return msg


def _node_message(v: NodeView) -> pb.Node:
    inv = inventory_message(v.row.name, v.row.inventory)
    row = v.row
    return pb.Node(
        name=row.name, state=v.state, inventory=inv,
        registered_at=row.registered_at, cordon_reason=row.cordon_reason, cordoned_by=row.cordoned_by,
        cordoned_at=row.cordoned_at,
        gpus=[pb.GpuView(
            gpu=pb.Gpu(uuid=g.uuid, index=g.index, name=g.name, memory_total=g.memory_total, memory_used=g.memory_used,
                       compute_capability=g.compute_capability, driver=g.driver, utilization=g.utilization,
                       temperature=g.temperature, declared=g.declared),
            memory_reserved=g.memory_reserved, memory_used_by_others=g.memory_used_by_others,
            memory_free=g.memory_free,
        ) for g in v.gpus],
    )


def capacity_message(views: list[NodeView], t: Totals | None,
                     largest: list[Fit] | None = None) -> pb.CapacityResponse:
    resp = pb.CapacityResponse(nodes=[node_message(v) for v in views])
    if t is not None:
        resp.MergeFrom(pb.CapacityResponse(
            gpu_count=t.gpu_count, vram_total=_u64(t.vram_total), vram_reserved=_u64(t.vram_reserved),
            vram_free=_u64(t.vram_free), ram_total=_u64(t.ram_total), disk_free=_u64(t.disk_free),
            nodes_total=t.nodes, nodes_ready=t.nodes_ready))
    resp.largest.extend(pb.LargestFit(scope=f.scope, model=f.model, quant=f.quant, engine=f.engine,
                                      tp=f.placement.option.tp, nodes=list(f.placement.nodes), weights=_u64(f.weights),
                                      device=f.device) for f in largest or [])
    return resp


def place_args(req: pb.PlaceRequest) -> PlaceArgs:
    return PlaceArgs(model=req.model, quant=req.quant, engine=req.engine, replicas=req.replicas or 1,
                     context=req.context, tp=req.tp, node=req.node, gpu_type=req.gpu_type,
                     labels=tuple(sorted(req.labels.items())), device=req.device or "gpu",
                     strategy=req.strategy or "pack", name=req.name, max_moves=max(1, req.max_moves or 1),
                     dry_run=req.dry_run, explain=req.explain, trust_observed=req.trust_observed,
                     nodes=req.nodes)


def verdict_messages(plan: Plan) -> list[pb.NodeVerdict]:
    out = []
    for nv in plan.verdicts():
        v = nv.verdict
        out.append(pb.NodeVerdict(node=nv.node, feasible=v.shortfall is None and v.score is not None,
                                  reason=v.shortfall.message if v.shortfall else v.note, score=int(v.score or 0),
                                  gpus=list(v.gpus)))
    return out


def place_response(outcome: PlaceOutcome, explain: bool, deployment: DeploymentRows | None) -> pb.PlaceResponse:
    """Verdicts for every node only when asked (--explain) or when nothing fits: listing them costs time."""
    resp = pb.PlaceResponse(placed=outcome.placed, summary=outcome.summary, notes=list(outcome.notes))
    if outcome.plan is not None and (explain or not outcome.placed):
        resp.verdicts.extend(verdict_messages(outcome.plan))
    if deployment is not None:
        resp.deployment.CopyFrom(deployment_message(deployment))
    return resp


def event_message(e: EventRow) -> pb.Event:
    return pb.Event(id=e.id or 0, at=e.at, kind=e.kind, type=event_type(e.kind), node=e.node,
                    deployment=e.deployment, message=e.message)


def status_message(s: Summary) -> pb.StatusResponse:
    return pb.StatusResponse(
        nodes=s.nodes, nodes_declared=s.nodes_declared, gpu_count=s.gpu_count, gpus_free=s.gpus_free,
        vram_total=s.vram_total, vram_reserved=s.vram_reserved, vram_free=s.vram_free, deployments=s.deployments,
        deployments_serving=s.deployments_serving, deployments_degraded=s.deployments_degraded,
        deployments_down=s.deployments_down, deployments_declared=s.deployments_declared,
        replicas_wanted=s.replicas_wanted, replicas_serving=s.replicas_serving,
        drains=drain_response(s.drains).drains, warnings=[event_message(e) for e in s.warnings], uptime=s.uptime)


def drain_response(views: list[DrainView]) -> pb.DrainResponse:
    return pb.DrainResponse(drains=[pb.DrainStatus(
        node=v.node, state=v.state, message=v.message, remaining=v.remaining, node_state=v.node_state,
        deadline=v.deadline, started_at=v.started_at, force=v.force,
        moves=[pb.DrainMove(replica=r, deployment=d, to_node=n, gpus=list(g)) for r, d, n, g in v.moves],
        blocked=[pb.DrainBlocked(replica=r, deployment=d, reason=why) for r, d, why in v.blocked],
    ) for v in views])


def observed_response(o: Observed | None) -> pb.ObservedResponse:
    if o is None:
        return pb.ObservedResponse(replicas=0)
    return pb.ObservedResponse(replicas=o.replicas, memory=observed_message(o), engine_versions=list(o.engine_versions),
                               gpu_types=list(o.gpu_types))
