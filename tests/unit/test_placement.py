"""Placement core: table tests of filters, GPU choice, scorers, replicas, option choice; properties."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.controller.core.placement import (
    NODE_FILTERS,
    Placement,
    PlacementRequest,
    apply,
    usable,
)
from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot
from fleet.controller.core.workload import Workload, parse_workload
from tests.unit.placement_helpers import GIB, WORKLOAD, node, node_from_json, opt, option_from_json, place, snapshot

SCENARIOS = Path(__file__).parent / "placement_scenarios"


def req(*options: Any, replicas: int = 1, **kw: Any) -> PlacementRequest:
    return PlacementRequest("dep", replicas, tuple(options), **kw)


def where(plan: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.node, p.gpus) for p in plan.placements]


# ---------------------------------------------------------------- filters: a reason per rejected node

FILTER_TABLE = [
    # (case, node kwargs, request kwargs, option kwargs, rejected resource or None)
    ("ready passes", {}, {}, {}, None),
    ("cordoned", {"state": "cordoned"}, {}, {}, "state"),
    ("draining", {"state": "draining"}, {}, {}, "state"),
    ("drained", {"state": "drained"}, {}, {}, "state"),
    ("offline", {"state": "offline"}, {}, {}, "state"),
    ("engine missing", {"engines": ("llama.cpp",)}, {}, {}, "engine"),
    ("compute capability", {"cc": "8.0"}, {}, {"cc": "8.9"}, "compute_capability"),
    ("compute capability ok", {"cc": "9.0"}, {}, {"cc": "8.9"}, None),
    ("label missing", {}, {"labels": (("rack", "a"),)}, {}, "label"),
    ("label differs", {"labels": {"rack": "b"}}, {"labels": (("rack", "a"),)}, {}, "label"),
    ("label matches", {"labels": {"rack": "a"}}, {"labels": (("rack", "a"),)}, {}, None),
    ("gpu type differs", {}, {"gpu_type": "L40S"}, {}, "gpu_type"),
    ("gpu type alias", {}, {"gpu_type": "a100-sxm4-80gb"}, {}, None),
    ("ram", {"ram": 8}, {}, {"ram": 16}, "ram"),
    ("disk", {"disk": 10}, {}, {"disk": 40, "source": "org/m"}, "disk"),
    ("disk cached", {"disk": 10, "cached": ("org/m",)}, {}, {"disk": 40, "source": "org/m"}, None),
    ("gpu memory", {"reserved": [70] * 8}, {}, {"per_gpu": 20}, "gpu_memory"),
    ("anti-affinity", {"deployments": ("dep",)}, {}, {}, "anti_affinity"),
    ("anti-affinity off", {"deployments": ("dep",)}, {"anti_affinity": False}, {}, None),
    ("node name", {}, {"node": "other"}, {}, "node"),
]


@pytest.mark.parametrize(("case", "node_kw", "req_kw", "opt_kw", "resource"), FILTER_TABLE,
                         ids=[row[0] for row in FILTER_TABLE])
def test_filters_record_what_is_short(case: str, node_kw: dict[str, Any], req_kw: dict[str, Any],
                                      opt_kw: dict[str, Any], resource: str | None) -> None:
    o = opt(**{"per_gpu": 10, **opt_kw})
    plan = place(snapshot(node("n1", **node_kw)), req(o, **req_kw))
    verdict = plan.verdict("n1")
    assert verdict is not None
    if resource is None:
        assert where(plan) and plan.placements[0].node == "n1"
        assert verdict.score is not None
    else:
        assert not plan.placements
        assert verdict.shortfall is not None and verdict.shortfall.resource == resource, verdict
        assert plan.closest  # "does not fit" is explained, never raised


def test_shortfall_numbers_and_closest_words() -> None:
    gpu07 = node("gpu-07", [1, 58], total=80)
    plan = place(snapshot(gpu07, node("gpu-01", 8, state="cordoned")), req(opt(41.3, tp=2)))
    assert not plan.placements
    short = plan.verdict("gpu-07").shortfall  # type: ignore[union-attr]
    assert short is not None and short.resource == "gpu_memory"
    assert short.needed == 2 * int(41.3 * GIB) and short.free == 101 * GIB
    assert plan.closest == ("awq on vllm needs 2 × 41.3 GiB; best node gpu-07 has 1 × 79.0 GiB free and "
                            "1 × 22.0 GiB free")
    assert plan.verdict("gpu-01").shortfall.resource == "state"  # type: ignore[union-attr]


def test_nothing_ready_says_why() -> None:
    plan = place(snapshot(node("a", state="offline"), node("b", state="cordoned")), req(opt(10)))
    assert not plan.placements and not plan.complete
    assert "node is offline" in plan.closest and "node is cordoned" in plan.closest


def test_empty_fleet_and_no_options_are_plans_not_errors() -> None:
    assert place(Snapshot(()), req(opt(10))).closest == "the fleet has no nodes"
    assert place(snapshot(node("a")), req()).why.startswith("no options")


# ---------------------------------------------------------------- GPU choice inside a node

GPU_TABLE = [
    # (case, reserved GiB per GPU (80 GiB each), per-GPU need, tp, expected GPUs)
    ("tightest single GPU", [0, 50, 0, 0], 25, 1, (1,)),
    ("buddy of a used GPU keeps pairs intact", [0, 70, 0, 0, 0, 0, 0, 0], 20, 1, (0,)),
    ("tp2 on an empty node takes an aligned pair", [0] * 8, 30, 2, (0, 1)),
    ("tp2 avoids breaking intact pairs", [10, 10, 0, 0, 0, 0, 0, 0], 30, 2, (0, 1)),
    ("tp2 aligned pair beside a used pair", [0, 0, 60, 60, 0, 0, 0, 0], 30, 2, (0, 1)),
    ("tp4 takes an aligned quad", [0, 60, 0, 0, 0, 0, 0, 0], 30, 4, (4, 5, 6, 7)),
    ("tp2 unaligned only when no pair fits", [0, 70, 70, 0], 30, 2, (0, 3)),
    ("tp8 takes the node", [0] * 8, 30, 8, tuple(range(8))),
]


@pytest.mark.parametrize(("case", "reserved", "need", "tp", "gpus"), GPU_TABLE, ids=[r[0] for r in GPU_TABLE])
def test_gpu_choice(case: str, reserved: list[float], need: float, tp: int, gpus: tuple[int, ...]) -> None:
    plan = place(snapshot(node("n", reserved)), req(opt(need, tp=tp)))
    assert where(plan) == [("n", gpus)]


def test_memory_used_by_others_is_not_free() -> None:
    n = node("n", 1)
    busy = replace(n, gpus=(replace(n.gpus[0], memory_used_other=70 * GIB),))
    plan = place(snapshot(busy), req(opt(20)))
    assert plan.verdict("n").shortfall.resource == "gpu_memory"  # type: ignore[union-attr]


# ---------------------------------------------------------------- scorers

def test_pack_fills_the_hole_spread_takes_the_emptiest() -> None:
    holey = node("a-holey", [60, 80, 80, 80])  # 20 GiB free on GPU 0 only
    empty = node("b-empty", 4)
    assert where(place(snapshot(holey, empty), req(opt(18))))[0] == ("a-holey", (0,))
    assert where(place(snapshot(holey, empty), req(opt(18), strategy="spread")))[0][0] == "b-empty"


def test_pack_keeps_whole_gpus_for_big_models() -> None:
    # 30 GiB fits both; on `big` it would break the last GPU able to hold a 66 GiB model.
    big = node("a-big", [0, 80])
    scraps = node("b-scraps", [45, 45])
    assert where(place(snapshot(big, scraps), req(opt(30))))[0][0] == "b-scraps"


def test_ties_broken_by_node_name_whatever_the_input_order() -> None:
    nodes = [node(f"n{i:02d}", 8) for i in range(12)]
    for seed in range(5):
        random.Random(seed).shuffle(nodes)
        assert where(place(Snapshot(tuple(nodes)), req(opt(20))))[0][0] == "n00"


def test_scores_are_integers_for_every_candidate() -> None:
    plan = place(snapshot(node("a"), node("b", [40] * 8), node("c", state="offline")), req(opt(20), explain=True))
    verdicts = list(plan.verdicts())
    assert [v.node for v in verdicts] == ["a", "b", "c"]
    assert all(isinstance(v.verdict.score, int) for v in verdicts[:2])
    assert verdicts[2].verdict.shortfall is not None


# ---------------------------------------------------------------- replicas

def test_replicas_go_to_different_nodes() -> None:
    plan = place(snapshot(node("a"), node("b"), node("c")), req(opt(20), replicas=3))
    assert sorted(p.node for p in plan.placements) == ["a", "b", "c"]


def test_replicas_share_a_node_without_anti_affinity() -> None:
    plan = place(snapshot(node("a", 2)), req(opt(30), replicas=4, anti_affinity=False))
    assert plan.complete
    per_gpu: dict[int, int] = {}
    for p in plan.placements:
        for g in p.gpus:
            per_gpu[g] = per_gpu.get(g, 0) + 1
    assert per_gpu == {0: 2, 1: 2}


def test_partial_placement_reports_how_many() -> None:
    plan = place(snapshot(node("a"), node("b")), req(opt(20), replicas=3))
    assert len(plan.placements) == 2 and not plan.complete
    assert plan.why.startswith("placed 2 of 3 replicas")


# ---------------------------------------------------------------- choosing among options

def test_best_quality_that_fits_and_why() -> None:
    bf16 = opt(70, tp=2, quant="bf16", quality=100)
    awq = opt(40, tp=1, quant="awq", quality=72)
    q4 = opt(38, tp=1, quant="q4_k_m", engine="llama.cpp", quality=68)
    plan = place(snapshot(node("a", [0, 30])), req(q4, bf16, awq))
    assert plan.option is not None and plan.option.quant == "awq"
    assert "bf16/vllm (quality 100) does not fit" in plan.why and "chose awq/vllm" in plan.why


def test_best_quality_when_everything_fits() -> None:
    plan = place(snapshot(node("a")), req(opt(20, quant="awq", quality=70), opt(40, quant="bf16", quality=100)))
    assert plan.option is not None and plan.option.quant == "bf16"


def test_replicas_keep_one_quantization() -> None:
    # bf16 fits on one node only: two replicas need the lower-quality awq on both.
    bf16 = opt(70, quant="bf16", quality=100)
    awq = opt(30, quant="awq", quality=70)
    plan = place(snapshot(node("a", [0]), node("b", [40])), req(bf16, awq, replicas=2))
    assert plan.complete and {p.option.quant for p in plan.placements} == {"awq"}


def test_engine_choice_follows_installed_engines() -> None:
    vllm = opt(30, quant="awq", quality=72)
    gguf = opt(30, quant="q4_k_m", engine="llama.cpp", quality=68)
    plan = place(snapshot(node("a", engines=("llama.cpp",))), req(vllm, gguf))
    assert plan.option is not None and plan.option.engine == "llama.cpp"


def test_cpu_device_places_in_ram() -> None:
    cpu = opt(0, tp=0, quant="q4_k_m", engine="llama.cpp", ram=6)
    plan = place(snapshot(node("a", ram=4), node("b", ram=64), node("c", ram=8)), req(cpu, device="cpu"))
    assert where(plan) == [("c", ())]  # pack: the tightest RAM fit
    assert plan.verdict("a").shortfall.resource == "ram"  # type: ignore[union-attr]


def test_explicit_node() -> None:
    plan = place(snapshot(node("a"), node("b")), req(opt(20), node="b"))
    assert where(plan)[0][0] == "b"
    assert plan.verdict("a").shortfall.resource == "node"  # type: ignore[union-attr]


def test_apply_reserves_what_was_placed() -> None:
    snap = snapshot(node("a", 2))
    plan = place(snap, req(opt(30, tp=2)))
    after = apply(snap, plan)
    assert [g.memory_reserved for g in after.by_name["a"].gpus] == [30 * GIB, 30 * GIB]
    assert "dep" in after.by_name["a"].deployments


# ---------------------------------------------------------------- workload and the usable measure

def test_usable_counts_whole_replicas() -> None:
    w = Workload(((40 * GIB, 2, 1, ""),))
    assert usable((80 * GIB, 80 * GIB), w) == 160 * GIB  # two TP-2 replicas
    assert usable((80 * GIB, 39 * GIB), w) == 0  # no second GPU for the pair
    assert usable((80 * GIB, 80 * GIB, 40 * GIB), w) == 160 * GIB  # 2+2+1 slots make only 2 pairs
    w1 = Workload(((30 * GIB, 1, 1, ""),))
    assert usable((80 * GIB, 29 * GIB), w1) == 60 * GIB
    fp8 = Workload(((30 * GIB, 1, 1, "8.9"),))
    assert usable((80 * GIB,), fp8, "8.0") == 0 and usable((80 * GIB,), fp8, "9.0") == 60 * GIB


def test_default_workload_ships() -> None:
    w = WORKLOAD
    assert len(w.classes) >= 10 and all(b > GIB and t in (1, 2, 4, 8) and wt > 0 for b, t, wt, _ in w.classes)
    assert parse_workload('[[class]]\nper_gpu_gib = 1.5\ntp = 2\nweight = 3\n').classes == ((int(1.5 * GIB), 2, 3, ""),)


def test_pack_keeps_fp8_capable_gpus_for_fp8() -> None:
    a100 = node("a-a100", 2)
    h100 = node("b-h100", 2, gpu_name="H100-80GB", cc="9.0")
    assert where(place(snapshot(a100, h100), req(opt(40))))[0][0] == "a-a100"


def test_filters_are_an_explicit_tuple() -> None:
    assert [f.__name__ for f in NODE_FILTERS] == ["not_hosting", "ram_enough", "disk_enough"]



# ---------------------------------------------------------------- scenario fixtures (snapshot in, plan out)

def scenario_files() -> list[Path]:
    return sorted(SCENARIOS.glob("*.json"))


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    case = json.loads(path.read_text())
    snap = Snapshot(tuple(node_from_json(n) for n in case["nodes"]))
    r = case["request"]
    request = PlacementRequest(r.get("deployment", "dep"), r.get("replicas", 1),
                               tuple(option_from_json(o) for o in r["options"]), r.get("node"), r.get("gpu_type"),
                               tuple(sorted(r.get("labels", {}).items())), r.get("device", "gpu"),
                               r.get("strategy", "pack"), r.get("anti_affinity", True))
    plan = place(snap, request)
    want = case["expect"]
    got = [{"node": p.node, "gpus": list(p.gpus), "quant": p.option.quant, "tp": p.option.tp}
           for p in plan.placements]
    assert got == want["placements"], plan
    for name, resource in want.get("rejected", {}).items():
        v = plan.verdict(name)
        assert v is not None and v.shortfall is not None and v.shortfall.resource == resource, (name, v)
    if "closest" in want:
        assert plan.closest == want["closest"]


def test_scenarios_exist() -> None:
    assert len(scenario_files()) >= 5


# ---------------------------------------------------------------- properties

STATES = ("ready", "ready", "ready", "cordoned", "draining", "drained", "offline")


@st.composite
def fleets(draw: st.DrawFn) -> Snapshot:
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        n_gpus = draw(st.sampled_from([1, 2, 4, 8]))
        gpus = tuple(GpuState(f"n{i}-g{j}", j, "A100-80GB", 80 * GIB, draw(st.integers(0, 80)) * GIB,
                              draw(st.sampled_from([0, 0, 0, 2 * GIB])), "8.0") for j in range(n_gpus))
        nodes.append(NodeState(f"n{i}", draw(st.sampled_from(STATES)), gpus, 512 * GIB, 512 * GIB, 2000 * GIB,
                               frozenset({"vllm", "llama.cpp"})))
    return Snapshot(tuple(nodes))


options_st = st.lists(st.builds(lambda g, tp, q: opt(g, tp=tp, quality=q, quant=f"q{q}"),
                                st.integers(1, 80), st.sampled_from([1, 2, 4, 8]), st.sampled_from([50, 70, 100])),
                      min_size=1, max_size=4)


def _check_no_overcommit(snap: Snapshot, placements: tuple[Placement, ...]) -> None:
    taken: dict[str, int] = {}
    free = {g.uuid: g.free for n in snap.nodes for g in n.gpus}
    for p in placements:
        assert len(set(p.gpu_uuids)) == len(p.gpu_uuids) == p.option.tp
        for u in p.gpu_uuids:
            taken[u] = taken.get(u, 0) + p.per_gpu_bytes
    for u, t in taken.items():
        assert t <= free[u], u


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), options_st, st.integers(1, 4), st.sampled_from(["pack", "spread"]), st.booleans())
def test_properties(snap: Snapshot, options: list[Any], replicas: int, strategy: str, anti: bool) -> None:
    request = PlacementRequest("dep", replicas, tuple(options), strategy=strategy,  # type: ignore[arg-type]
                               anti_affinity=anti)
    plan = place(snap, request)
    _check_no_overcommit(snap, plan.placements)
    states = {n.name: n.state for n in snap.nodes}
    assert all(states[p.node] == "ready" for p in plan.placements)
    assert all(p.option in options for p in plan.placements)
    if anti:
        assert len({p.node for p in plan.placements}) == len(plan.placements)
    # deterministic, whatever the node order
    again = place(Snapshot(tuple(reversed(snap.nodes))), request)
    assert again.placements == plan.placements and again.closest == plan.closest
    # every node has exactly one verdict
    assert sorted(v.node for v in plan.verdicts()) == sorted(states)


def test_large_fleet_shortlist_path_is_safe_and_deterministic() -> None:
    # > EXACT_STATES distinct free states: the indexed shortlist path, and snapshots derived incrementally.
    rng = random.Random(7)
    nodes = [node(f"n{i:03d}", [rng.choice([0, 10, 25, 40, 60, 75]) for _ in range(8)]) for i in range(300)]
    snap = Snapshot(tuple(nodes))
    fresh = snap
    for i in range(40):
        request = PlacementRequest(f"d{i}", 1, (opt(rng.choice([6, 18, 30, 45])), opt(rng.choice([12, 25]), tp=2)))
        plan = place(snap, request)
        assert plan.placements == place(Snapshot(tuple(reversed(snap.nodes))), request).placements
        _check_no_overcommit(snap, plan.placements)
        assert sum(1 for _ in plan.verdicts()) == 300
        snap = apply(snap, plan)
        fresh = Snapshot(snap.nodes)  # built from scratch: must group exactly like the derived one
        assert {k: {f: [n.name for n in ns] for f, ns in v.items()} for k, v in snap.groups.items()} == \
            {k: {f: [n.name for n in ns] for f, ns in v.items()} for k, v in fresh.groups.items()}
        assert snap.index == fresh.index
