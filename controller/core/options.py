"""Options: turn "model M, maybe quant Q, context C" into placement Options, using the estimator.

The adapter between the catalog/estimator and placement: placement only sees Options (quant × engine
× TP with per-GPU bytes), so it never estimates and stays fast; this module is the one place that
knows how an Option is derived. Each Option carries the estimates it was made from, so the caller
records the estimate of the GPUs actually chosen without estimating again. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fleet.common.gpus import GpuType
from fleet.controller.core.catalog import Catalog
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.estimate import Estimate, estimate, incompatibility, valid_tps
from fleet.controller.core.observed import Margin, Observed, reservation
from fleet.controller.core.placement import Option

MAX_TP = 8
# What replicas of a key really used: (quant, engine, GPU type or "cpu", TP) -> Observed, for one model and context.
ObservedLookup = Callable[[str, str, str, int], Observed | None]


def options_for(model_name: str, quant: str | None, engine: str | None, context: int | None,
                gpu_types: Sequence[GpuType], tp: int | None = None, *, device: str = "gpu",
                catalog: Catalog, observed: ObservedLookup | None = None,
                trust_observed: bool = False) -> tuple[Option, ...]:
    """Every way to run `model_name` on these GPU types: one Option per variant × smallest TP per GPU type.

    - quant None: all variants (placement picks the best quality that fits); engine None: any engine.
    - tp None: for each GPU type the smallest valid TP whose per-GPU need fits its memory (the TP an
      operator would choose on that hardware); tp given: that TP only, if valid.
    - per_gpu_bytes is the largest estimate over the GPU types (vLLM's sizing can depend on the GPU), and
      `needs` holds each type's own, so a replica reserves its GPUs' estimate and never another type's.
    - device "cpu": variants in RAM (tp 0; llama.cpp, or vLLM's CPU build), per the estimator's CPU estimate.
    - observed: what replicas of the same key really used; the need becomes max(estimate, observed +
      margin), or observed + margin with `trust_observed` (fleet.controller.core.observed.reservation).
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
    out: dict[tuple[str, str, int], Option] = {}
    for v in variants:
        disk = int(v.size_bytes) if v.size_bytes else 0
        if device == "cpu":
            # llama.cpp in RAM, or vLLM's CPU build where a node has it (placement checks the engine)
            est = estimate(model, v, engines=cat.engines, context=context, tp=1, device="cpu")
            out[(v.quant, v.engine, 0)] = Option(v.quant, v.engine, 0, 0, "", int(v.quality),
                                                 disk or int(est.weights), need(est, "cpu", 1), str(v.source),
                                                 estimates=((("cpu", 0), est),))
            continue
        usable = [g for g in gpu_types if incompatibility(v, g.compute_capability) is None]
        if not usable:
            continue
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
            out[(v.quant, v.engine, t)] = Option(v.quant, v.engine, t, max(needs), str(v.min_compute_capability or ""),
                                                 int(v.quality), weights, 0, str(v.source),
                                                 estimates=tuple(((g.name, g.memory_bytes), e) for g, e in per_type),
                                                 needs=tuple(((g.name, g.memory_bytes), n)
                                                             for (g, _), n in zip(per_type, needs, strict=True)))
    if not out:
        raise InvalidArgument(f"{model.name}: no variant{' ' + quant if quant else ''} runs on "
                              f"{', '.join(sorted({g.name for g in gpu_types})) or 'these GPUs'}"
                              + (f" at TP {tp}" if tp else ""))
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
