"""How well and how fast `place()` packs: ratio to the exact optimum, paired baselines, latency at scale.

    python benchmarks/placement_bench.py [--seeds 30] [--quick]

Packing: realistic small fleets (8×A100-80, 8×H100, 4×L40S, 2×RTX4090, 4×A10, 1×RTX3090 nodes) and
request sequences drawn from the catalog with popular-model skew (per-GPU needs from the estimator,
every valid smallest TP per GPU type as an option). Requests arrive one by one; the metric is the
number of deployments placed before the first rejection. The optimum for a fixed arrival order is
the largest k such that the first k requests can all be placed at once: OR-Tools CP-SAT decides
feasibility of each k (`pip install .[bench]`); without OR-Tools the optimum columns are skipped.
pack, first-fit and spread run on the same sequences (paired).

Latency: fleets of 10 … 10,000 nodes of the same mixes, filled to 0 / 50 / 90 % by independent random
replicas per node (so few nodes are identical: a hard case for grouping), then a stream of
placements, each applied before the next like the controller does. Times are of `place()` alone,
including regrouping the changed snapshot; `cold` is the first call on a freshly built snapshot.
The optimum: one CP-SAT model per seed (maximise a placed prefix), 1.5 s on 2 workers; "bound" is
the solver's proven upper bound, so a seed is proven when opt == bound.
Hard instances (issue 13): two or three servers of mixed GPU sizes, a per-seed mix of one-GPU models and
large ones that need an 80 GB GPU or TP 2-8, filled until the first rejection (70-95 % of VRAM reserved);
the optimum as above with a longer limit, reported where CP-SAT proves it and first-fit misses it.
Targets (issue 4): mean ratio to optimum ≥ 0.95, worst seed ≥ 0.85, p99 ≤ 15 ms at 10,000 nodes.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.common.gpus import GpuType, gpu_type
from fleet.controller.core.options import options_for
from fleet.controller.core.placement import Option, PlacementRequest, Plan, apply
from fleet.controller.core.placement import place as core_place
from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot, reserve
from fleet.controller.store.files import shipped_catalog

CATALOG = shipped_catalog()


def place(snap: Snapshot, request: PlacementRequest) -> Plan:
    # explain off, as the live Place RPC runs unless an operator asks for --explain
    return core_place(snap, request, CATALOG.workload)


MIB = 1024**2
ENGINES = frozenset({"vllm", "llama.cpp"})
NODE_TYPES: dict[str, tuple[str, int]] = {
    "a100x8": ("A100-80GB", 8), "h100x8": ("H100-80GB", 8), "l40sx4": ("L40S", 4),
    "4090x2": ("RTX4090", 2), "a10x4": ("A10", 4), "3090x1": ("RTX3090", 1),
}
# How often each server shape appears in on-prem fleets we model (many small boxes, fewer big ones).
NODE_WEIGHTS = {"a100x8": 3, "h100x8": 2, "l40sx4": 4, "4090x2": 4, "a10x4": 3, "3090x1": 2}
# Popular (model, quant) with a download-count-like skew: 7-8B first, then 14-32B, then 70B-class.
POPULAR: list[tuple[str, str, int]] = [
    ("llama3.1-8b", "awq", 14), ("llama3.1-8b", "bf16", 12), ("qwen2.5-7b", "awq", 8), ("qwen3-8b", "bf16", 8),
    ("mistral-7b", "q4_k_m", 6), ("qwen2.5-14b", "awq", 6), ("phi4", "awq", 4), ("gemma2-9b", "bf16", 4),
    ("qwen2.5-32b", "awq", 6), ("deepseek-r1-distill-qwen-32b", "awq", 4), ("qwen3-32b", "fp8", 3),
    ("gemma3-27b", "bf16", 3), ("mixtral-8x7b", "awq", 3), ("llama3.1-70b", "awq", 5), ("qwen2.5-72b", "awq", 4),
    ("llama3.3-70b", "fp8", 3), ("gpt-oss-20b", "mxfp4", 3), ("gpt-oss-120b", "mxfp4", 2),
    ("llama3.1-70b", "bf16", 1), ("qwen3-30b-a3b", "fp8", 2),
]
CONTEXT = 8192
WORKERS = 2  # CP-SAT workers: the target machine has 2 cores


@dataclass(frozen=True)
class Ask:
    name: str
    options: tuple[Option, ...]


def catalog_asks() -> list[tuple[Ask, int]]:
    types = [gpu_type(t) for t, _ in NODE_TYPES.values()]
    out = []
    for model, quant, weight in POPULAR:
        try:
            opts = options_for(model, quant, None, CONTEXT, types, catalog=CATALOG)
        except Exception as e:  # noqa: BLE001 - a catalog gap should not stop the benchmark
            print(f"  (skipping {model} {quant}: {e})", file=sys.stderr)
            continue
        out.append((Ask(f"{model}:{quant}", opts), weight))
    return out


def make_node(name: str, kind: str) -> NodeState:
    gname, count = NODE_TYPES[kind]
    g: GpuType = gpu_type(gname)
    gpus = tuple(GpuState(f"{name}-g{i}", i, g.name, g.memory_bytes, 0, 0, g.compute_capability)
                 for i in range(count))
    return NodeState(name, "ready", gpus, 512 << 30, 512 << 30, 4000 << 30, ENGINES)


def random_fleet(rng: random.Random, n: int) -> Snapshot:
    kinds = list(NODE_WEIGHTS)
    weights = [NODE_WEIGHTS[k] for k in kinds]
    return Snapshot(tuple(make_node(f"n{i:05d}", rng.choices(kinds, weights)[0]) for i in range(n)))


def sequence(rng: random.Random, asks: list[tuple[Ask, int]], n: int) -> list[Ask]:
    return rng.choices([a for a, _ in asks], [w for _, w in asks], k=n)


# ---------------------------------------------------------------- placement policies


def run_place(snap: Snapshot, seq: Sequence[Ask], strategy: str) -> int:
    for i, ask in enumerate(seq):
        plan = place(snap, PlacementRequest(f"d{i}", 1, ask.options, strategy=strategy))  # type: ignore[arg-type]
        if not plan.placements:
            return i
        snap = apply(snap, plan)
    return len(seq)


def _cc_ok(have: str, need: str) -> bool:
    if not need:
        return True
    return bool(have) and tuple(map(int, have.split("."))) >= tuple(map(int, need.split(".")))


def first_fit(snap: Snapshot, ask: Ask) -> tuple[NodeState, Option, list[int]] | None:
    for node in sorted(snap.nodes, key=lambda n: n.name):
        for o in sorted(ask.options, key=lambda o: o.tp):
            ok = [i for i, g in enumerate(node.gpus)
                  if g.free >= o.per_gpu_bytes and _cc_ok(g.compute_capability, o.min_compute_capability)]
            if len(ok) >= o.tp:
                return node, o, ok[:o.tp]
    return None


def run_first_fit(snap: Snapshot, seq: Sequence[Ask]) -> int:
    for i, ask in enumerate(seq):
        got = first_fit(snap, ask)
        if got is None:
            return i
        node, o, pos = got
        snap = snap.with_nodes([reserve(node, {p: o.per_gpu_bytes for p in pos}, deployment=f"d{i}")])
    return len(seq)


# ---------------------------------------------------------------- exact optimum (CP-SAT)


def optimum(snap: Snapshot, seq: Sequence[Ask], lower: int, time_limit: float) -> tuple[int, int]:
    """(best prefix found, proven upper bound) for "how many of the first requests fit all at once".

    One CP-SAT model: placed[r] says request r is placed, placed[r] >= placed[r+1] makes the placed
    ones a prefix, and the objective maximises their number. When the bound equals the value the
    optimum is proven; otherwise the bound still caps the optimum, so ratios against it are safe.
    """
    from ortools.sat.python import cp_model

    horizon = min(len(seq), lower + max(6, lower // 3))
    m = cp_model.CpModel()
    placed = [m.NewBoolVar("") for _ in range(horizon)]
    usage: dict[tuple[int, int], list[tuple[int, object]]] = {}
    for r, ask in enumerate(seq[:horizon]):
        xs = []
        for ni, node in enumerate(snap.nodes):
            for o in ask.options:
                need = -(-o.per_gpu_bytes // MIB)
                ok = [gi for gi, g in enumerate(node.gpus)
                      if g.free // MIB >= need and _cc_ok(g.compute_capability, o.min_compute_capability)]
                if len(ok) < o.tp:
                    continue
                x = m.NewBoolVar("")
                ys = []
                for gi in ok:
                    y = m.NewBoolVar("")
                    m.AddImplication(y, x)
                    ys.append(y)
                    usage.setdefault((ni, gi), []).append((need, y))
                m.Add(sum(ys) == o.tp * x)  # type: ignore[arg-type]
                xs.append(x)
        m.Add(sum(xs) == placed[r])  # type: ignore[arg-type]
        if r:
            m.AddImplication(placed[r], placed[r - 1])
    load = {}
    for (ni, gi), items in usage.items():
        cap = snap.nodes[ni].gpus[gi].free // MIB
        load[(ni, gi)] = m.NewIntVar(0, cap, "")
        m.Add(load[(ni, gi)] == sum(need * y for need, y in items))  # type: ignore[misc]
    # Symmetry breaking: identical GPUs of a node (same kind, same free memory) in decreasing load, and
    # identical nodes in decreasing total load. Any solution can be permuted into this order.
    node_load = {}
    for ni, node in enumerate(snap.nodes):
        same_gpus: dict[tuple[int, str], list[object]] = {}
        for gi, g in enumerate(node.gpus):
            if (ni, gi) in load:
                same_gpus.setdefault((g.free, g.compute_capability), []).append(load[(ni, gi)])
        for gl in same_gpus.values():
            for a, b in zip(gl, gl[1:], strict=False):
                m.Add(a >= b)  # type: ignore[operator]
        node_load[ni] = sum(load[(ni, gi)] for gi in range(len(node.gpus)) if (ni, gi) in load)
    by_kind: dict[tuple[object, ...], list[int]] = {}
    for ni, node in enumerate(snap.nodes):
        by_kind.setdefault((node.attr_key, node.free_key), []).append(ni)
    for same in by_kind.values():
        for a, b in zip(same, same[1:], strict=False):
            m.Add(node_load[a] >= node_load[b])  # type: ignore[operator]
    m.Add(sum(placed) >= lower)  # type: ignore[arg-type]  # a heuristic already placed this many
    m.Maximize(sum(placed))  # type: ignore[arg-type]
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = WORKERS
    status = solver.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return lower, horizon
    value = int(solver.ObjectiveValue())
    bound = int(solver.BestObjectiveBound() + 1e-6)
    if value == horizon and horizon < len(seq):
        return optimum(snap, seq, value, time_limit)  # the horizon was binding: look further
    return value, bound


# ---------------------------------------------------------------- latency fleets


def fill(rng: random.Random, snap: Snapshot, asks: list[tuple[Ask, int]], fullness: float) -> Snapshot:
    """Each node independently gets random replicas until about `fullness` of its VRAM is reserved."""
    if fullness <= 0:
        return snap
    pool = [a for a, _ in asks]
    weights = [w for _, w in asks]
    nodes = []
    for node in snap.nodes:
        target = min(0.99, max(0.0, rng.gauss(fullness, 0.08)))
        total = sum(g.memory_total for g in node.gpus)
        misses = 0
        while misses < 6 and sum(g.memory_reserved for g in node.gpus) < target * total:
            ask = rng.choices(pool, weights)[0]
            o = rng.choice(ask.options)
            ok = [i for i, g in enumerate(node.gpus)
                  if g.free >= o.per_gpu_bytes and _cc_ok(g.compute_capability, o.min_compute_capability)]
            if len(ok) < o.tp:
                misses += 1
                continue
            node = reserve(node, {i: o.per_gpu_bytes for i in rng.sample(ok, o.tp)}, deployment=ask.name)
        nodes.append(node)
    return Snapshot(tuple(nodes))


def latency(rng: random.Random, asks: list[tuple[Ask, int]], n_nodes: int, fullness: float,
            placements: int) -> tuple[float, float, float, int, int]:
    """(p50 ms, p99 ms, cold ms, placed, groups)."""
    snap = fill(rng, random_fleet(rng, n_nodes), asks, fullness)
    seq = sequence(rng, asks, placements)
    # A long-lived controller freezes its loaded state out of the cyclic GC (gc.freeze); without it a
    # gen-2 collection over 10,000 nodes' objects lands inside some placement and is not placement work.
    gc.collect()
    gc.freeze()
    times = []
    placed = 0
    groups = 0
    cold = 0.0
    for i, ask in enumerate(seq):
        request = PlacementRequest(f"bench-{i}", 1, ask.options)
        t0 = time.perf_counter()
        plan = place(snap, request)
        dt = (time.perf_counter() - t0) * 1000
        if i == 0:
            cold = dt
            groups = sum(len(v) for v in snap.groups.values())
        else:
            times.append(dt)
        if plan.placements:
            placed += 1
            snap = apply(snap, plan)
    gc.unfreeze()
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return p50, p99, cold, placed, groups


# ---------------------------------------------------------------- hard instances

# Small models (one GPU of any size) and large ones (one 80 GB GPU, or TP 2-8 on smaller ones), drawn in
# a mix that changes per seed: the pattern where taking the wrong GPUs early strands the large requests.
SMALL = ("llama3.1-8b:awq", "llama3.1-8b:bf16", "qwen2.5-7b:awq", "qwen3-8b:bf16", "mistral-7b:q4_k_m",
         "qwen2.5-14b:awq", "gemma2-9b:bf16")
LARGE = ("llama3.1-70b:awq", "qwen2.5-72b:awq", "llama3.3-70b:fp8", "gpt-oss-120b:mxfp4", "llama3.1-70b:bf16",
         "mixtral-8x7b:awq", "qwen2.5-32b:awq", "gemma3-27b:bf16")


def hard_instance(seed: int, asks: list[tuple[Ask, int]]) -> tuple[Snapshot, list[Ask]]:
    """Two or three servers of mixed GPU sizes (24-80 GB) and 150 requests that only ask for what fits the
    empty fleet somewhere (a request that fits nowhere says nothing about packing)."""
    rng = random.Random(2000 + seed)
    kinds = [rng.choice(list(NODE_TYPES)) for _ in range(rng.randint(2, 3))]
    snap = Snapshot(tuple(make_node(f"n{i}", k) for i, k in enumerate(kinds)))
    by_name = {a.name: a for a, _ in asks}
    fits = [n for n in by_name if place(snap, PlacementRequest("probe", 1, by_name[n].options)).placements]
    small = [n for n in SMALL if n in fits]
    large = [n for n in LARGE if n in fits] or small
    small = small or large
    p_small = rng.uniform(0.4, 0.7)
    return snap, [by_name[rng.choice(small if rng.random() < p_small else large)] for _ in range(150)] if small else []


def reserved_share(snap: Snapshot, seq: Sequence[Ask], k: int) -> float:
    """Share of the fleet's GPU memory reserved after pack placed the first k requests."""
    for i, ask in enumerate(seq[:k]):
        snap = apply(snap, place(snap, PlacementRequest(f"d{i}", 1, ask.options)))
    gpus = [g for n in snap.nodes for g in n.gpus]
    return sum(g.memory_reserved for g in gpus) / sum(g.memory_total for g in gpus)


