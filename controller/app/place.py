"""Place: snapshot the fleet, ask the pure core where, and commit the plan in one transaction.

Nothing here decides: options (from the estimator) and placement (where) are pure; this module moves
data between them and the store, and tells the chosen nodes. Used by `fleet place`, by drains and by the
reconciler (one more replica of an existing deployment).
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from dataclasses import asdict, dataclass, replace
from functools import partial

from prometheus_client import Histogram

from fleet.common.gpus import GpuType
from fleet.controller.app import observed
from fleet.controller.app.controller import Controller
from fleet.controller.core.catalog import Catalog, Model
from fleet.controller.core.drain_plan import Movable, plan_drain
from fleet.controller.core.errors import AlreadyExists, FleetError
from fleet.controller.core.estimate import Estimate, default_context, rope_launch
from fleet.controller.core.gpus import fleet_gpu_types
from fleet.controller.core.largest import Fit, largest_fits
from fleet.controller.core.options import ObservedLookup, options_for
from fleet.controller.core.parts import offloaded_layers, role
from fleet.controller.core.placement import Option, Placement, PlacementRequest, Plan, place
from fleet.controller.core.snapshot import NodeState, Snapshot
from fleet.controller.core.whatif import Request, WhatIf
from fleet.controller.core.whatif import what_if as what_if_core
from fleet.controller.store.schema import DeploymentRow, PartRow, ReplicaRow, ReservationRow

log = logging.getLogger("fleet.controller")

# Placement reads a snapshot and commits in one transaction: milliseconds normally, seconds means contention.
PLACEMENT_SECONDS = Histogram(
    "fleet_placement_seconds", "Time to plan and commit one placement (Place RPC)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

ESTIMATE_TERMS = ("weights", "kv_cache", "activations", "runtime", "total")


@dataclass(frozen=True)
class PlaceArgs:
    """What the operator asked for (validated at the edge: fleet.controller.rpc.validate)."""

    model: str
    quant: str = ""
    engine: str = ""
    replicas: int = 1
    context: int = 0  # 0: the model's default
    tp: int = 0  # 0: choose
    node: str = ""
    gpu_type: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    device: str = "gpu"
    strategy: str = "pack"
    name: str = ""
    max_moves: int = 1
    dry_run: bool = False
    explain: bool = False
    trust_observed: bool = False  # reserve observed + margin even below the estimate
    nodes: int = 0  # nodes each replica spans: 0 = one, or the fewest that fit when none does


Rows = tuple[DeploymentRow, list[ReplicaRow], list[ReservationRow], list[PartRow]]


@dataclass(frozen=True)
class PlaceOutcome:
    placed: bool
    summary: str
    notes: tuple[str, ...] = ()
    plan: Plan | None = None  # for the per-node verdicts
    rows: Rows | None = None  # what was (or, on a dry run, would be) committed


def default_name(model: Model, quant: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{model.name}-{quant}".lower()).strip("-.")
    return name[:63].rstrip("-.")


def snapshot(ctl: Controller) -> Snapshot:
    return ctl.snapshot()


def place_deployment(ctl: Controller, args: PlaceArgs, now: float) -> PlaceOutcome:
    """`fleet place`: decide, and unless it is a dry run, commit and tell the chosen nodes."""
    # No await between the snapshot and the commit: one controller never interleaves two placements,
    # and the commit re-checks GPU totals inside its transaction for any other writer.
    with PLACEMENT_SECONDS.time():
        outcome = decide(ctl, args, now)
        if outcome.rows is None or args.dry_run:
            return outcome
        dep, replicas, reservations, parts = outcome.rows
        ctl.store.commit_placement(dep, replicas, reservations, now, parts)
    log.info("placed %s: %s", dep.name, outcome.summary)
    return outcome


def decide(ctl: Controller, args: PlaceArgs, now: float) -> PlaceOutcome:
    """The plan and, when it fits, the rows to commit; changes nothing."""
    catalog = ctl.catalog()
    model = catalog.get(args.model)
    if args.name:
        _check_free(ctl, args.name)  # before placement: its anti-affinity would blame the existing deployment
    snap = snapshot(ctl)
    types = fleet_gpu_types(snap) if args.device == "gpu" else ()
    if args.device == "gpu" and not types:
        return PlaceOutcome(False, "no node reports a GPU; use --device cpu for llama.cpp in RAM, or join GPU nodes")
    context = args.context or default_context(model)
    options = options_for(model.name, args.quant or None, args.engine or None, context, types,
                          args.tp or None, device=args.device, catalog=catalog,
                          observed=observed.lookup(ctl, model.name, context), trust_observed=args.trust_observed,
                          nodes=args.nodes or None)
    name = args.name or default_name(model, args.quant or "auto")
    request = PlacementRequest(deployment=name, replicas=args.replicas, options=options, node=args.node or None,
                               gpu_type=args.gpu_type or None, labels=args.labels, device=args.device,  # type: ignore[arg-type]
                               strategy=args.strategy, explain=args.explain)  # type: ignore[arg-type]
    plan = place(snap, request, catalog.workload)
    if not plan.complete or plan.option is None:
        why = plan.closest or plan.why
        if plan.placements:  # some fit: say how many and where, so the operator can ask for that many
            n = len(plan.placements)
            return PlaceOutcome(False, f"{model.name}: only {n} of {args.replicas} replicas fit (on "
                                f"{', '.join('+'.join(p.nodes) for p in plan.placements)}); replica {n + 1}: {why}. "
                                f"Nothing was placed: ask for --replicas {n}, or free capacity", plan=plan)
        return PlaceOutcome(False, f"{model.name}: nothing fits {args.replicas} replica(s): {why}"
                            + _across_hint(args, request, snap, catalog, types), plan=plan)
    option = plan.option
    if not args.name:
        name = default_name(model, option.quant)
        _check_free(ctl, name)
    variant = catalog.variant(model, option.quant, option.engine)
    first = plan.placements[0]
    est = chosen_estimate(option, snap.by_name[first.node], first)
    rope = rope_launch(model, est.context)
    launch = {"rope": asdict(rope), "notes": [rope.note(model, est.context)]} if rope else {}
    dep = DeploymentRow(
        name=name, model=model.name, quant=option.quant, engine=option.engine, context=est.context,
        replicas_wanted=args.replicas, device=args.device, strategy=args.strategy, tp=max(1, option.tp),
        source=variant.source, file=variant.file, why=plan.why, created_at=now, max_moves=args.max_moves,
        estimate=json.dumps({k: int(getattr(est, k)) for k in ESTIMATE_TERMS}), launch=json.dumps(launch),
        request=json.dumps({"model": args.model, "quant": args.quant, "engine": args.engine, "context": args.context,
                            "tp": args.tp, "node": args.node, "gpu_type": args.gpu_type, "labels": dict(args.labels),
                            "device": args.device, "strategy": args.strategy, "trust_observed": args.trust_observed,
                            "nodes": args.nodes}),
    )
    rows: list[ReplicaRow] = []
    reservations: list[ReservationRow] = []
    parts: list[PartRow] = []
    for p in plan.placements:
        row, res, more = replica_rows(name, p, option, snap, int(est.kv_cache), now, layers=model.arch.layers)
        rows.append(row)
        reservations += res
        parts += more
    spans = len(plan.placements[0].nodes) > 1
    notes = ((f"chosen: {plan.why}",) if plan.why and (not args.quant or spans) else ()) + tuple(
        launch.get("notes", ()))
    declared = sorted({n for p in plan.placements for n in p.nodes if snap.by_name[n].declared})
    if declared:
        notes += (f"on declared node(s) {', '.join(declared)}: accounted for planning, never launched "
                  "(no real node fits)",)
    where = ", ".join("+".join(p.nodes) for p in plan.placements)
    summary = f"{name}: {args.replicas} replica(s) on {where}"
    return PlaceOutcome(True, summary, notes, plan, (dep, rows, reservations, parts))


def _across_hint(args: PlaceArgs, request: PlacementRequest, snap: Snapshot, catalog: Catalog,
                 types: tuple[GpuType, ...]) -> str:
    """With --nodes 1 (or a count too small): would the replicas fit over more nodes? Say how many."""
    if not args.nodes:
        return ""  # without --nodes placement already tried every node count
    try:
        options = options_for(args.model, args.quant or None, args.engine or None, args.context or None, types,
                              args.tp or None, device=args.device, catalog=catalog, nodes=None)
    except FleetError:
        return ""
    more = tuple(o for o in options if o.nodes > args.nodes)
    if not more:
        return ""
    plan = place(snap, replace(request, options=more, explain=False), catalog.workload)
    if not plan.complete:
        return ""
    k = max(len(p.nodes) for p in plan.placements)
    return f"; it fits across {k} nodes: pass --nodes {k}, or leave --nodes out"


def _check_free(ctl: Controller, name: str) -> None:
    if ctl.store.get_deployment(name) is not None:
        raise AlreadyExists(f"deployment {name!r} exists; pass --name, or `fleet remove {name}`")


def chosen_estimate(option: Option, node: NodeState, placement: Placement) -> Estimate:
    """The estimate the option was made from for the GPUs placement chose (or RAM), not another GPU type's."""
    if placement.gpu_uuids:
        gpu = next(g for g in node.gpus if g.uuid == placement.gpu_uuids[0])
        est = option.estimate_for(gpu.name, gpu.memory_total)
    else:
        est = option.estimate_for()
    assert est is not None, "options_for attaches an estimate per GPU kind it offers"
    return est


