"""Which replica the gateway picks: table tests of the pure routing core."""

from __future__ import annotations

import pytest

from fleet.controller.core.routing import ReplicaView, Target, pick, routable

A = ReplicaView("a", "n1", "healthy", "run", "http://a", "ka")


@pytest.mark.parametrize(("replica", "alive", "routed"), [
    (A, {"n1"}, True),
    (ReplicaView("a", "n1", "starting", "run", "http://a", "ka"), {"n1"}, False),
    (ReplicaView("a", "n1", "healthy", "stop", "http://a", "ka"), {"n1"}, False),  # draining: no new requests
    (ReplicaView("a", "n1", "healthy", "run", "", "ka"), {"n1"}, False),  # no endpoint reported yet
    (A, set(), False),  # node offline: its last report may be stale
])
def test_routable(replica: ReplicaView, alive: set[str], routed: bool) -> None:
    assert bool(routable([replica], alive)) is routed


T = [Target("a", "n1", "http://a", "ka"), Target("b", "n2", "http://b", "kb"), Target("c", "n3", "http://c", "kc")]


@pytest.mark.parametrize(("outstanding", "sent", "exclude", "chosen"), [
    ({}, {}, set(), "a"),                           # all equal: by id
    ({"a": 2, "b": 1, "c": 3}, {}, set(), "b"),     # least outstanding
    ({}, {"a": 5, "b": 5, "c": 4}, set(), "c"),     # tie on outstanding: fewest sent
    ({"a": 1}, {"b": 9}, {"c"}, "b"),               # outstanding beats sent; excluded never chosen
    ({}, {}, {"a", "b", "c"}, None),                # everything tried
])
def test_pick(outstanding: dict[str, int], sent: dict[str, int], exclude: set[str], chosen: str | None) -> None:
    got = pick(T, outstanding, sent, exclude)
    assert (got.id if got else None) == chosen

