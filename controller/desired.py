"""What each node is told to run: the complete replica set, from the store's rows (no I/O here)."""

from __future__ import annotations

import json

from fleet.controller.store import DeploymentRow, ReplicaRow, ReservationRow
from fleet.proto import fleet_pb2 as pb


def replica_spec(r: ReplicaRow, dep: DeploymentRow, res: list[ReservationRow]) -> pb.ReplicaSpec:
    res = sorted(res, key=lambda x: x.gpu_index)
    total = sum(x.bytes for x in res) or 1
    return pb.ReplicaSpec(
        id=r.id, deployment=dep.name, model=dep.model, quant=dep.quant, engine=dep.engine,
        gpu_uuids=[x.gpu_uuid for x in res], context=dep.context, tp=r.tp,
        reserved_bytes=[x.bytes for x in res], gpu_memory_utilization=r.gpu_memory_utilization,
        source=dep.source, file=dep.file, api_key=r.api_key,
        # llama.cpp splits layers by these proportions; equal reservations give an even split
        tensor_split=[round(x.bytes / total, 4) for x in res] if len(res) > 1 else [],
        kv_cache_bytes=r.kv_cache_bytes, ram_bytes=r.ram_bytes, device=dep.device,
    )


def desired_set(generation: int, replicas: list[ReplicaRow], deployments: dict[str, DeploymentRow],
                reservations: list[ReservationRow]) -> pb.DesiredReplicas:
    by_replica: dict[str, list[ReservationRow]] = {}
    for x in reservations:
        by_replica.setdefault(x.replica, []).append(x)
    specs = [replica_spec(r, deployments[r.deployment], by_replica.get(r.id, []))
             for r in replicas if r.desired == "run" and r.deployment in deployments]
    return pb.DesiredReplicas(generation=generation, replicas=specs)


def estimate_message(estimate_json: str) -> pb.Estimate:
    e = json.loads(estimate_json or "{}")
    return pb.Estimate(**{k: int(e.get(k, 0)) for k in ("weights", "kv_cache", "activations", "runtime", "total")})


def deployment_message(dep: DeploymentRow, replicas: list[ReplicaRow],
                       reservations: list[ReservationRow]) -> pb.Deployment:
    by_replica: dict[str, list[ReservationRow]] = {}
    for x in reservations:
        by_replica.setdefault(x.replica, []).append(x)
    return pb.Deployment(
        name=dep.name, model=dep.model, quant=dep.quant, engine=dep.engine, context=dep.context,
        replicas_wanted=dep.replicas_wanted, created_at=dep.created_at, device=dep.device, strategy=dep.strategy,
        state=dep.state, estimate=estimate_message(dep.estimate), tp=dep.tp, source=dep.source, why=dep.why,
        replicas=[pb.Replica(
            id=r.id, deployment=r.deployment, ordinal=r.ordinal, node=r.node,
            gpus=[pb.Reservation(gpu_uuid=x.gpu_uuid, gpu_index=x.gpu_index, bytes=x.bytes)
                  for x in sorted(by_replica.get(r.id, []), key=lambda x: x.gpu_index)],
            state=r.state, endpoint=r.endpoint, api_key=r.api_key, gpu_memory_utilization=r.gpu_memory_utilization,
            tp=r.tp, message=r.message, restarts=r.restarts, ram_bytes=r.ram_bytes,
        ) for r in replicas],
    )
