from __future__ import annotations

from fleet.controller.app.credentials import Credentials
from fleet.controller.core.liveness import Liveness, overdue
from fleet.controller.rpc.auth import REGISTER, SESSION, refusal
from fleet.controller.store.hashing import token_hash


def creds() -> Credentials:
    return Credentials(admin_hashes={token_hash("admin-secret")}, node_hashes={"n1": token_hash("n1-secret")})


def test_every_method_needs_the_right_credential() -> None:
    c = creds()
    assert refusal(REGISTER, {}, c) is None  # join token checked inside, against the store
    assert refusal("/fleet.v1.Fleet/ListNodes", {"authorization": "Bearer admin-secret"}, c) is None
    assert "no admin token" in refusal("/fleet.v1.Fleet/ListNodes", {}, c)
    assert "rejected" in refusal("/fleet.v1.Fleet/ListNodes", {"authorization": "Bearer n1-secret"}, c)
    ok = {"authorization": "Bearer n1-secret", "x-fleet-node": "n1"}
    assert refusal(SESSION, ok, c) is None
    assert refusal(SESSION, {**ok, "x-fleet-node": "n2"}, c)  # a node cannot act as another node
    assert refusal(SESSION, {"authorization": "Bearer admin-secret", "x-fleet-node": "n1"}, c)
    assert refusal("/grpc.health.v1.Health/Check", ok, c)


def test_overdue_is_strict_and_sorted() -> None:
    seen = {"a": 100.0, "b": 90.0, "c": 84.9}
    assert overdue(seen, {"a", "b", "c"}, now=100.0, offline_after=15.0) == ["c"]
    assert overdue(seen, {"a", "b"}, now=106.0, offline_after=15.0) == ["b"]


def test_liveness_batches_and_tells_placement_what_moved() -> None:
    lv = Liveness()
    lv.beat("n1", 1.0, [("g1", 10, 5, 40)])
    lv.beat("n1", 2.0, [("g1", 10, 6, 41)])  # utilization and temperature: not a placement matter
    beats, usage = lv.take_dirty()
    assert beats == {"n1": 2.0} and usage == {"g1": (10, 6, 41)}
    assert lv.take_dirty() == ({}, {})
    assert lv.take_moved() == {"n1"} and lv.take_moved() == set()
    lv.beat("n1", 3.0, [("g1", 20, 6, 41)])  # memory moved
    assert lv.take_moved() == {"n1"} and lv.beats_total == 3
    lv.forget("n1", ["g1"])
    assert lv.last_seen == {} and lv.gpu_usage == {}
