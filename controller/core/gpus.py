"""The kinds of GPU in a fleet, as the estimator needs them: one GpuType per (name, memory, capability).

The GPU table itself (names, memory, compute capability of common GPUs) is shared with the agent, which
declares GPUs from it: fleet.common.gpus.
"""

from __future__ import annotations

from fleet.common.gpus import GpuType, gpu_type
from fleet.controller.core.snapshot import Snapshot


def fleet_gpu_types(snapshot: Snapshot) -> tuple[GpuType, ...]:
    """The distinct GPU kinds on the snapshot's nodes: the table's entry for the vendor, the node's own numbers."""
    seen: dict[tuple[str, int, str], GpuType] = {}
    for n in snapshot.nodes:
        for g in n.gpus:
            key = (g.name, g.memory_total, g.compute_capability)
            if key in seen:
                continue
            try:
                vendor = gpu_type(g.name).vendor
            except KeyError:
                vendor = "nvidia" if g.compute_capability else "amd"
            seen[key] = GpuType(name=g.name, memory_bytes=g.memory_total, compute_capability=g.compute_capability,
                                vendor=vendor)
    return tuple(sorted(seen.values(), key=lambda t: (t.name, t.memory_bytes, t.compute_capability)))
