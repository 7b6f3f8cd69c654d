"""Replica states, and what each one means to the gateway, to `--wait` and to drains (pure, no I/O).

`declared` is a replica on a declared-GPU node (`--simulate-gpus`, capacity planning): its memory is
accounted, but no engine is launched, so it never serves and the gateway never routes to it.
"""

from __future__ import annotations

STATES = ("pending", "starting", "healthy", "declared", "failed", "stopping", "stopped", "unknown")
SERVING = "healthy"  # answers requests: the only state the gateway routes to and `--wait` counts
DECLARED = "declared"


def settled(state: str) -> bool:
    """Done starting: serving, or accounted on a declared node (a drain may stop the replica it replaces)."""
    return state in (SERVING, DECLARED)
