"""The store's in-memory mirror stays equal to the database through every kind of write, local or not."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fleet.controller.app import drain, nodes
from fleet.controller.app.deployments import remove
from fleet.controller.app.place import PlaceArgs, place_deployment
from fleet.controller.store.mirror import Mirror
from fleet.controller.store.repository import Store
from tests.integration.fleet_state import controller, go_offline, join, report


def picture(m: Mirror) -> dict[str, Any]:
    """Everything reads see, as plain data."""
    return {
        "nodes": {n: r.model_dump() for n, r in m.nodes.items()},
        "gpus": {n: [g.model_dump() for g in gs] for n, gs in m.gpus.items() if gs},
        "deployments": {d: r.model_dump() for d, r in m.deployments.items()},
        "replicas": {i: r.model_dump() for i, r in m.replicas.items()},
        "by_node": {k: sorted(v) for k, v in m.by_node.items()},
        "by_deployment": {k: sorted(v) for k, v in m.by_deployment.items()},
        "reservations": {k: sorted((x.gpu_uuid, x.bytes) for x in v) for k, v in m.reservations.items() if v},
        "reserved": dict(m.reserved),
    }


def fresh(store: Store) -> dict[str, Any]:
    m = Mirror()
    with store.read() as s:
        m.load(s)
    return picture(m)


def test_mirror_equals_a_fresh_load_after_every_step(tmp_path: Path, store_url: str) -> None:
    ctl = controller(tmp_path, store_url)
    steps = []

    def check(what: str) -> None:
        steps.append(what)
        assert picture(ctl.store.mirror) == fresh(ctl.store), f"mirror diverged after: {what}"

    join(ctl, "a", "2xA100-80GB")
    join(ctl, "b", "2xA100-80GB")
    join(ctl, "c", "1xA100-80GB")
    check("join")
    place_deployment(ctl, PlaceArgs("llama3.1-8b", quant="bf16", name="chat", replicas=2), time.time())
    place_deployment(ctl, PlaceArgs("qwen2-72b", quant="awq", name="big"), time.time())
    check("place")
    for n in ("a", "b", "c"):
        report(ctl, n)
    check("reports")
    nodes.cordon(ctl, "c", True, "fan", "tests")
    nodes.cordon(ctl, "c", False, "", "tests")
    check("cordon")
    drain.start(ctl, ["a"], time.time(), who="tests")
    check("drain start")
    for n in ("a", "b", "c"):
        report(ctl, n)
    for row in ctl.store.drains():
        drain.drive(ctl, row, time.time() + 60)
    check("drain drive")
    go_offline(ctl, "b", time.time())
    check("offline")
    remove(ctl, "chat")
    check("remove deployment")
    for n in ("a", "b", "c"):
        report(ctl, n, "stopped")
    check("stopped reports")
    nodes.remove(ctl, "c", force=True)
    check("remove node")
    assert len(steps) == 10


def test_another_controller_s_write_reaches_the_mirror_on_sync(tmp_path: Path, store_url: str) -> None:
    ctl = controller(tmp_path, store_url)
    join(ctl, "a", "1xA100-80GB")
    other = Store(ctl.store.url)  # a second controller on the same database
    pushed: list[set[str]] = []
    ctl.store.on_generation = pushed.append
    other.set_cordon("a", True, "from the other controller", "ops", time.time())
    assert ctl.store.get_node("a").admin_state == "ready"  # type: ignore[union-attr]  # not yet: no sync
    ctl.store.sync()
    assert ctl.store.get_node("a").admin_state == "cordoned"  # type: ignore[union-attr]
    other.set_cordon("a", False, "", "ops", time.time())
    other.stop_node_replicas("a")  # nothing to stop: no generation bump
    assert ctl.store.sync() == set() and pushed == []
    placed = place_deployment(controller_on(other, tmp_path), PlaceArgs("llama3.1-8b", quant="bf16", node="a",
                                                                        name="x"), time.time())
    assert placed.placed, placed.summary
    assert ctl.store.sync() == {"a"} and pushed == [{"a"}]  # the node's session here is told
    assert [r.node for r in ctl.store.replicas(deployment="x")] == ["a"]


def controller_on(store: Store, tmp_path: Path):  # type: ignore[no-untyped-def]
    from fleet.controller.app.controller import Controller, Settings
    from fleet.controller.app.credentials import Credentials

    ctl = Controller(store, Settings(), Credentials(), tmp_path)
    return ctl
