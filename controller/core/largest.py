"""The largest catalog variant that fits the fleet now: on one node, and across nodes (`fleet capacity`).

Pure: the same options and placement as `fleet place` (nothing is reserved), over the catalog's variants from
the largest weights down, stopping at the first that places. "Across nodes" allows a replica to span several
nodes (multi-node); when the largest that fits needs only one node, both answers are the same variant.
Variants whose weights alone exceed the free memory (of the roomiest node, or of every node that can hold a
part) are skipped without estimating them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fleet.controller.core.catalog import Catalog
from fleet.controller.core.errors import FleetError
from fleet.controller.core.estimate import total_weight_bytes
from fleet.controller.core.gpus import fleet_gpu_types
from fleet.controller.core.placement import Option, Placement, PlacementRequest, place
from fleet.controller.core.snapshot import Snapshot

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


def largest_fits(snapshot: Snapshot, catalog: Catalog, options_for: OptionsFor) -> list[Fit]:
    types = fleet_gpu_types(snapshot)
    device = "gpu" if types else "cpu"
    variants = sorted(((total_weight_bytes(m, v), m.name, v.quant, v.engine) for m in catalog.models()
                       for v in m.variants), key=lambda x: (-x[0], x[1], x[2], x[3]))
    # Weights alone must fit in what is free: a cheap bound that skips estimating what cannot place.
    ready = [n for n in snapshot.nodes if n.state == "ready"]
    free = [sum(g.free for g in n.gpus) if device == "gpu" else n.ram_free for n in ready]
    one_node = max(free, default=0)
    across = sum(f for n, f in zip(ready, free, strict=True) if n.multinode) if sum(
        1 for n in ready if n.multinode) >= 2 else 0
    found: dict[str, Fit] = {}
    for size, model, quant, engine in variants:
        for scope, nodes, room in (("one node", 1, one_node), ("across nodes", None, max(one_node, across))):
            if scope in found or size > room:
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
