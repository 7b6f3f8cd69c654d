"""Which replica takes the next gateway request (pure: plain data in, a choice out).

A replica is a target only while it can finish what it is sent: its engine reports healthy, the
controller still wants it running (a replica being drained or removed has desired "stop", so it gets
no new requests before its agent stops it), and its node is alive.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from fleet.controller.core.replica_states import SERVING


@dataclass(frozen=True)
class Target:
    id: str
    node: str
    endpoint: str  # base URL, e.g. http://10.0.0.5:40001
    api_key: str


@dataclass(frozen=True)
class ReplicaView:
    """What routing needs to know about one replica row."""

    id: str
    node: str
    state: str
    desired: str
    endpoint: str
    api_key: str


def routable(replicas: Iterable[ReplicaView], alive_nodes: Container[str]) -> list[Target]:
    return [Target(r.id, r.node, r.endpoint, r.api_key) for r in replicas
            if r.state == SERVING and r.desired == "run" and r.endpoint and r.node in alive_nodes]


def pick(targets: Iterable[Target], outstanding: Mapping[str, int], sent: Mapping[str, int],
         exclude: set[str] = frozenset()) -> Target | None:  # type: ignore[assignment]
    """Least outstanding requests first; ties go to the replica sent fewest requests so far, then by id.

    The second key spreads sequential traffic (where everyone has 0 outstanding) instead of piling
    it on the first replica; the id makes the choice deterministic.
    """
    candidates = [t for t in targets if t.id not in exclude]
    if not candidates:
        return None
    return min(candidates, key=lambda t: (outstanding.get(t.id, 0), sent.get(t.id, 0), t.id))
