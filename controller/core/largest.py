"""The largest catalog variant that fits the fleet now: on one node, and across nodes (`fleet capacity`).

Pure: the same options and placement as `fleet place` (nothing is reserved), over the catalog's variants from
the largest weights down, stopping at the first that places. "Across nodes" allows a replica to span several
nodes (multi-node); when the largest that fits needs only one node, both answers are the same variant.
Variants whose weights alone exceed the free memory of the roomiest node with disk for them (or of every node
that can hold a part) are skipped without estimating them: at 10,000 nodes the bound costs a bisection.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from fleet.controller.core.catalog import Catalog
from fleet.controller.core.errors import FleetError
from fleet.controller.core.estimate import total_weight_bytes
from fleet.controller.core.gpus import fleet_gpu_types
from fleet.controller.core.placement import Option, Placement, PlacementRequest, place
from fleet.controller.core.snapshot import NodeState, Snapshot

OptionsFor = Callable[..., tuple[Option, ...]]


@dataclass(frozen=True)
class Fit:
    scope: str  # "one node" | "across nodes"
    model: str
    quant: str
    engine: str
    weights: int  # bytes of the whole model's weights
    device: str
    placement: Placement


class _Room:
    """Upper bounds on what can place, from free memory and disk alone: the roomiest node with the engine and
    disk for the weights, and (multi-node) the free memory of every node that can hold a part. Sound: a variant
    above them cannot place, so the scan skips estimating it; one below may still not fit."""

    def __init__(self, nodes: list[NodeState], device: str) -> None:
        self.device = device
        self.by_engine: dict[str, tuple[list[int], list[int], list[int], list[NodeState]]] = {}
        for engine in {e for n in nodes for e in n.engines}:
            have = sorted((n for n in nodes if engine in n.engines), key=lambda n: n.disk_free)
            disks = [n.disk_free for n in have]
            frees = [self._free(n) for n in have]
            # suffix max of free memory and suffix sum over part-capable nodes, by disk ascending
            best, total = [0] * (len(have) + 1), [0] * (len(have) + 1)
            for i in range(len(have) - 1, -1, -1):
                best[i] = max(best[i + 1], frees[i])
                total[i] = total[i + 1] + (frees[i] if engine in have[i].multinode else 0)
            self.by_engine[engine] = (disks, best, total, have)

    def _free(self, n: NodeState) -> int:
        return sum(g.free for g in n.gpus) if self.device == "gpu" else n.ram_free

    def room(self, engine: str, size: int, source: str, across: bool) -> int:
        found = self.by_engine.get(engine)
        if found is None:
            return 0
        disks, best, total, have = found
        i = bisect_left(disks, size)  # these nodes have disk for the weights
        cached = [n for n in have[:i] if source and source in n.cached_sources]
        one = max([best[i], *(self._free(n) for n in cached)])
        if not across:
            return one
        parts = sum(1 for n in have if engine in n.multinode)
        # the main needs the download; llama.cpp's rpc-servers need no disk, vLLM's followers do
        spread = (total[0] if engine == "llama.cpp" else total[i] + sum(self._free(n) for n in cached
                                                                           if engine in n.multinode))
        return max(one, spread if parts >= 2 and one > 0 else 0)


def largest_fits(snapshot: Snapshot, catalog: Catalog, options_for: OptionsFor) -> list[Fit]:
    types = fleet_gpu_types(snapshot)
    device = "gpu" if types else "cpu"
    models = {m.name: m for m in catalog.models()}
    variants = sorted(((total_weight_bytes(m, v), m.name, v.quant, v.engine) for m in models.values()
                       for v in m.variants), key=lambda x: (-x[0], x[1], x[2], x[3]))
    bounds = _Room([n for n in snapshot.nodes if n.state == "ready"], device)
    found: dict[str, Fit] = {}
    for size, model, quant, engine in variants:
        source = next(str(v.source) for v in models[model].variants if (v.quant, v.engine) == (quant, engine))
        for scope, nodes in (("one node", 1), ("across nodes", None)):
            if scope in found or size > bounds.room(engine, size, source, across=nodes is None):
                continue
            try:
                options = options_for(model, quant, engine, None, types, device=device, nodes=nodes)
            except FleetError:
                continue
            plan = place(snapshot, PlacementRequest(f"largest-{model}", 1, options, device=device),  # type: ignore[arg-type]
                         catalog.workload)
            if plan.complete:
                found[scope] = Fit(scope, model, quant, engine, size, device, plan.placements[0])
        if len(found) == 2:
            break
    return [found[s] for s in ("one node", "across nodes") if s in found]
