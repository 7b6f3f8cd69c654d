"""Options: turn "model M, maybe quant Q, context C" into placement Options, using the estimator.

The adapter between the catalog/estimator and placement: placement only sees Options (quant × engine
× TP with per-GPU bytes), so it never estimates and stays fast; this module is the one place that
knows how an Option is derived. Each Option carries the estimates it was made from, so the caller
records the estimate of the GPUs actually chosen without estimating again. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from fleet.common.gpus import GpuType
from fleet.controller.core.catalog import VLLM, Catalog, Model, Variant
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.estimate import MAX_NODES, Estimate, estimate, incompatibility, nodes_problem, valid_tps
from fleet.controller.core.observed import Margin, Observed, reservation
from fleet.controller.core.placement import Option
from fleet.controller.core.workload import GIB

MAX_TP = 8
# Without --nodes, a replica that fits no single node may span up to this many (fewest first).
AUTO_NODES = 8
# What replicas of a key really used: (quant, engine, GPU type or "cpu", TP) -> Observed, for one model and context.
ObservedLookup = Callable[[str, str, str, int], Observed | None]
# The bytes an option reserves for an estimate on a GPU type ("cpu" in RAM) at a TP: the estimate, or what
# replicas of the same key were seen to use (fleet.controller.core.observed.reservation).
Need = Callable[[Estimate, str, int], int]


def options_for(model_name: str, quant: str | None, engine: str | None, context: int | None,
                gpu_types: Sequence[GpuType], tp: int | None = None, *, device: str = "gpu",
                catalog: Catalog, observed: ObservedLookup | None = None, trust_observed: bool = False,
                nodes: int | None = 1) -> tuple[Option, ...]:
    """Every way to run `model_name` on these GPU types: one Option per variant × smallest TP per GPU type.

    - quant None: all variants (placement picks the best quality that fits); engine None: any engine.
    - tp None: for each GPU type the smallest valid TP whose per-GPU need fits its memory (the TP an
      operator would choose on that hardware); tp given: that TP only, if valid. Across nodes TP is the
      GPUs each node gives the replica.
    - per_gpu_bytes is the largest estimate over the GPU types (vLLM's sizing can depend on the GPU), and
      `needs` holds each type's own, so a replica reserves its GPUs' estimate and never another type's.
    - device "cpu": variants in RAM (tp 0; llama.cpp, or vLLM's CPU build), per the estimator's CPU estimate.
    - observed: what replicas of the same key really used; the need becomes max(estimate, observed +
      margin), or observed + margin with `trust_observed` (fleet.controller.core.observed.reservation).
      Observations are of replicas on one node: options over several nodes use the estimate.
    - nodes 1: one node per replica; N >= 2: exactly N nodes (one part each); None: one node, and the
      options over 2..AUTO_NODES nodes that placement falls back to, fewest nodes first.
    Raises InvalidArgument (from the catalog) for an unknown model or quant, or when nothing is possible.
    """
    cat = catalog
    resolved = cat.resolve(model_name)  # a quantized repo id implies its quant (and engine)
    model = resolved.model
    quant = quant or resolved.quant
    engine = engine or resolved.engine
    margin = Margin.from_engines(cat.engines)

    def need(e: Estimate, gpu_type: str, t: int) -> int:
        seen = observed(e.quant, e.engine, gpu_type, t) if observed is not None else None
        return reservation(e.engine, int(e.total), int(e.kv_cache), seen, margin, trust_observed).bytes

    if quant is not None:
        variants = [cat.variant(model, quant, engine)]
    else:
        variants = [v for v in model.variants if engine is None or v.engine == engine]
    if not variants:
        raise InvalidArgument(f"{model.name} has no variant for engine {engine}; "
                              f"it has {', '.join(sorted({v.engine for v in model.variants}))}")
    if nodes is not None and not 1 <= nodes <= MAX_NODES:
        raise InvalidArgument(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
    counts = [nodes] if nodes is not None else list(range(1, AUTO_NODES + 1))
    types = tuple(gpu_types)
    out: dict[tuple[str, str, int, int], Option] = {}
    for k in counts:
        for v in variants:
            found = _variant_options(cat, model, v, context, types, tp, device, k, need)
            if k == 1 and not found and nodes is None and device == "gpu":
                # Fits no single GPU type at any TP: offer the widest one anyway, so that placement says per
                # node what one node lacks ("needs 8 × 94 GiB") before it spans several.
                found = _widest(cat, model, v, context, types, tp, need)
            out.update(found)
    if not out:
        raise InvalidArgument(_nothing_runs(cat, model, variants, quant, context, types, tp, device, nodes))
    return tuple(out.values())


def choose(options: Sequence[Option], gpu: GpuType | None = None) -> tuple[Option, str]:
    """The option `fleet place` would pick on nodes of this one GPU kind, and why, in words (`fleet estimate`
    without --quant). Like placement: the best quality level that fits (then the fewest GPUs); with no GPU kind
    given (or on CPU, where RAM decides) simply the best quality.
    """
    if not options:
        raise InvalidArgument("no variant to choose from")
    ranked = sorted(options, key=lambda o: (-o.quality, o.tp, o.quant, o.engine))
    if gpu is None:
        best = ranked[0]
        where = "RAM decides where it fits" if best.tp == 0 else "give --gpu to choose what fits"
        return best, f"chose {best.variant} (quality {best.quality}), the best quality ({where})"
    fitting = [o for o in ranked if o.tp > 0 and o.need_on_kind(gpu.name, gpu.memory_bytes) <= gpu.memory_bytes]
    if not fitting:
        best = ranked[0]
        return best, f"nothing fits {gpu.name} GPUs up to TP {MAX_TP}; showing the best quality, {best.variant}"
    best = fitting[0]
    better = [f"{o.variant} (quality {o.quality})" for o in ranked if o.quality > best.quality]
    why = f"chose {best.variant} (quality {best.quality}) at TP {best.tp}, the best quality that fits {gpu.name} GPUs"
    return best, why + (f"; {', '.join(dict.fromkeys(better))} do not" if better else "")


def _estimated(e: Estimate, gpu_type: str, t: int) -> int:
    return int(e.total)


def _variant_options(cat: Catalog, model: Model, v: Variant, context: int | None, gpu_types: tuple[GpuType, ...],
                     tp: int | None, device: str, nodes: int,
                     need: Need = _estimated) -> dict[tuple[str, str, int, int], Option]:
    if nodes > 1:
        if nodes_problem(model, v, nodes, device):
            return {}
        return dict(_part_options(cat, model.name, v.quant, v.engine, context, gpu_types, tp, device, nodes))
    return _one_node_options(cat, model, v, context, gpu_types, tp, device, need)


def _one_node_options(cat: Catalog, model: Model, v: Variant, context: int | None, gpu_types: tuple[GpuType, ...],
                      tp: int | None, device: str, need: Need) -> dict[tuple[str, str, int, int], Option]:
    out: dict[tuple[str, str, int, int], Option] = {}
    disk = int(v.size_bytes) if v.size_bytes else 0
    if device == "cpu":
        # llama.cpp in RAM, or vLLM's CPU build where a node has it (placement checks the engine)
        est = estimate(model, v, engines=cat.engines, context=context, tp=1, device="cpu")
        out[(v.quant, v.engine, 0, 1)] = Option(v.quant, v.engine, 0, 0, "", int(v.quality),
                                                disk or int(est.weights), need(est, "cpu", 1), str(v.source),
                                                estimates=((("cpu", 0), est),))
        return out
    usable = [g for g in gpu_types if incompatibility(v, g.compute_capability) is None]
    if not usable:
        return out
    tps = sorted(valid_tps(model, v, max_tp=MAX_TP))
    if tp is not None:
        tps = [t for t in tps if t == tp]
    covered: set[str] = set()  # GPU types a smaller TP of this variant already fits
    for t in tps:
        per_type = [(g, estimate(model, v, engines=cat.engines, context=context, tp=t,
                                 gpu_memory_bytes=g.memory_bytes)) for g in usable]
        needs = [need(e, g.name, t) for g, e in per_type]
        fits = {g.name for (g, _), n in zip(per_type, needs, strict=True) if n <= g.memory_bytes}
        if tp is None:
            if not fits - covered:
                continue
            covered |= fits
        weights = disk or int(max(e.weights for _, e in per_type)) * t
        out[(v.quant, v.engine, t, 1)] = Option(v.quant, v.engine, t, max(needs), str(v.min_compute_capability or ""),
                                                int(v.quality), weights, 0, str(v.source),
                                                estimates=tuple(((g.name, g.memory_bytes), e) for g, e in per_type),
                                                needs=tuple(((g.name, g.memory_bytes), n)
                                                            for (g, _), n in zip(per_type, needs, strict=True)))
    return out


def _widest(cat: Catalog, model: Model, v: Variant, context: int | None, gpu_types: tuple[GpuType, ...],
            tp: int | None, need: Need) -> dict[tuple[str, str, int, int], Option]:
    usable = [g for g in gpu_types if incompatibility(v, g.compute_capability) is None]
    tps = [t for t in valid_tps(model, v, max_tp=MAX_TP) if tp is None or t == tp]
    if not usable or not tps:
        return {}
    t = max(tps)
    per_type = [(g, estimate(model, v, engines=cat.engines, context=context, tp=t, gpu_memory_bytes=g.memory_bytes))
                for g in usable]
    disk = int(v.size_bytes) if v.size_bytes else int(max(e.weights for _, e in per_type)) * t
    needs = tuple(((g.name, g.memory_bytes), need(e, g.name, t)) for g, e in per_type)
    return {(v.quant, v.engine, t, 1): Option(v.quant, v.engine, t, max(n for _, n in needs),
                                              str(v.min_compute_capability or ""), int(v.quality), disk, 0,
                                              str(v.source),
                                              estimates=tuple(((g.name, g.memory_bytes), e) for g, e in per_type),
                                              needs=needs)}


@lru_cache(maxsize=4096)
def _part_options(cat: Catalog, model_name: str, quant: str, engine: str, context: int | None,
                  gpu_types: tuple[GpuType, ...], tp: int | None, device: str,
                  nodes: int) -> tuple[tuple[tuple[str, str, int, int], Option], ...]:
    """Options of one variant spanning exactly `nodes` nodes (memoised: drains and refills ask again and again).

    vLLM: TP = the GPUs each node gives, PP = nodes; llama.cpp: a main and nodes - 1 rpc-server parts, layers
    split over all their devices (CPU: over their RAM). Every part reserves the same per-GPU bytes (or RAM).
    """
    model = cat.get(model_name)
    v = cat.variant(model, quant, engine)
    disk = int(v.size_bytes) if v.size_bytes else 0
    # vLLM's followers load their stage from their own copy of the weights; rpc-server parts get tensors from
    # the main over the network and need no download.
    out: list[tuple[tuple[str, str, int, int], Option]] = []
    if device == "cpu":
        est = estimate(model, v, engines=cat.engines, context=context, tp=1, device="cpu", nodes=nodes)
        whole = disk or int(est.weights) * nodes
        out.append(((v.quant, v.engine, 0, nodes), Option(
            v.quant, v.engine, 0, 0, "", int(v.quality), whole, int(est.total), str(v.source),
            nodes=nodes, part_disk_bytes=whole if v.engine == VLLM else 0, estimates=((("cpu", 0), est),))))
        return tuple(out)
    usable = [g for g in gpu_types if incompatibility(v, g.compute_capability) is None]
    if not usable:
        return ()
    tps = [t for t in sorted(valid_tps(model, v, max_tp=MAX_TP)) if t * nodes <= model.arch.layers
           or v.engine == VLLM]
    if tp is not None:
        tps = [t for t in tps if t == tp]
    covered: set[str] = set()
    for t in tps:
        per_type = [(g, estimate(model, v, engines=cat.engines, context=context, tp=t, nodes=nodes,
                                 gpu_memory_bytes=g.memory_bytes)) for g in usable]
        fits = {g.name for g, e in per_type if int(e.total) <= g.memory_bytes}
        if tp is None:
            if not fits - covered:
                continue
            covered |= fits
        need = max(int(e.total) for _, e in per_type)
        whole = disk or int(max(e.weights for _, e in per_type)) * t * nodes
        out.append(((v.quant, v.engine, t, nodes), Option(
            v.quant, v.engine, t, need, str(v.min_compute_capability or ""), int(v.quality), whole, 0,
            str(v.source), nodes=nodes, part_disk_bytes=whole if v.engine == VLLM else 0,
            estimates=tuple(((g.name, g.memory_bytes), e) for g, e in per_type))))
    return tuple(out)


def _nothing_runs(cat: Catalog, model: Model, variants: Sequence[Variant], quant: str | None, context: int | None,
                  gpu_types: tuple[GpuType, ...], tp: int | None, device: str, nodes: int | None) -> str:
    """Why no option exists, in the words that help: wrong GPU, too few nodes, or an impossible split."""
    names = ", ".join(sorted({g.name for g in gpu_types})) or "these GPUs"
    what = f"{model.name}{' ' + quant if quant else ''}"
    at_tp = f" at TP {tp}" if tp else ""
    if device == "gpu" and not any(incompatibility(v, g.compute_capability) is None
                                   for v in variants for g in gpu_types):
        why = "; ".join(sorted({incompatibility(v, g.compute_capability) or "" for v in variants
                                for g in gpu_types} - {""}))
        return f"{what}: no variant runs on {names}: {why}"
    if nodes is not None:
        problems = sorted({p for v in variants if (p := nodes_problem(model, v, nodes, device))})
        if problems and nodes > 1:
            return f"{what}: cannot span {nodes} nodes: {'; '.join(problems)}"
        # The memory is the problem: say how many nodes it would take (the message the operator needs).
        for k in range(nodes + 1, MAX_NODES + 1):
            found = [o for v in variants for o in _variant_options(cat, model, v, context, gpu_types, tp, device, k)
                     .values()]
            if found:
                o = min(found, key=lambda o: (-o.quality, o.tp))
                shape = f"TP {o.tp} × PP {k}" if o.engine == VLLM else (
                    f"{k} parts" if device == "cpu" else f"{o.tp} GPU{'s' if o.tp > 1 else ''} on each of {k} nodes")
                one = "one node" if nodes == 1 else f"{nodes} nodes"
                return (f"{what} does not fit on {one} of {names}{at_tp}: it needs {k} nodes "
                        f"({o.quant} on {o.engine}, {shape}, {o.per_gpu_bytes / GIB:.1f} GiB per "
                        f"{'GPU' if device == 'gpu' else 'part'}); place it with --nodes {k}"
                        + (" or without --nodes" if nodes == 1 else ""))
    return (f"{what}: no variant fits {names}{at_tp} even across {MAX_NODES if nodes is None else nodes} nodes"
            if device == "gpu" else f"{what}: no variant runs in RAM on these nodes")
