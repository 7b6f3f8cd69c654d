"""Which recorded events are warnings (pure): `fleet events` types them like kubectl, `fleet status` lists
the recent warnings. The kinds are written by the store (fleet.controller.store.repository)."""

from __future__ import annotations

# Something an operator should look at: a node gone or removed, a replica that failed, lost or was
# fenced or uses more memory than it reserved, a GPU gone or claimed by a second node. Everything else
# (joins, placements, cordons, replicas starting or stopping) is routine.
WARNING_KINDS = frozenset({"node.offline", "node.removed", "replica.failed", "replica.unknown",
                           "replica.memory_over", "gpu.missing", "gpu.refused"})


def event_type(kind: str) -> str:
    return "Warning" if kind in WARNING_KINDS else "Normal"
