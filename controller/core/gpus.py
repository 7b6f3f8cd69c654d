"""The kinds of GPU in a fleet, as the estimator needs them: one GpuType per (name, memory, capability).

The GPU table itself (names, memory, compute capability of common GPUs) is shared with the agent, which
declares GPUs from it: fleet.common.gpus.
"""

from __future__ import annotations

from fleet.common.gpus import GpuType, gpu_type
from fleet.controller.core.snapshot import Snapshot, hardware


def fleet_gpu_types(snapshot: Snapshot) -> tuple[GpuType, ...]:
    """The distinct GPU kinds on the snapshot's nodes: the table's entry for the vendor, the node's own numbers.

    Read from placement's groups (one per hardware kind of node, kept incremental), not node by node:
    at 10,000 nodes of 8 GPUs a per-GPU walk costs more than the placement."""
    kinds = {kind for attr in snapshot.groups for kind in hardware(attr)}
    out = []
    for name, memory, cc in sorted(kinds):
        try:
            vendor = gpu_type(name).vendor
        except KeyError:
            vendor = "nvidia" if cc else "amd"
        out.append(GpuType(name=name, memory_bytes=memory, compute_capability=cc, vendor=vendor))
    return tuple(out)