def hard_section(asks: list[tuple[Ask, int]], seeds: int, time_limit: float) -> None:
    print(f"\nHard instances: mixed GPU sizes and TP, filled until the first rejection; CP-SAT {time_limit:g} s each")
    print(f"{'seed':>4} {'nodes':<22} {'full':>5} {'pack':>5} {'ffit':>5} {'sprd':>5} {'opt':>5} {'bound':>5} "
          f"{'solve s':>7}")
    rows = []
    for seed in range(seeds):
        snap, seq = hard_instance(seed, asks)
        if not seq:
            continue
        kp, kf, ks = run_place(snap, seq, "pack"), run_first_fit(snap, seq), run_place(snap, seq, "spread")
        t0 = time.perf_counter()
        opt, bound = optimum(snap, seq, max(kp, kf, ks), time_limit)
        kinds = "+".join(next(k for k, v in NODE_TYPES.items() if v == (n.gpus[0].name, len(n.gpus)))
                         for n in snap.nodes)
        full = reserved_share(snap, seq, kp)
        rows.append((seed, kp, kf, ks, opt, bound))
        print(f"{seed:>4} {kinds:<22} {full:>5.0%} {kp:>5} {kf:>5} {ks:>5} {opt:>5} {bound:>5} "
              f"{time.perf_counter() - t0:>7.1f}", flush=True)
    proven = [r for r in rows if r[4] == r[5] and r[4] > 0]
    hard = [r for r in proven if r[2] < r[4]]  # first-fit misses the proven optimum
    print(f"\n{'ratio to the proven optimum':<48} {'mean':>6} {'worst':>6} {'seeds':>5}")
    for label, subset in (("all proven", proven), ("where first-fit misses the optimum", hard)):
        for name, col in (("pack", 1), ("first-fit", 2), ("spread", 3)):
            ratios = [r[col] / r[4] for r in subset]
            if ratios:
                print(f"{name + ', ' + label:<48} {statistics.mean(ratios):>6.3f} {min(ratios):>6.3f} {len(ratios):>5}")
    print(f"(unproven within the time limit: {len(rows) - len(proven)} of {len(rows)}; "
          "target for pack where first-fit misses: mean >= 0.95, worst >= 0.85)")


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="fewer latency placements (smoke run)")
    ap.add_argument("--time-limit", type=float, default=1.5, help="CP-SAT seconds per instance")
    ap.add_argument("--hard-seeds", type=int, default=40, help="hard instances (0: skip; needs OR-Tools)")
    ap.add_argument("--hard-time-limit", type=float, default=10.0, help="CP-SAT seconds per hard instance")
    ap.add_argument("--only-hard", action="store_true", help="run only the hard instances")
    args = ap.parse_args()
    started = time.perf_counter()
    asks = catalog_asks()
    print(f"{len(asks)} popular catalog variants; options per request: "
          f"{min(len(a.options) for a, _ in asks)}–{max(len(a.options) for a, _ in asks)}")
    try:
        import ortools  # noqa: F401

        have_ortools = True
    except ImportError:
        have_ortools = False
        print("OR-Tools not installed (pip install '.[bench]'): optimum columns skipped")
    if args.only_hard:
        if have_ortools:
            hard_section(asks, args.hard_seeds, args.hard_time_limit)
        return

    rows = []
    for seed in range(args.seeds):
        rng = random.Random(seed)
        snap = random_fleet(rng, rng.randint(2, 4))
        seq = sequence(rng, asks, 120)
        k_pack = run_place(snap, seq, "pack")
        k_spread = run_place(snap, seq, "spread")
        k_ff = run_first_fit(snap, seq)
        best = max(k_pack, k_spread, k_ff)
        opt, bound = optimum(snap, seq, best, args.time_limit) if have_ortools else (best, 0)
        gpus = sum(len(n.gpus) for n in snap.nodes)
        rows.append((seed, len(snap.nodes), gpus, k_pack, k_ff, k_spread, opt, bound))

    print("\nPacking: deployments placed before the first rejection (paired: same fleet, same arrival order)")
    print(f"{'seed':>4} {'nodes':>5} {'gpus':>4} {'pack':>5} {'ffit':>5} {'sprd':>5} {'opt':>5} {'bound':>5}")
    for seed, nodes, gpus, kp, kf, ks, ko, ub in rows:
        print(f"{seed:>4} {nodes:>5} {gpus:>4} {kp:>5} {kf:>5} {ks:>5} {ko:>5} {ub if have_ortools else '-':>5}")
    useful = [r for r in rows if r[6] > 0]  # seeds whose first request fits nowhere say nothing
    print(f"\n{'ratio (over seeds)':<34} {'mean':>6} {'worst':>6} {'seeds':>5}")
    if have_ortools:
        proven = [r for r in useful if r[6] == r[7]]
        for label, col in (("pack / optimum (proven)", 3), ("first-fit / optimum (proven)", 4),
                           ("spread / optimum (proven)", 5)):
            ratios = [r[col] / r[6] for r in proven]
            print(f"{label:<34} {statistics.mean(ratios):>6.3f} {min(ratios):>6.3f} {len(ratios):>5}")
        ratios = [r[3] / r[7] for r in useful]
        print(f"{'pack / upper bound (all seeds)':<34} {statistics.mean(ratios):>6.3f} {min(ratios):>6.3f} "
              f"{len(ratios):>5}")
    for label, col in (("pack / first-fit", 4), ("pack / spread", 5)):
        ratios = [r[3] / r[col] for r in useful if r[col] > 0]
        print(f"{label:<34} {statistics.mean(ratios):>6.3f} {min(ratios):>6.3f} {len(ratios):>5}")
    print(f"(packing section: {time.perf_counter() - started:.1f} s)")

    if have_ortools and args.hard_seeds:
        hard_section(asks, args.hard_seeds, args.hard_time_limit)
        print(f"(with the hard instances: {time.perf_counter() - started:.1f} s)")

    print("\nLatency of place() per placement (ms), each placement applied before the next")
    print(f"{'nodes':>6} {'full':>5} {'groups':>6} {'p50':>7} {'p99':>7} {'cold':>7} {'placed':>7}")
    per = 40 if args.quick else 150
    for n in (10, 100, 1000, 10000):
        for fullness in (0.0, 0.5, 0.9):
            p50, p99, cold, placed, groups = latency(random.Random(n + int(fullness * 100)), asks, n, fullness,
                                                     per if n < 10000 else per // 2 + 25)
            print(f"{n:>6} {int(fullness * 100):>4}% {groups:>6} {p50:>7.2f} {p99:>7.2f} {cold:>7.1f} "
                  f"{placed:>7}", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

