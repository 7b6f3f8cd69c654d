"""Issue 12's store rules on SQLite and PostgreSQL: Register is all or nothing, a known name needs a
takeover, a GPU belongs to one node, and a node back with fewer GPUs fails the replicas on the lost ones.

The use cases (fleet.controller.app.nodes) over the real store, as the Agent service calls them; the
end-to-end versions over gRPC are in test_trust.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet.controller.app import nodes
from fleet.controller.app.place import PlaceArgs, place_deployment
from fleet.controller.core.errors import AlreadyExists, Unauthenticated
from fleet.controller.rpc import convert
from fleet.controller.store import tokens
from fleet.proto import fleet_pb2 as pb
from tests.integration.fleet_state import controller, join

GIB = 1024**3


def inventory(name: str, uuids: list[str]) -> pb.Inventory:
    return pb.Inventory(hostname=name, gpu_probe="declared", engines=[pb.Engine(name="vllm", version="1")],
                        gpus=[pb.Gpu(uuid=u, index=i, name="A100-80GB", memory_total=80 * GIB, declared=True)
                              for i, u in enumerate(uuids)])


def register(ctl, name: str, inv: pb.Inventory, **kw) -> str:  # type: ignore[no-untyped-def]
    return nodes.join(ctl, name, convert.inventory_json(inv), convert.gpu_rows(name, inv), **kw)


def test_register_is_all_or_nothing_and_a_gpu_has_one_owner(tmp_path: Path, store_url: str) -> None:
    ctl = controller(tmp_path, store_url)
    first = register(ctl, "a", inventory("a", ["GPU-1"]))
    with pytest.raises(AlreadyExists, match="belongs to node 'a'"):
        register(ctl, "b", inventory("b", ["GPU-2", "GPU-1"]))
    assert [n.name for n in ctl.store.nodes()] == ["a"] and [g.uuid for g in ctl.store.gpus()] == ["GPU-1"]
    with pytest.raises(AlreadyExists, match="fleet node replace a"):
        register(ctl, "a", inventory("a", ["GPU-1"]))
    assert ctl.creds.is_node("a", first)

    # its own credential lets the node register again; a replacement token lets a new machine take the name once
    again = register(ctl, "a", inventory("a", ["GPU-1"]), credential_held=first)
    assert not ctl.creds.is_node("a", first) and ctl.creds.is_node("a", again)
    secret, _ = tokens.create_replacement(ctl.store, "a", 600, time.time())
    assert nodes.admit(ctl, secret) == "a"
    register(ctl, "a", inventory("a", ["GPU-9"]), replaces="a", secret=secret)
    assert [g.uuid for g in ctl.store.gpus("a")] == ["GPU-9"]
    with pytest.raises(Unauthenticated):
        nodes.admit(ctl, secret)  # used up

    # a session naming another node's GPU: left out; heartbeats for it change nothing
    register(ctl, "b", inventory("b", ["GPU-2"]))
    inv = inventory("b", ["GPU-2", "GPU-9"])
    nodes.connect(ctl, "b", convert.inventory_json(inv), convert.gpu_rows("b", inv))
    assert {g.uuid: g.node for g in ctl.store.gpus()} == {"GPU-9": "a", "GPU-2": "b"}
    nodes.heartbeat(ctl, "b", [("GPU-9", 80 * GIB, 100, 90), ("GPU-2", GIB, 1, 30)])
    assert "GPU-9" not in ctl.liveness.gpu_usage and ctl.liveness.gpu_usage["GPU-2"] == (GIB, 1, 30)
    assert [e.kind for e in ctl.store.node_events("b")][:1] == ["gpu.refused"]


def test_a_node_back_with_fewer_gpus_fails_the_replicas_on_the_lost_ones(tmp_path: Path, store_url: str) -> None:
    ctl = controller(tmp_path, store_url)
    uuids = join(ctl, "big", "2xA100-80GB")
    on: dict[int, str] = {}
    for name in ("one", "two"):  # 56 GiB each: one per GPU
        outcome = place_deployment(ctl, PlaceArgs("qwen2-72b", quant="awq", name=name), time.time())
        assert outcome.placed, outcome.summary
    for r in ctl.store.replicas():
        on[ctl.store.mirror.reservations[r.id][0].gpu_index] = r.id
    before = ctl.store.get_node("big").generation  # type: ignore[union-attr]

    inv = inventory("big", [uuids[0]])
    nodes.connect(ctl, "big", convert.inventory_json(inv), convert.gpu_rows("big", inv))
    lost = {r.id: r for r in ctl.store.replicas()}[on[1]]
    assert (lost.desired, lost.state) == ("stop", "failed") and uuids[1] in lost.message
    kept = {r.id: r for r in ctl.store.replicas()}[on[0]]
    assert kept.desired == "run"
    assert uuids[1] not in ctl.store.reserved_by_gpu() and [g.uuid for g in ctl.store.gpus("big")] == [uuids[0]]
    assert ctl.store.get_node("big").generation > before  # type: ignore[union-attr]
    missing = [e for e in ctl.store.node_events("big") if e.kind == "gpu.missing"]
    assert len(missing) == 1 and on[1] in missing[0].message