def replica_rows(deployment: str, p: Placement, option: Option, snap: Snapshot, kv_cache_bytes: int, now: float,
                 ordinal: int | None = None, replaces: str = "", layers: int = 0
                 ) -> tuple[ReplicaRow, list[ReservationRow], list[PartRow]]:
    """The rows one placed replica becomes: a fresh id and engine API key, its GPU reservations on every node,
    and (multi-node) a part row per node other than the main's."""
    ordinal = p.replica if ordinal is None else ordinal
    rid = f"{deployment}-{ordinal}-{secrets.token_hex(3)}"
    node = snap.by_name[p.node]
    gpus = {g.uuid: g for g in node.gpus}
    chosen = [gpus[u] for u in p.gpu_uuids]
    util = 0.0
    if option.engine == "vllm" and chosen:
        # vLLM's budget is util x the GPU's memory: make it exactly the reservation (the estimate),
        # so replicas can share a GPU and none takes more than fleet reserved for it.
        total = min(g.memory_total for g in chosen)
        util = math.floor(min(0.98, p.per_gpu_bytes / total) * 10_000) / 10_000
    if option.engine == "vllm" and not chosen:
        # vLLM on CPU must be given its KV pool; it rounds to whole blocks, so never hand it less than 64 MiB
        kv_cache_bytes = max(kv_cache_bytes, 64 * 2**20)
    parts: list[PartRow] = []
    res = [ReservationRow(replica=rid, gpu_uuid=g.uuid, gpu_index=g.index, bytes=p.per_gpu_bytes) for g in chosen]
    for rank, part in enumerate(p.parts[1:], start=1):
        parts.append(PartRow(id=f"{rid}-part{rank}", replica=rid, rank=rank, node=part.node,
                             role=role(option.engine, rank), ram_bytes=part.ram_bytes))
        there = {g.uuid: g for g in snap.by_name[part.node].gpus}
        res += [ReservationRow(replica=rid, gpu_uuid=u, gpu_index=there[u].index, bytes=p.per_gpu_bytes)
                for u in part.gpu_uuids]
    gpu_layers = 0
    if parts and option.engine == "llama.cpp" and not chosen and layers:
        # The main llama-server keeps its share of the layers in its own RAM; the rpc-servers take the rest.
        gpu_layers = offloaded_layers(layers, option.ram_bytes, [x.ram_bytes for x in parts])
    row = ReplicaRow(id=rid, deployment=deployment, ordinal=ordinal, node=p.node, tp=max(1, option.tp),
                     api_key=secrets.token_urlsafe(24), gpu_memory_utilization=util,
                     ram_bytes=option.ram_bytes if not chosen else 0, kv_cache_bytes=kv_cache_bytes,
                     created_at=now, replaces=replaces, nodes=1 + len(parts), gpu_layers=gpu_layers)
    return row, res, parts


