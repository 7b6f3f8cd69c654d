"""Multi-node planning on declared GPUs: one replica over several nodes (gang placement, PP estimates).

The shipped catalog and estimator, the real placement core: deepseek-r1 fp8 on two 8×H100 nodes, llama3.1-405b
bf16 on two 8×A100-80GB, a 3-node case, mixed GPU counts refused with the reason, rack labels, CPU parts.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.controller.core.drain_plan import Movable, plan_drain
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.estimate import GIB, estimate, pp_layers, weight_groups
from fleet.controller.core.gpus import fleet_gpu_types
from fleet.controller.core.options import options_for
from fleet.controller.core.placement import PlacementRequest, Plan, apply, place
from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot
from fleet.controller.core.whatif import what_if_files
from fleet.controller.store.files import shipped_catalog

CATALOG = shipped_catalog()
ALL = frozenset({"vllm", "llama.cpp"})


def node(name: str, count: int = 8, kind: str = "H100-80GB", *, labels: dict[str, str] | None = None,
         reserved: float = 0, multinode: frozenset[str] = ALL, ram: float = 2048, state: str = "ready") -> NodeState:
    from fleet.common.gpus import gpu_type

    t = gpu_type(kind)
    gpus = tuple(GpuState(f"{name}-gpu{i}", i, t.name, t.memory_bytes, int(reserved * GIB), 0, t.compute_capability)
                 for i in range(count))
    return NodeState(name, state, gpus, int(ram * GIB), int(ram * GIB), 20_000 * GIB, ALL,
                     tuple(sorted((labels or {}).items())), multinode=multinode)


def plan_for(snap: Snapshot, model: str, quant: str | None, *, nodes: int | None = None, replicas: int = 1,
             device: str = "gpu", **kw: object) -> Plan:
    types = fleet_gpu_types(snap) if device == "gpu" else ()
    opts = options_for(model, quant, None, kw.pop("context", None), types, catalog=CATALOG, nodes=nodes,  # type: ignore[arg-type]
                       device=device)
    return place(snap, PlacementRequest(f"{model}-{quant}", replicas, opts, device=device, **kw),  # type: ignore[arg-type]
                 CATALOG.workload)


# ---------------------------------------------------------------- the cases


def test_deepseek_r1_fp8_on_two_8xh100_is_one_replica_tp8_pp2() -> None:
    plan = plan_for(Snapshot((node("a"), node("b"))), "deepseek-r1", "fp8")
    assert plan.complete and len(plan.placements) == 1
    p = plan.placements[0]
    assert p.nodes == ("a", "b") and (p.option.engine, p.option.tp, p.option.nodes) == ("vllm", 8, 2)
    assert [len(part.gpus) for part in p.parts] == [8, 8]
    assert p.per_gpu_bytes <= 80 * GIB * 0.98
    assert "no single node fits" in plan.why and "TP 8 × PP 2" in plan.why
    # every GPU of both nodes carries the per-GPU estimate
    after = apply(Snapshot((node("a"), node("b"))), plan)
    assert all(g.memory_reserved == p.per_gpu_bytes for n in after.nodes for g in n.gpus)


def test_llama31_405b_bf16_on_two_8xa100_80gb() -> None:
    plan = plan_for(Snapshot((node("a", kind="A100-80GB"), node("b", kind="A100-80GB"))), "llama3.1-405b", "bf16")
    assert plan.complete
    p = plan.placements[0]
    assert p.nodes == ("a", "b") and (p.option.tp, p.option.nodes) == (8, 2)
    est = p.option.estimate_for("A100-SXM4-80GB", 80 * GIB) or next(e for _, e in p.option.estimates)
    assert est.nodes == 2 and len(est.stage_totals) == 2 and est.total == max(est.stage_totals)
    # 810 GB of bf16 over 16 GPUs, plus KV and runtime
    assert 45 * GIB < p.per_gpu_bytes < 70 * GIB


def test_three_node_case_deepseek_on_4_gpu_nodes_is_tp4_pp3() -> None:
    plan = plan_for(Snapshot((node("a", 4), node("b", 4), node("c", 4))), "deepseek-r1", "fp8")
    assert plan.complete
    p = plan.placements[0]
    assert p.nodes == ("a", "b", "c") and (p.option.tp, p.option.nodes) == (4, 3)
    assert "2 nodes" in plan.why  # why not two: no two nodes with 8 such GPUs


def test_mixed_gpu_counts_are_refused_with_the_reason() -> None:
    plan = plan_for(Snapshot((node("a", 8), node("b", 4))), "deepseek-r1", "fp8")
    assert not plan.complete and not plan.placements
    assert "same TP on every node" in plan.closest and "b has 4 GPUs of 8" in plan.closest


def test_the_misleading_message_is_gone_one_node_says_how_many_it_needs() -> None:
    with pytest.raises(InvalidArgument) as e:
        options_for("deepseek-r1", "fp8", None, None, (replace(fleet_gpu_types(Snapshot((node("a"),)))[0]),),
                    catalog=CATALOG, nodes=1)
    assert "no variant fp8 runs" not in e.value.message
    assert "needs 2 nodes" in e.value.message and "--nodes 2" in e.value.message


# ---------------------------------------------------------------- choices


def test_fewer_nodes_first_one_node_when_one_fits() -> None:
    plan = plan_for(Snapshot((node("a", kind="A100-80GB"), node("b", kind="A100-80GB"))), "llama3.1-70b", "bf16")
    assert plan.complete and plan.placements[0].nodes == ("a",) and not plan.placements[0].parts


def test_without_quant_a_quality_that_fits_one_node_beats_one_that_needs_two() -> None:
    plan = plan_for(Snapshot((node("a"), node("b"))), "llama3.1-405b", None)
    assert plan.complete and len(plan.placements[0].nodes) == 1 and plan.option is not None
    assert plan.option.quant != "bf16"
    assert "bf16/vllm (quality 100) fits across 2 nodes" in plan.why and "--quant bf16" in plan.why


def test_nodes_sharing_a_rack_are_preferred() -> None:
    snap = Snapshot((node("a", labels={"rack": "r1"}), node("b", labels={"rack": "r2"}),
                     node("c", labels={"rack": "r1"})))
    plan = plan_for(snap, "deepseek-r1", "fp8")
    assert plan.placements[0].nodes == ("a", "c") and "rack=r1" in plan.why


def test_fabric_when_no_rack_holds_the_gang() -> None:
    snap = Snapshot((node("a", labels={"rack": "r1", "fabric": "f2"}), node("b", labels={"rack": "r2", "fabric": "f1"}),
                     node("c", labels={"rack": "r3", "fabric": "f1"})))
    plan = plan_for(snap, "deepseek-r1", "fp8")
    assert plan.placements[0].nodes == ("b", "c") and "fabric=f1" in plan.why


def test_explicit_nodes_spans_that_many_even_when_one_would_do() -> None:
    plan = plan_for(Snapshot((node("a", kind="A100-80GB"), node("b", kind="A100-80GB"))), "llama3.1-8b", "bf16",
                    nodes=2)
    assert plan.complete and plan.placements[0].nodes == ("a", "b")
    assert plan.placements[0].option.nodes == 2


def test_a_node_without_multinode_support_is_not_a_part() -> None:
    snap = Snapshot((node("a"), node("b", multinode=frozenset()), node("c")))
    plan = plan_for(snap, "deepseek-r1", "fp8", explain=True)
    assert plan.placements[0].nodes == ("a", "c")


def test_all_or_nothing_two_replicas_need_four_nodes() -> None:
    plan = plan_for(Snapshot((node("a"), node("b"), node("c"))), "deepseek-r1", "fp8", replicas=2)
    assert not plan.complete and len(plan.placements) == 1  # the second gang has only one node left
    assert "placed 1 of 2" in plan.why


def test_cpu_parts_llama_cpp_over_two_nodes_share_the_ram() -> None:
    snap = Snapshot((node("a", 0, ram=64), node("b", 0, ram=64)))
    plan = plan_for(snap, "smollm2-135m", "q4_1", nodes=2, device="cpu", context=512)
    p = plan.placements[0]
    assert plan.complete and p.nodes == ("a", "b") and p.option.engine == "llama.cpp"
    one = options_for("smollm2-135m", "q4_1", None, 512, (), catalog=CATALOG, device="cpu")[0]
    assert p.parts[0].ram_bytes < one.ram_bytes  # each node holds a share of the weights and the cache
    assert p.parts[0].disk_bytes > 0 and p.parts[1].disk_bytes == 0  # rpc-servers download nothing


def test_vllm_cpu_is_never_split_over_nodes() -> None:
    with pytest.raises(InvalidArgument, match="one node"):
        options_for("tinyllama-1.1b", "bf16", "vllm", 512, (), catalog=CATALOG, device="cpu", nodes=2)


# ---------------------------------------------------------------- estimates per stage


def test_pp_layers_are_vllms_split() -> None:
    assert pp_layers(61, 2) == [31, 30]
    assert pp_layers(126, 3) == [42, 42, 42]
    assert pp_layers(10, 4) == [2, 3, 3, 2]  # the remainder before the last stage, backwards
    assert sum(pp_layers(95, 7)) == 95


def test_stage_weights_add_up_to_the_model() -> None:
    m = CATALOG.get("llama3.1-405b")
    v = CATALOG.variant(m, "bf16")
    one = estimate(m, v, engines=CATALOG.engines, tp=8, context=8192)
    two = estimate(m, v, engines=CATALOG.engines, tp=8, context=8192, nodes=2)
    g = weight_groups(m, v)
    assert g.embed + g.output + g.dense + g.experts == pytest.approx(one.weights * 8, rel=0.01)
    assert two.weights == pytest.approx(one.weights / 2, rel=0.02)
    assert two.kv_cache == pytest.approx(one.kv_cache / 2, rel=0.02)
    assert two.total < one.total and len(two.stage_totals) == 2


def test_llama_cpp_over_nodes_is_a_layer_split_like_local_gpus() -> None:
    m = CATALOG.get("llama3.1-70b")
    v = CATALOG.variant(m, "q4_k_m")
    local = estimate(m, v, engines=CATALOG.engines, tp=4, context=8192)
    spread = estimate(m, v, engines=CATALOG.engines, tp=2, context=8192, nodes=2)
    assert (spread.weights, spread.kv_cache) == (local.weights, local.kv_cache)


# ---------------------------------------------------------------- drain and what-if


def test_draining_a_part_moves_the_whole_replica() -> None:
    snap = Snapshot((node("a"), node("b"), node("c")))
    placed = plan_for(snap, "deepseek-r1", "fp8")
    snap = apply(snap, placed)
    opts = options_for("deepseek-r1", "fp8", "vllm", None, fleet_gpu_types(snap), catalog=CATALOG, nodes=None)
    request = PlacementRequest("deepseek-r1-fp8", 1, opts)
    drain = plan_drain(snap, ["b"], [Movable("r1", "deepseek-r1-fp8", request)], CATALOG.workload)
    # a still holds the old main (make-before-break): the new gang needs two nodes other than b
    assert drain.blocked and "2 nodes" in drain.blocked[0].reason
    more = snap.with_nodes([node("d")])
    drain = plan_drain(more, ["b"], [Movable("r1", "deepseek-r1-fp8", request)], CATALOG.workload)
    assert [m.placement.nodes for m in drain.moves] == [("c", "d")]


def test_what_if_understands_nodes() -> None:
    fleet = {"nodes": [{"name": n, "gpus": [{"type": "H100-80GB", "count": 8}]} for n in ("a", "b", "c", "d")]}
    result = what_if_files(fleet, {"requests": [{"model": "deepseek-r1", "quant": "fp8", "replicas": 2}]},
                           lambda *a, **k: options_for(*a, catalog=CATALOG, **k), CATALOG.workload).as_json()
    assert result["placed_total"] == 2
    assert [p["nodes"] for p in result["placements"]] == [["a", "b"], ["c", "d"]]
    one = what_if_files(fleet, {"requests": [{"model": "deepseek-r1", "quant": "fp8", "nodes": 1}]},
                        lambda *a, **k: options_for(*a, catalog=CATALOG, **k), CATALOG.workload).as_json()
    assert one["placed_total"] == 0 and "needs 2 nodes" in one["rejected"][0]["reason"]


# ---------------------------------------------------------------- `fleet capacity`: the largest that fits


def test_largest_variant_on_one_node_and_across() -> None:
    from fleet.controller.core.largest import largest_fits

    def fits(*nodes: NodeState) -> dict[str, tuple[str, str, int]]:
        out = largest_fits(Snapshot(nodes), CATALOG, lambda *a, **k: options_for(*a, catalog=CATALOG, **k))
        return {f.scope: (f.model, f.quant, len(f.placement.nodes)) for f in out}

    two = fits(node("a"), node("b"))
    assert two["one node"][2] == 1 and two["across nodes"][2] == 2
    assert two["across nodes"][:2] == ("llama3.1-405b", "bf16")  # the largest weights that fit two 8×H100
    # one node alone: the same answer twice; a node without disk for any weights: nothing, and fast
    alone = fits(node("a"))
    assert alone["one node"] == alone["across nodes"]
    assert fits(replace(node("a"), disk_free=0)) == {}
