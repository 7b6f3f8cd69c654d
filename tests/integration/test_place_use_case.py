"""The place use case (app/place.py) on a real SQLite store: table tests, one fleet and one request per row."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fleet.common.gpus import gpu_type
from fleet.controller.app.place import PlaceArgs, decide, place_deployment
from fleet.controller.core.errors import AlreadyExists, InvalidArgument, NotFound
from fleet.controller.core.estimate import estimate
from fleet.controller.rpc.convert import place_response
from tests.integration.fleet_state import controller, join

Fleet = dict[str, Any]  # node name -> gpus ("2xA100-80GB" or [(index, type)]), or a dict of join() keywords

TABLE: list[tuple[str, Fleet, PlaceArgs, dict[str, Any]]] = [
    # (case, fleet, request, expected: node, gpu indexes, per-GPU bytes, summary words, estimate GPU type)
    ("GPU indexes that are not 0..n-1 (a CUDA_VISIBLE_DEVICES subset)",
     {"n": [(4, "A100-80GB"), (6, "A100-80GB")]},
     PlaceArgs("llama3.1-8b", quant="bf16"),
     {"node": "n", "indexes_in": {4, 6}, "count": 1}),
    ("TP 2 on a node with indexes 2 and 3",
     {"n": [(2, "L4"), (3, "L4")]},
     PlaceArgs("llama3.1-8b", quant="bf16", tp=2),
     {"node": "n", "indexes": [2, 3]}),
    ("the estimate recorded is the one of the GPU type chosen, not another type's",
     {"big": "1xA100-80GB", "small": "1xL40S"},
     PlaceArgs("llama3.1-8b", quant="bf16", node="small"),
     {"node": "small", "estimate_gpu": "L40S"}),
    ("the same on the big GPU",
     {"big": "1xA100-80GB", "small": "1xL40S"},
     PlaceArgs("llama3.1-8b", quant="bf16", node="big"),
     {"node": "big", "estimate_gpu": "A100-80GB"}),
    ("two replicas go to two nodes (anti-affinity)",
     {"a": "1xA100-80GB", "b": "1xA100-80GB"},
     PlaceArgs("llama3.1-8b", quant="bf16", replicas=2),
     {"nodes": ["a", "b"]}),
    ("CPU placement reserves RAM, not GPUs",
     {"c": {"gpus": [], "engines": ("llama.cpp",), "ram_gib": 16}},
     PlaceArgs("smollm2-135m", quant="q4_1", device="cpu", context=512),
     {"node": "c", "indexes": [], "ram": True}),
    ("nothing fits: a reason, no rows",
     {"a": "1xA100-80GB"},
     PlaceArgs("llama3.1-70b", quant="bf16"),
     {"placed": False, "summary": "nothing fits"}),
    ("no GPU anywhere: says how to use the CPU",
     {"c": {"gpus": [], "engines": ("llama.cpp",)}},
     PlaceArgs("llama3.1-8b", quant="bf16"),
     {"placed": False, "summary": "--device cpu"}),
]


def build(tmp_path: Path, fleet: Fleet, url: str):  # type: ignore[no-untyped-def]
    ctl = controller(tmp_path, url)
    for name, spec in fleet.items():
        if isinstance(spec, dict):
            join(ctl, name, **spec)
        else:
            join(ctl, name, spec)
    return ctl


@pytest.mark.parametrize("case,fleet,args,expect", TABLE, ids=[row[0] for row in TABLE])
def test_place(tmp_path: Path, store_url: str, case: str, fleet: Fleet, args: PlaceArgs,
               expect: dict[str, Any]) -> None:
    ctl = build(tmp_path, fleet, store_url)
    outcome = place_deployment(ctl, args, time.time())
    assert outcome.placed == expect.get("placed", True), outcome.summary
    if "summary" in expect:
        assert expect["summary"] in outcome.summary
    if not outcome.placed:
        assert outcome.rows is None and ctl.store.deployments() == []
        return
    dep = ctl.store.deployments()[0]
    replicas = ctl.store.replicas(deployment=dep.name)
    reservations = ctl.store.reservations()
    gpus_of = {g.uuid: g for g in ctl.store.gpus()}
    for x in reservations:  # every reservation names the GPU it says, by UUID and by the node's own index
        assert gpus_of[x.gpu_uuid].index == x.gpu_index
        assert gpus_of[x.gpu_uuid].node == next(r.node for r in replicas if r.id == x.replica)
    if "node" in expect:
        assert [r.node for r in replicas] == [expect["node"]]
    if "nodes" in expect:
        assert sorted(r.node for r in replicas) == expect["nodes"]
    if "indexes" in expect:
        assert sorted(x.gpu_index for x in reservations) == expect["indexes"]
    if "indexes_in" in expect:
        assert {x.gpu_index for x in reservations} <= expect["indexes_in"]
        assert len(reservations) == expect["count"]
    if expect.get("ram"):
        assert replicas[0].ram_bytes > 0
    if "estimate_gpu" in expect:
        catalog = ctl.catalog()
        model = catalog.get(dep.model)
        want = estimate(model, catalog.variant(model, dep.quant, dep.engine), engines=catalog.engines,
                        context=dep.context, tp=dep.tp, gpu_memory_bytes=gpu_type(expect["estimate_gpu"]).memory_bytes)
        assert json.loads(dep.estimate)["total"] == want.total
        # reservations hold the largest estimate over the fleet's GPU types (never under-reserve on any)
        assert all(x.bytes >= want.total for x in reservations)


def test_dry_run_decides_and_changes_nothing(tmp_path: Path, store_url: str) -> None:
    ctl = build(tmp_path, {"a": "2xA100-80GB"}, store_url)
    outcome = place_deployment(ctl, PlaceArgs("qwen2-72b", quant="awq", dry_run=True), time.time())
    assert outcome.placed and outcome.rows is not None
    assert ctl.store.deployments() == [] and ctl.store.reservations() == []


def test_a_name_in_use_is_refused_before_anything_is_written(tmp_path: Path, store_url: str) -> None:
    ctl = build(tmp_path, {"a": "2xA100-80GB"}, store_url)
    place_deployment(ctl, PlaceArgs("llama3.1-8b", quant="bf16", name="chat"), time.time())
    before = ctl.store.reservations()
    with pytest.raises(AlreadyExists, match="pass --name"):
        place_deployment(ctl, PlaceArgs("llama3.1-8b", quant="bf16", name="chat"), time.time())
    assert ctl.store.reservations() == before


@pytest.mark.parametrize("args,error", [
    (PlaceArgs("no-such-model"), NotFound),
    (PlaceArgs("llama3.1-8b", quant="awq-but-not-real"), InvalidArgument),
    (PlaceArgs("llama3.1-8b", quant="bf16", tp=3), InvalidArgument),
])
def test_broken_requests_raise_and_write_nothing(tmp_path: Path, store_url: str, args: PlaceArgs, error: type) -> None:
    ctl = build(tmp_path, {"a": "2xA100-80GB"}, store_url)
    with pytest.raises(error):
        place_deployment(ctl, args, time.time())
    assert ctl.store.deployments() == []


def test_verdicts_for_every_node_only_when_explaining_or_when_nothing_fits(tmp_path: Path, store_url: str) -> None:
    ctl = build(tmp_path, {f"n{i}": "1xA100-80GB" for i in range(3)}, store_url)
    args = PlaceArgs("llama3.1-8b", quant="bf16")
    quiet = place_response(decide(ctl, args, time.time()), explain=False, deployment=None)
    loud = place_response(decide(ctl, replace(args, explain=True), time.time()), explain=True, deployment=None)
    assert quiet.placed and list(quiet.verdicts) == []
    assert sorted(v.node for v in loud.verdicts) == ["n0", "n1", "n2"] and all(v.feasible for v in loud.verdicts)
    failed = decide(ctl, PlaceArgs("llama3.1-70b", quant="bf16", tp=2), time.time())
    shown = place_response(failed, explain=False, deployment=None)
    assert not shown.placed and sorted(v.node for v in shown.verdicts) == ["n0", "n1", "n2"]
    assert all(not v.feasible and "needs 2 ×" in v.reason for v in shown.verdicts)