def deployment_request(dep: DeploymentRow, catalog: Catalog, snap: Snapshot, replicas: int = 1,
                       seen: ObservedLookup | None = None) -> PlacementRequest:
    """Place more replicas of an existing deployment: its chosen variant, TP and constraints.

    `--node` pinned the first placement only: a replica that must move (drain, offline node) may go
    to any node that meets the other constraints.
    """
    asked = json.loads(dep.request or "{}")
    types = fleet_gpu_types(snap) if dep.device == "gpu" else ()
    options = options_for(dep.model, dep.quant, dep.engine, dep.context, types, dep.tp if dep.device == "gpu" else None,
                          device=dep.device, catalog=catalog, observed=seen,
                          trust_observed=bool(asked.get("trust_observed")), nodes=int(asked.get("nodes") or 0) or None)
    return PlacementRequest(deployment=dep.name, replicas=replicas, options=options,
                            gpu_type=asked.get("gpu_type") or None,
                            labels=tuple(sorted((asked.get("labels") or {}).items())), device=dep.device,  # type: ignore[arg-type]
                            strategy=dep.strategy)  # type: ignore[arg-type]


def place_one(ctl: Controller, dep: DeploymentRow, ordinal: int, now: float, replaces: str = "") -> str | None:
    """One more replica of `dep` (a drain's replacement, or one that went missing); why not, or None when placed."""
    snap = snapshot(ctl)
    catalog = ctl.catalog()
    request = deployment_request(dep, catalog, snap, seen=observed.lookup(ctl, dep.model, dep.context))
    plan = plan_drain(snap, (), [Movable(replaces or f"{dep.name}-{ordinal}", dep.name, request)], catalog.workload)
    if not plan.moves:
        why = plan.blocked[0].reason if plan.blocked else "no node fits"
        log.info("cannot place a replica of %s: %s", dep.name, why)
        return why
    p = plan.moves[0].placement
    kv = int(json.loads(dep.estimate or "{}").get("kv_cache", 0))
    row, res, parts = replica_rows(dep.name, p, p.option, snap, kv, now, ordinal=ordinal, replaces=replaces,
                                   layers=catalog.get(dep.model).arch.layers)
    where = "+".join(p.nodes)
    ctl.store.add_replicas([row], res, now, f"{row.id} on {where}" + (f" replacing {replaces}" if replaces else ""),
                           parts)
    log.info("placed replica %s of %s on %s%s", row.id, dep.name, where, f" (replaces {replaces})" if replaces else "")
    return None


def largest(ctl: Controller) -> list[Fit]:
    """`fleet capacity`: the largest catalog variant that fits now, on one node and across nodes (nothing reserved)."""
    catalog = ctl.catalog()
    return largest_fits(snapshot(ctl), catalog, partial(options_for, catalog=catalog))


def what_if(ctl: Controller, requests: tuple[Request, ...]) -> WhatIf:
    """`fleet plan` on the live inventory: the what-if core on a snapshot; nothing is reserved."""
    catalog = ctl.catalog()
    return what_if_core(snapshot(ctl), requests, partial(options_for, catalog=catalog), catalog.workload)
