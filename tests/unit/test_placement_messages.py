"""What placement says and prefers: real nodes before declared ones, each GPU kind's own need, and reasons
that name the variant tried, this placement's own replicas, and the node that truly came closest."""

from __future__ import annotations

from dataclasses import replace

from fleet.controller.core.placement import DECLARED_NOTE, PlacementRequest
from tests.unit.placement_helpers import GIB, node, opt, place, snapshot


def req(*options, replicas: int = 1, **kw) -> PlacementRequest:  # type: ignore[no-untyped-def]
    return PlacementRequest("q3", replicas, tuple(options), **kw)


def test_a_real_node_is_preferred_to_a_declared_one_that_scores_better() -> None:
    real = node("real", [0, 0, 0, 0, 0, 0, 0, 0])
    declared = replace(node("declared", [60, 0]), declared=True)  # a tight hole: pack would love it
    plan = place(snapshot(real, declared), req(opt(20), explain=True))
    assert [p.node for p in plan.placements] == ["real"]
    v = plan.verdict("declared")
    assert v is not None and v.score is not None and v.note == DECLARED_NOTE
    assert plan.verdict("real").note == ""  # type: ignore[union-attr]
    # the same fleet without the declared flag would have chosen the hole: the preference is what decided
    assert [p.node for p in place(snapshot(real, replace(declared, declared=False)), req(opt(20))).placements] \
        == ["declared"]


def test_a_declared_node_is_used_when_no_real_node_fits() -> None:
    real = node("real", [75] * 8)
    declared = replace(node("declared", 8), declared=True)
    assert [p.node for p in place(snapshot(real, declared), req(opt(20))).placements] == ["declared"]


def test_each_gpu_kind_reserves_its_own_need() -> None:
    big = node("a100", 8)
    small = node("r4090", 2, total=24, gpu_name="RTX4090", cc="8.9")
    o = replace(opt(21.1), needs=((("A100-80GB", 80 * GIB), int(21.1 * GIB)), (("RTX4090", 24 * GIB), int(18.1 * GIB))))
    plan = place(snapshot(big, small), req(o, replicas=2))
    need = {p.node: p.per_gpu_bytes for p in plan.placements}
    assert need == {"a100": int(21.1 * GIB), "r4090": int(18.1 * GIB)}
    # a GPU that holds 18.1 but not 21.1 GiB fits (the largest kind's need would have refused it)
    tight = node("tight", [5.0, 5.0], total=24, gpu_name="RTX4090", cc="8.9")
    assert [p.node for p in place(snapshot(tight), req(o)).placements] == ["tight"]


def test_this_placements_own_replicas_are_not_blamed_on_an_existing_deployment() -> None:
    plan = place(snapshot(node("a", 2), node("b", 2)), req(opt(20), replicas=3, explain=True))
    assert len(plan.placements) == 2 and not plan.complete
    for name in ("a", "b"):
        short = plan.verdict(name).shortfall  # type: ignore[union-attr]
        assert short is not None and short.resource == "anti_affinity"
        assert "of this placement" in short.message and "already runs" not in short.message
    # an existing deployment's replica is still named as such
    existing = place(snapshot(node("a", 2, deployments=("q3",))), req(opt(20)))
    assert existing.verdict("a").shortfall.message == "already runs a replica of q3"  # type: ignore[union-attr]


def test_closest_is_the_node_that_has_the_gpus_and_the_message_names_the_variant() -> None:
    short_gpu = node("gpu-4090", 2, total=24, gpu_name="RTX4090", cc="8.9")
    short_disk = node("gpu-a100", 8, disk=75)
    plan = place(snapshot(short_gpu, short_disk), req(opt(74.2, tp=4, disk=202, source="org/405b")))
    assert not plan.placements
    assert plan.closest.startswith("best node gpu-a100 has the GPU memory but needs 202.0 GiB disk"), plan.closest
    v = plan.verdict("gpu-4090")
    assert v is not None and v.shortfall is not None
    assert v.shortfall.message.startswith("awq on vllm needs 4 × 74.2 GiB")


def test_what_if_names_its_own_earlier_replica_not_a_deployment() -> None:
    from functools import partial

    from fleet.controller.core.options import options_for
    from fleet.controller.core.whatif import what_if_files
    from fleet.controller.store.files import shipped_catalog

    catalog = shipped_catalog()
    result = what_if_files({"nodes": [{"name": "n1", "gpus": [{"type": "A100-80GB", "count": 8}]}]},
                           {"requests": [{"model": "llama3.1-8b", "quant": "bf16", "replicas": 2}]},
                           partial(options_for, catalog=catalog), catalog.workload)
    assert [r.placement is not None for r in result.rows] == [True, False]
    reason = result.rows[1].reason
    assert "holds an earlier replica of request 0" in reason and "already runs a replica" not in reason, reason


def test_a_node_without_gpus_says_so() -> None:
    plan = place(snapshot(node("cpu-only", 0)), req(opt(20)))
    assert plan.verdict("cpu-only").shortfall.message.endswith("the node has no GPU")  # type: ignore[union-attr]
