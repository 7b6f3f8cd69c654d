"""The Place RPC's shell: snapshot the store, ask the pure core, commit the plan in one transaction.

Nothing here decides: demand (options from the estimator) and placement (where) are pure; this
module only moves data between them, the store and the wire.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from pathlib import Path
from typing import Any

from fleet.controller.catalog import Catalog, Model, load_catalog
from fleet.controller.demand import options_for
from fleet.controller.errors import AlreadyExists, InvalidArgument
from fleet.controller.estimate import Estimate, estimate
from fleet.controller.gpus import GpuType, gpu_type
from fleet.controller.placement import Option, Placement, PlacementRequest, Plan, place
from fleet.controller.snapshot import GpuState, NodeState, Snapshot
from fleet.controller.store import DeploymentRow, ReplicaRow, ReservationRow, Store
from fleet.proto import fleet_pb2 as pb

NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
MAX_REPLICAS = 64


def catalog_for(data_dir: Path | None) -> Catalog:
    """The shipped catalog plus models operators added (DATA_DIR/catalog and the CLI's default folder)."""
    import os

    extra = [Path(os.environ.get("FLEET_CATALOG_DIR") or Path.home() / ".local/share/fleet/catalog")]
    if data_dir is not None:
        extra.insert(0, data_dir / "catalog")
    return load_catalog([d for d in extra if d.is_dir()])


def build_snapshot(store: Store, states: dict[str, str], gpu_usage: dict[str, tuple[int, int, int]]) -> Snapshot:
    """A frozen picture of the fleet: reservations from the store, liveness and GPU usage from memory."""
    reserved = store.reserved_by_gpu()
    gpus: dict[str, list[Any]] = {}
    for g in store.gpus():
        gpus.setdefault(g.node, []).append(g)
    replicas: dict[str, list[ReplicaRow]] = {}
    for r in store.replicas():
        replicas.setdefault(r.node, []).append(r)
    nodes = []
    for row in store.nodes():
        inv = json.loads(row.inventory or "{}")
        ram_total = int(inv.get("ramTotal", 0))
        ram_reserved = sum(r.ram_bytes for r in replicas.get(row.name, []))
        gpu_states = []
        for g in gpus.get(row.name, []):
            used = gpu_usage.get(g.uuid, (g.memory_used,))[0]
            held = reserved.get(g.uuid, 0)
            gpu_states.append(GpuState(uuid=g.uuid, index=g.index, name=g.name, memory_total=g.memory_total,
                                       memory_reserved=held, memory_used_other=max(0, used - held),
                                       compute_capability=g.compute_capability))
        nodes.append(NodeState(
            name=row.name, state=states.get(row.name, "offline"), gpus=tuple(gpu_states), ram_total=ram_total,
            ram_free=max(0, min(int(inv.get("ramAvailable", 0)), ram_total - ram_reserved)),
            disk_free=int(inv.get("diskFree", 0)),
            engines=frozenset(e["name"] for e in inv.get("engines", []) if e.get("name")),
            labels=tuple(sorted((inv.get("labels") or {}).items())),
            deployments=frozenset(r.deployment for r in replicas.get(row.name, [])),
            replica_count=len(replicas.get(row.name, [])),
        ))
    return Snapshot(tuple(nodes))


def gpu_types_in(snapshot: Snapshot) -> list[GpuType]:
    """The distinct kinds of GPU in the fleet, as the estimator needs them (table entry or as reported)."""
    seen: dict[tuple[str, int, str], GpuType] = {}
    for n in snapshot.nodes:
        for g in n.gpus:
            key = (g.name, g.memory_total, g.compute_capability)
            if key in seen:
                continue
            try:
                known = gpu_type(g.name)
                vendor = known.vendor
            except KeyError:
                vendor = "nvidia" if g.compute_capability else "amd"
            seen[key] = GpuType(name=g.name, memory_bytes=g.memory_total, compute_capability=g.compute_capability,
                                vendor=vendor)
    return sorted(seen.values(), key=lambda t: (t.name, t.memory_bytes))


def validate(req: pb.PlaceRequest) -> None:
    if not req.model or len(req.model) > 200:
        raise InvalidArgument("name a model (see `fleet models`)")
    if req.name and not NAME.match(req.name):
        raise InvalidArgument(f"invalid deployment name {req.name!r}: 1-63 lowercase letters, digits, '-' or '.'")
    if not 1 <= (req.replicas or 1) <= MAX_REPLICAS:
        raise InvalidArgument(f"--replicas must be between 1 and {MAX_REPLICAS}")
    if req.device not in ("", "gpu", "cpu"):
        raise InvalidArgument("--device is gpu or cpu")
    if req.strategy not in ("", "pack", "spread"):
        raise InvalidArgument("--strategy is pack or spread")
    if req.context > 10_000_000 or req.tp > 64 or req.max_moves > 64:
        raise InvalidArgument("--context or --tp out of range")
    if len(req.labels) > 32 or any(len(k) > 63 or len(v) > 63 for k, v in req.labels.items()):
        raise InvalidArgument("at most 32 labels, keys and values up to 63 characters")
    for text in (req.quant, req.engine, req.node, req.gpu_type):
        if len(text) > 100:
            raise InvalidArgument("an argument is longer than 100 characters")


def default_name(model: Model, quant: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{model.name}-{quant}".lower()).strip("-.")
    return name[:63].rstrip("-.")


def option_estimate(model: Model, catalog: Catalog, option: Option, context: int | None, device: str,
                    gpu_memory: int | None) -> Estimate:
    variant = catalog.variant(model, option.quant, option.engine)
    return estimate(model, variant, context=context, tp=max(1, option.tp), gpu_memory_bytes=gpu_memory,
                    device=device)


def verdict_messages(plan: Plan) -> list[pb.NodeVerdict]:
    out = []
    for nv in plan.verdicts():
        v = nv.verdict
        out.append(pb.NodeVerdict(node=nv.node, feasible=v.shortfall is None and v.score is not None,
                                  reason=v.shortfall.message if v.shortfall else "", score=int(v.score or 0),
                                  gpus=list(v.gpus)))
    return out


Rows = tuple[DeploymentRow, list[ReplicaRow], list[ReservationRow]]


def plan_placement(store: Store, catalog: Catalog, states: dict[str, str],
                   gpu_usage: dict[str, tuple[int, int, int]], req: pb.PlaceRequest,
                   now: float) -> tuple[pb.PlaceResponse, Rows | None]:
    """Decide; return the wire answer and, when it fits, the rows to commit."""
    validate(req)
    model = catalog.get(req.model)
    device = req.device or "gpu"
    snapshot = build_snapshot(store, states, gpu_usage)
    types = gpu_types_in(snapshot) if device == "gpu" else []
    if device == "gpu" and not types:
        return pb.PlaceResponse(placed=False, summary="no node reports a GPU; use --device cpu for llama.cpp in "
                                                      "RAM, or join GPU nodes"), None
    options = options_for(model.name, req.quant or None, req.engine or None, req.context or None, types,
                          req.tp or None, device=device, catalog=catalog)
    replicas = req.replicas or 1
    name = req.name or default_name(model, req.quant or "auto")
    preq = PlacementRequest(deployment=name, replicas=replicas, options=options, node=req.node or None,
                            gpu_type=req.gpu_type or None, labels=tuple(sorted(req.labels.items())),
                            device=device, strategy=req.strategy or "pack", explain=True)  # type: ignore[arg-type]
    plan = place(snapshot, preq)
    verdicts = verdict_messages(plan)
    if not plan.complete or plan.option is None:
        why = plan.closest or plan.why
        return pb.PlaceResponse(placed=False, verdicts=verdicts,
                                summary=f"{model.name}: nothing fits {replicas} replica(s): {why}"), None
    option = plan.option
    if not req.name:
        name = default_name(model, option.quant)
    if store.get_deployment(name) is not None:
        raise AlreadyExists(f"deployment {name!r} exists; pass --name, or `fleet remove {name}`")
    variant = catalog.variant(model, option.quant, option.engine)
    by_node = {n.name: n for n in snapshot.nodes}
    first_gpu = by_node[plan.placements[0].node].gpus[plan.placements[0].gpus[0]] if option.tp else None
    est = option_estimate(model, catalog, option, req.context or None, device,
                          first_gpu.memory_total if first_gpu else None)
    dep = DeploymentRow(
        name=name, model=model.name, quant=option.quant, engine=option.engine, context=est.context,
        replicas_wanted=replicas, device=device, strategy=req.strategy or "pack", tp=max(1, option.tp),
        source=variant.source, file=variant.file, why=plan.why, created_at=now, max_moves=max(1, req.max_moves or 1),
        estimate=json.dumps({k: int(getattr(est, k)) for k in ("weights", "kv_cache", "activations", "runtime",
                                                              "total")}),
        request=json.dumps({"model": req.model, "quant": req.quant, "engine": req.engine, "context": req.context,
                            "tp": req.tp, "node": req.node, "gpu_type": req.gpu_type, "labels": dict(req.labels),
                            "device": device, "strategy": req.strategy or "pack"}),
    )
    rows: list[ReplicaRow] = []
    reservations: list[ReservationRow] = []
    for p in plan.placements:
        row, res = replica_rows(name, p, option, by_node[p.node], int(est.kv_cache), now)
        rows.append(row)
        reservations += res
    notes = [f"chosen: {plan.why}"] if plan.why and not req.quant else []
    return pb.PlaceResponse(placed=True, verdicts=verdicts, notes=notes,
                            summary=f"{name}: {replicas} replica(s) on {', '.join(p.node for p in plan.placements)}"
                            ), (dep, rows, reservations)


def replica_rows(deployment: str, p: Placement, option: Option, node: NodeState, kv_cache_bytes: int, now: float,
                 ordinal: int | None = None, replaces: str = "") -> tuple[ReplicaRow, list[ReservationRow]]:
    """The rows one placed replica becomes: a fresh id and engine API key, its GPU reservations."""
    ordinal = p.replica if ordinal is None else ordinal
    rid = f"{deployment}-{ordinal}-{secrets.token_hex(3)}"
    util = 0.0
    if option.engine == "vllm" and p.gpus:
        # vLLM's budget is util x the GPU's memory: make it exactly the reservation (the estimate),
        # so replicas can share a GPU and none takes more than fleet reserved for it.
        total = min(node.gpus[i].memory_total for i in p.gpus)
        util = math.floor(min(0.98, p.per_gpu_bytes / total) * 10_000) / 10_000
    if option.engine == "vllm" and not p.gpus:
        # vLLM on CPU must be given its KV pool; it rounds to whole blocks, so never hand it less than 64 MiB
        kv_cache_bytes = max(kv_cache_bytes, 64 * 2**20)
    row = ReplicaRow(id=rid, deployment=deployment, ordinal=ordinal, node=p.node, tp=max(1, option.tp),
                     api_key=secrets.token_urlsafe(24), gpu_memory_utilization=util,
                     ram_bytes=option.ram_bytes if not p.gpus else 0, kv_cache_bytes=kv_cache_bytes,
                     created_at=now, replaces=replaces)
    res = [ReservationRow(replica=rid, gpu_uuid=uuid, gpu_index=node.gpus[i].index, bytes=p.per_gpu_bytes)
           for i, uuid in zip(p.gpus, p.gpu_uuids, strict=True)]
    return row, res


def deployment_request(dep: DeploymentRow, catalog: Catalog, snapshot: Snapshot, replicas: int = 1) -> PlacementRequest:
    """Place more replicas of an existing deployment: its chosen variant, TP and constraints.

    `--node` pinned the first placement only: a replica that must move (drain, offline node) may go
    to any node that meets the other constraints.
    """
    asked = json.loads(dep.request or "{}")
    types = gpu_types_in(snapshot) if dep.device == "gpu" else []
    options = options_for(dep.model, dep.quant, dep.engine, dep.context, types, dep.tp if dep.device == "gpu" else None,
                          device=dep.device, catalog=catalog)
    return PlacementRequest(deployment=dep.name, replicas=replicas, options=options,
                            gpu_type=asked.get("gpu_type") or None,
                            labels=tuple(sorted((asked.get("labels") or {}).items())), device=dep.device,
                            strategy=dep.strategy)  # type: ignore[arg-type]
