"""Placement: which node and which GPUs each replica of a deployment gets, and why not anywhere else.

`place(snapshot, request) -> Plan` is pure: a frozen Snapshot and a PlacementRequest in, a Plan out,
the same Plan for the same input. "Does not fit" is a Plan with reasons, never an exception.

The pipeline (Nomad's feasibility/rank chain, k8s Fits() returning what is short):
  1. group filters, once per group of nodes with identical attributes (ATTR_FILTERS, cheapest first);
  2. GPU fit, once per group of nodes with identical free memory: choose TP and the exact GPUs —
     the tightest fit inside the node, keeping aligned free groups (0-1, 2-3, 0-3, 4-7) intact;
  3. the scorer of the strategy: `pack` (fragmentation-aware, below) or `spread`;
  4. per-node filters (NODE_FILTERS: anti-affinity, RAM, disk), run on a group's nodes in name order
     until one passes, because those numbers differ on every node.
Scores are integers; ties are broken by node name, so the result never depends on input order.

`pack` is the fragmentation rule of "Beware of Fragmentation" (Weng et al., USENIX ATC'23): place where
the fleet loses the least *usable* free memory for the workloads operators actually run. A workload
class (per-GPU bytes b, TP t, weight w) can use a node's free memory only in whole replicas of t GPUs
holding b each; what the placement takes away from that, weighted over the classes, is its cost.
Filling a hole nobody else could use costs nothing; breaking the last free 80 GiB GPU costs a lot.

Why grouping: at 10,000 nodes a per-node Python loop with scoring is too slow for 15 ms, but a
fleet has far fewer distinct (hardware, free memory) states than nodes, so each state is evaluated
once (and memoised across calls: the fit of a free-memory vector never changes).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Literal

from fleet.common.gpus import gpu_type
from fleet.controller.core.snapshot import FreeKey, GpuState, IndexEntry, NodeState, Snapshot, reserve
from fleet.controller.core.workload import GIB, Workload

if TYPE_CHECKING:
    from fleet.controller.core.estimate import Estimate

MIB = 1024**2

Strategy = Literal["pack", "spread"]
Device = Literal["gpu", "cpu"]


# ---------------------------------------------------------------- input


@dataclass(frozen=True)
class Option:
    """One way to run the deployment: a quantization on an engine at a TP size, with its per-GPU need.

    The caller computes these from the estimator (fleet.controller.core.options.options_for); placement
    never estimates, so it stays fast and testable with made-up numbers. tp == 0 means CPU (RAM only).
    """

    quant: str
    engine: str
    tp: int
    per_gpu_bytes: int
    min_compute_capability: str = ""
    quality: int = 0  # higher is better; options of one quality level compete on score
    disk_bytes: int = 0  # weights to download unless `source` is already cached on the node
    ram_bytes: int = 0  # device cpu: RAM of the replica (across nodes: of each part)
    source: str = ""
    # A replica over several nodes (multi-node): one part per node, each with `tp` GPUs of per_gpu_bytes (or
    # ram_bytes on CPU). The main part needs disk_bytes; the others part_disk_bytes (vLLM followers load their
    # own copy; llama.cpp's rpc-server parts receive tensors from the main and need none).
    nodes: int = 1
    part_disk_bytes: int = 0
    # The estimates this option was made from, by GPU kind (name, memory bytes; ("cpu", 0) in RAM), so the
    # caller records the estimate of the GPUs placement chose without estimating again. Not part of
    # equality or hashing: placement memoises on options.
    estimates: tuple[tuple[tuple[str, int], Estimate], ...] = field(default=(), compare=False, repr=False)
    # Per-GPU need by GPU kind (name, memory bytes) when it differs by kind (vLLM sizes activations by the
    # GPU); a node reserves the need of its own GPUs, not the largest over the fleet. Empty: per_gpu_bytes.
    needs: tuple[tuple[tuple[str, int], int], ...] = field(default=(), repr=False)

    def estimate_for(self, gpu_name: str = "cpu", memory_total: int = 0) -> Estimate | None:
        for key, est in self.estimates:
            if key == (gpu_name, memory_total):
                return est
        return None

    def need_on_kind(self, gpu_name: str, memory_total: int) -> int:
        return dict(self.needs).get((gpu_name, memory_total), self.per_gpu_bytes)

    def need_on(self, gpus: Sequence[GpuState]) -> int:
        """Per-GPU bytes on these GPUs: the largest of their kinds' needs (per_gpu_bytes for a kind not listed)."""
        if not self.needs or not gpus:
            return self.per_gpu_bytes
        by_kind = dict(self.needs)
        return max(by_kind.get((g.name, g.memory_total), self.per_gpu_bytes) for g in gpus)

    @property
    def label(self) -> str:
        where = "cpu" if self.tp == 0 else f"tp{self.tp}"
        if self.nodes > 1:
            where += f" × {self.nodes} nodes" if self.engine != "vllm" or self.tp == 0 else f" pp{self.nodes}"
        return f"{self.quant}/{self.engine} {where}"

    @property
    def variant(self) -> str:
        return f"{self.quant} on {self.engine}"


@dataclass(frozen=True)
class PlacementRequest:
    deployment: str
    replicas: int = 1
    options: tuple[Option, ...] = ()
    node: str | None = None
    gpu_type: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    device: Device = "gpu"
    strategy: Strategy = "pack"
    anti_affinity: bool = True  # replicas of one deployment on different nodes
    seed: int = 0  # recorded for postmortems; ties are broken by node name, so it never changes the result
    explain: bool = False  # run the per-node filters on every node, not only until one passes


# ---------------------------------------------------------------- output


@dataclass(frozen=True)
class Shortfall:
    """What a node lacks (k8s InsufficientResource): needed vs free, in bytes where it is a quantity."""

    resource: str  # state | node | label | gpu_type | engine | compute_capability | gpu_memory | ram | disk
    needed: int | str
    free: int | str
    message: str


@dataclass(frozen=True)
class Verdict:
    """Either why a node was rejected, or its score for the option it would get."""

    shortfall: Shortfall | None = None
    score: int | None = None
    option: Option | None = None
    gpus: tuple[int, ...] = ()  # GPU indexes it would get
    note: str = ""  # said about a node that fits (a declared node ranks after every real one)


DECLARED_NOTE = "declared node (planning only): chosen only when no real node fits"


@dataclass(frozen=True)
class NodeVerdict:
    node: str
    verdict: Verdict


@dataclass(frozen=True)
class Part:
    """The piece of a multi-node replica on one node; part 0 is the main (serves HTTP)."""

    node: str
    gpus: tuple[int, ...]
    gpu_uuids: tuple[str, ...]
    ram_bytes: int = 0
    disk_bytes: int = 0  # weights this part downloads (0: none, or already cached)


@dataclass(frozen=True)
class Placement:
    replica: int
    node: str  # the main node (the only one for a one-node replica)
    gpus: tuple[int, ...]  # GPU indexes as the agent reports them (the main node's)
    gpu_uuids: tuple[str, ...]
    per_gpu_bytes: int
    option: Option
    score: int
    parts: tuple[Part, ...] = ()  # multi-node: every part, the main first; () for a one-node replica

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(p.node for p in self.parts) if self.parts else (self.node,)


@dataclass(frozen=True)
class Plan:
    deployment: str
    replicas: int
    placements: tuple[Placement, ...]
    option: Option | None  # the option of the first replica (quant, engine, tp)
    why: str  # why this option (when several were offered), or why nothing fits
    closest: str  # for "does not fit": the node that came closest, in words
    # Verdicts per group of nodes with the same verdict (nodes or names); expand with verdicts().
    # Kept grouped and unexpanded because listing 10,000 nodes per placement would cost more than placing.
    verdict_groups: tuple[tuple[Sequence[NodeState] | Sequence[str], Verdict], ...] = field(repr=False, default=())
    # Hardware groups whose free states were not all scored: (state -> nodes, the states that were).
    unscored: tuple[tuple[Mapping[FreeKey, Sequence[NodeState]], frozenset[FreeKey]], ...] = field(
        repr=False, default=())

    @property
    def complete(self) -> bool:
        return len(self.placements) == self.replicas

    def _rows(self) -> Iterator[tuple[str, Verdict]]:
        for members, v in self.verdict_groups:
            for m in members:
                yield (m if isinstance(m, str) else m.name), v
        for by_free, scored in self.unscored:
            for key, nodes in by_free.items():
                if key not in scored:
                    for n in nodes:
                        yield n.name, Verdict()

    def verdicts(self) -> Iterator[NodeVerdict]:
        """Every node with its reason or its score, in node-name order.

        A verdict with neither score nor shortfall is a node that fits but was not scored because tighter fits
        ranked first; PlacementRequest.explain scores every node.
        """
        yield from sorted((NodeVerdict(name, v) for name, v in self._rows()), key=lambda r: r.node)

    def verdict(self, node: str) -> Verdict | None:
        for name, v in self._rows():
            if name == node:
                return v
        return None


# ---------------------------------------------------------------- filters
# A filter answers "what is short?" for one node and one option: None when the node passes.

Filter = Callable[[NodeState, PlacementRequest, Option], Shortfall | None]


def state_ready(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    # Never cordoned, draining, drained or offline: only `ready` accepts new replicas.
    if node.state == "ready":
        return None
    return Shortfall("state", "ready", node.state, f"node is {node.state}")


def labels_match(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    have = node.label_map
    for k, v in request.labels:
        if have.get(k) != v:
            return Shortfall("label", f"{k}={v}", f"{k}={have[k]}" if k in have else "",
                             f"label {k}={v} wanted, node has {k}={have[k]}" if k in have else f"no label {k}")
    return None


def gpu_type_match(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    if request.gpu_type is None or request.device == "cpu":
        return None
    want = _gpu_name(request.gpu_type)
    if any(_gpu_name(g.name) == want for g in node.gpus):
        return None
    have = ", ".join(sorted({g.name for g in node.gpus})) or "no GPUs"
    return Shortfall("gpu_type", request.gpu_type, have, f"wants {request.gpu_type}, node has {have}")


def engine_installed(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    if option.engine in node.engines:
        return None
    have = ", ".join(sorted(node.engines)) or "none"
    return Shortfall("engine", option.engine, have, f"engine {option.engine} not installed (has {have})")


def compute_capability_ok(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    if request.device == "cpu" or not option.min_compute_capability or not node.gpus:
        return None
    if any(_cc_ok(g.compute_capability, option.min_compute_capability) for g in node.gpus):
        return None
    have = ", ".join(sorted({g.compute_capability or "none" for g in node.gpus}))
    return Shortfall("compute_capability", option.min_compute_capability, have,
                     f"{option.quant} needs compute capability ≥ {option.min_compute_capability}, GPUs have {have}")


def parts_supported(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    # A part of a multi-node replica needs the engine's distributed runtime here (llama.cpp's rpc-server,
    # vLLM >= 0.11.1) and an address the other parts can reach that is not public (rpc-server has no auth).
    if option.nodes <= 1 or option.engine in node.multinode:
        return None
    return Shortfall("multinode", option.engine, ", ".join(sorted(node.multinode)) or "none",
                     f"cannot run a part of a multi-node {option.engine} replica (no "
                     f"{'rpc-server' if option.engine == 'llama.cpp' else 'vLLM >= 0.11.1'}, no advertised "
                     "address, or a public one without the operator's opt-in)")


def not_hosting(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    if request.anti_affinity and request.deployment in node.deployments:
        return Shortfall("anti_affinity", request.deployment, request.deployment,
                         f"already runs a replica of {request.deployment}")
    return None


def ram_enough(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    if node.ram_free >= option.ram_bytes:
        return None
    return Shortfall("ram", option.ram_bytes, node.ram_free,
                     f"needs {_gib(option.ram_bytes)} GiB RAM, {_gib(node.ram_free)} GiB free")


def disk_enough(node: NodeState, request: PlacementRequest, option: Option) -> Shortfall | None:
    # Weights already on this node's disk need no space; a download needs all of it.
    if not option.disk_bytes or (option.source and option.source in node.cached_sources):
        return None
    if node.disk_free >= option.disk_bytes:
        return None
    return Shortfall("disk", option.disk_bytes, node.disk_free,
                     f"needs {_gib(option.disk_bytes)} GiB disk for weights, {_gib(node.disk_free)} GiB free")


# Once per group of identical nodes; cheapest and most selective first (state rejects whole racks).
ATTR_FILTERS: tuple[Filter, ...] = (state_ready, labels_match, gpu_type_match, engine_installed,
                                    compute_capability_ok, parts_supported)
# Once per node, in name order, only in groups that fit: these numbers differ on every node.
NODE_FILTERS: tuple[Filter, ...] = (not_hosting, ram_enough, disk_enough)


def _first_shortfall(filters: Sequence[Filter], node: NodeState, request: PlacementRequest,
                     option: Option) -> Shortfall | None:
    for f in filters:
        short = f(node, request, option)
        if short is not None:
            return short
    return None


# ---------------------------------------------------------------- GPU fit and scoring


@dataclass(frozen=True)
class _Fit:
    positions: tuple[int, ...]  # positions in node.gpus
    rank: tuple[int, ...]  # lower is better; compared across nodes before the node name
    score: int  # what the operator sees (higher is better)


def _eligible(node: NodeState, request: PlacementRequest, option: Option) -> tuple[bool, ...]:
    want = _gpu_name(request.gpu_type) if request.gpu_type else None
    return tuple((want is None or _gpu_name(g.name) == want)
                 and (not option.min_compute_capability
                      or _cc_ok(g.compute_capability, option.min_compute_capability))
                 for g in node.gpus)


def _blocks(n: int, size: int) -> list[tuple[int, ...]]:
    # Aligned groups: 0-1, 2-3, … (size 2), 0-3, 4-7 (size 4), 0-7 (size 8): how NVLink/PCIe switches pair GPUs.
    return [tuple(range(s, s + size)) for s in range(0, n - size + 1, size)]


@cache
def _all_blocks(n: int) -> tuple[tuple[int, ...], ...]:
    out: list[tuple[int, ...]] = []
    size = 2
    while size <= n:
        out.extend(_blocks(n, size))
        size *= 2
    return tuple(out)


@lru_cache(maxsize=1 << 18)
def usable(free_desc: tuple[int, ...], workload: Workload, node_cc: str = "") -> int:
    """Weighted bytes of `free_desc` (descending; a node with capability node_cc) workload replicas could use."""
    view = _workload_view(workload, node_cc)
    total = 0
    for b, wb in view.singles:
        total += wb * sum(f // b for f in free_desc if f >= b)
    for b, t, wtb in view.multis:
        total += wtb * _replicas([f // b for f in free_desc if f >= b], t)
    return total


def _replicas(slots: Sequence[int], t: int, most: int | None = None) -> int:
    """Most replicas k of t distinct GPUs, each GPU holding `slots[i]`: the largest k with sum(min(slots, k)) >= k * t.

    Zero slots change nothing, so callers may pass one entry per GPU, fitting or not. `most` is a known
    upper bound (the count before memory was taken); the k that qualify are 0..answer (sum(min(slots, k))
    - k * t is concave in k), so counting down from any bound >= the answer finds it.
    """
    k = sum(slots) // t
    if most is not None and most < k:
        k = most
    if max(slots, default=0) <= k:
        return k  # no GPU is capped by k, so sum(min(slots, k)) == sum(slots) >= k * t already
    while k and sum(s if s < k else k for s in slots) < k * t:
        k -= 1
    return k


@dataclass(frozen=True)
class _WorkloadView:
    """The workload as one node (of capability node_cc) sees it, split so `lost` can be computed by difference.

    TP-1 classes add up per GPU (w * b * (free // b) each), so taking memory from a few GPUs changes only
    their terms; classes with TP >= 2 pair GPUs and are recounted, but there are few of them.
    """

    singles: tuple[tuple[int, int], ...]  # (b, w * b)
    multis: tuple[tuple[int, int, int], ...]  # (b, t, w * t * b)
    # The TP-1 value of one GPU, sum(w * b * (f // b)), is a step function of its free bytes f: it rises by
    # w * b at every multiple of b. Kept as sorted steps and running totals, a lookup is one bisect instead
    # of a division per class (new free amounts appear on every placement, so memoising them misses).
    steps: tuple[int, ...] = field(default=(), compare=False, repr=False)
    totals: tuple[int, ...] = field(default=(0,), compare=False, repr=False)

    def value(self, f: int) -> int:
        if self.steps and f <= self.steps[-1]:
            return self.totals[bisect_right(self.steps, f)]
        return sum(wb * (f // b) for b, wb in self.singles if f >= b)  # beyond the table: count directly


# The step table covers GPUs up to this much free memory (larger ones are counted directly) and is
# skipped for workloads whose classes are so small that it would grow past STEP_LIMIT entries.
STEP_BYTES = 256 * GIB
STEP_LIMIT = 4096


@lru_cache(maxsize=256)
def _workload_view(workload: Workload, node_cc: str) -> _WorkloadView:
    singles: list[tuple[int, int]] = []
    multis: list[tuple[int, int, int]] = []
    for b, t, w, cc in workload.classes:
        if cc and not _cc_ok(node_cc, cc):
            continue  # this node's GPUs cannot run the class: its memory is not usable by it
        if t == 1:
            singles.append((b, w * b))
        else:
            multis.append((b, t, w * t * b))
    if not singles or min(b for b, _ in singles) <= 0 or sum(STEP_BYTES // b for b, _ in singles) > STEP_LIMIT:
        return _WorkloadView(tuple(singles), tuple(multis))
    rises = sorted((m * b, wb) for b, wb in singles for m in range(1, STEP_BYTES // b + 1))
    totals = [0]
    for _, wb in rises:
        totals.append(totals[-1] + wb)
    return _WorkloadView(tuple(singles), tuple(multis), tuple(p for p, _ in rises), tuple(totals))


@cache
def workload_weight(workload: Workload) -> int:
    return max(1, sum(c[2] for c in workload.classes))


@dataclass(frozen=True)
class _State:
    """What _fit needs of one free state whatever the option: computed once per state, not per option."""

    intact: tuple[tuple[int, ...], ...]  # aligned blocks no fleet replica has touched
    broken_by: tuple[int, ...]  # per GPU: GPUs of intact blocks that taking it alone would break
    view: _WorkloadView
    slots: tuple[tuple[int, ...], ...]  # per TP>=2 class: replicas of it each GPU could hold
    # Per TP>=2 class: replicas k the state holds now, and sum(min(slots, k)), the room that proves k.
    base: tuple[tuple[int, int], ...]


@lru_cache(maxsize=1 << 16)
def _state(free_key: FreeKey, workload: Workload, node_cc: str) -> _State:
    # Tuples of ints, not lists: the cyclic GC stops tracking them, and these live as long as the memo.
    touched = {i for i, (_, untouched) in enumerate(free_key) if not untouched}
    intact = tuple([blk for blk in _all_blocks(len(free_key)) if touched.isdisjoint(blk)])
    # One GPU never covers a whole block, so taking GPU i breaks exactly the intact blocks holding i.
    broken_by = [0] * len(free_key)
    for blk in intact:
        for i in blk:
            broken_by[i] += len(blk)
    view = _workload_view(workload, node_cc)
    free = [f for f, _ in free_key]
    slots = tuple([tuple([f // b for f in free]) for b, _, _ in view.multis])
    base = []
    for s, (_, t, _) in zip(slots, view.multis, strict=True):
        k = _replicas(s, t)
        base.append((k, sum([x if x < k else k for x in s])))
    return _State(intact, tuple(broken_by), view, slots, tuple(base))


@lru_cache(maxsize=1 << 17)
def _fit(free_key: tuple[tuple[int, bool], ...], eligible: tuple[bool, ...], tp: int, need: int,
         strategy: str, workload: Workload, node_cc: str = "") -> _Fit | Shortfall:
    """Best GPUs on one node state for one option, or what is short. Memoised: pure in its arguments.

    A miss here is the cost of a node state placement has not seen yet (a new option, or a state a
    placement just created), so it is kept to arithmetic on the few GPUs a candidate touches.
    """
    free = [f for f, _ in free_key]
    fitting = [i for i, f in enumerate(free) if eligible[i] and f >= need]
    if len(fitting) < tp:
        return _memory_shortfall(free, eligible, tp, need)
    aligned = [blk for blk in _blocks(len(free), tp) if all(i in fitting for i in blk)] if tp >= 2 else []
    candidates: list[tuple[int, ...]] = [(i,) for i in fitting] if tp == 1 else list(aligned)
    if tp >= 2:
        # Tightest unaligned set as a fallback when no aligned group fits.
        tight = tuple(sorted(sorted(fitting, key=lambda i: (free[i], i))[:tp]))
        if tight not in candidates:
            candidates.append(tight)
    state = _state(free_key, workload, node_cc)
    intact = state.intact
    pack = strategy == "pack"
    if pack:
        # lost = usable(before) - usable(after), by difference: TP-1 classes only change on the GPUs taken,
        # and it depends only on which free amounts shrink, so candidates with equal amounts share it.
        view = state.view
        slots, base = state.slots, state.base
        lost_of: dict[tuple[int, ...], int] = {}
        weight = workload_weight(workload) * MIB
    broken_by = state.broken_by
    best_rank: tuple[int, ...] | None = None
    best: tuple[tuple[int, ...], int] = ((), 0)
    for cand in candidates:
        if tp == 1:
            not_aligned, broken, leftover = 0, broken_by[cand[0]], free[cand[0]] - need
        else:
            taken = set(cand)
            not_aligned = 0 if cand in aligned else 1
            broken = sum(len(blk) for blk in intact if not taken.isdisjoint(blk) and not taken.issuperset(blk))
            leftover = sum(free[i] - need for i in cand)
        if pack:
            amounts = (free[cand[0]],) if tp == 1 else tuple(sorted(free[i] for i in cand))
            lost = lost_of.get(amounts)
            if lost is None:
                lost = sum(view.value(f) - view.value(f - need) for f in amounts)
                if best_rank is not None and (not_aligned, lost) > best_rank[:2]:
                    # The TP>=2 classes can only add to what is lost: this candidate already ranks below
                    # the best, so skip recounting them (the ranks are distinct, so the best is unchanged).
                    continue
                for (b, t, wtb), s, (k, room) in zip(view.multis, slots, base, strict=True):
                    # Taking memory never adds replicas; if the room left still proves k, k stands.
                    for i in cand:
                        v = (free[i] - need) // b
                        room -= (s[i] if s[i] < k else k) - (v if v < k else k)
                    if room < k * t:  # too little room left for k: recount this class's replicas
                        after = list(s)
                        for i in cand:
                            after[i] = (free[i] - need) // b
                        lost += wtb * (k - _replicas(after, t, k))
                lost_of[amounts] = lost
            rank = (not_aligned, lost, broken, leftover, *cand)
            score = -(lost // weight)  # MiB of usable memory lost, weighted mean
        else:  # spread: the node with the most free memory left, the GPUs with the most room
            node_free = sum(free) - need * tp
            rank = (not_aligned, -node_free, broken, -leftover, *cand)
            score = node_free // MIB
        if best_rank is None or rank < best_rank:
            best_rank, best = rank, (cand, score)
    assert best_rank is not None
    # Positions are a tie-break inside one node only; across nodes the name decides.
    return _Fit(best[0], best_rank[:4], best[1])


def _memory_shortfall(free: list[int], eligible: tuple[bool, ...], tp: int, need: int) -> Shortfall:
    usable_free = sorted((f for f, e in zip(free, eligible, strict=True) if e), reverse=True)
    top = usable_free[:tp]
    if not usable_free:
        why = "the node has no GPU" if not eligible else "no GPU of the wanted type and compute capability"
        return Shortfall("gpu_memory", need * tp, 0, f"needs {tp} × {_gib(need)} GiB; {why}")
    return Shortfall("gpu_memory", need * tp, sum(top),
                     f"needs {tp} × {_gib(need)} GiB; has {_free_words(top)}")


def _free_words(top: Sequence[int]) -> str:
    """[79 GiB, 79 GiB, 22 GiB] -> "2 × 79.0 GiB free and 1 × 22.0 GiB free"."""
    runs: list[list[object]] = []
    for f in top:
        words = f"{_gib(f)} GiB free"
        if runs and runs[-1][1] == words:
            runs[-1][0] = int(str(runs[-1][0])) + 1
        else:
            runs.append([1, words])
    return " and ".join(f"{n} × {w}" for n, w in runs)


def _closeness(short: Shortfall, option: Option, free_key: tuple[tuple[int, bool], ...],
               eligible: tuple[bool, ...]) -> tuple[float, int]:
    # How near a GPU-memory miss is: share of the TP that fits, then the best free memory available.
    fits = sum(1 for (f, _), e in zip(free_key, eligible, strict=True) if e and f >= option.per_gpu_bytes)
    return (min(fits, option.tp) / max(option.tp, 1), int(short.free) if isinstance(short.free, int) else 0)


# ---------------------------------------------------------------- the pipeline

# A hardware group with at most this many distinct free-memory states is scored exhaustively.
EXACT_STATES = 64
# Beyond that, each option scores exactly only the states holding its tightest fits (walked up the
# group's free-memory index from the need): the fragmentation rule prefers filling holes, so its
# best choice is among the tightest fits, and scoring thousands of looser ones costs the 15 ms budget.
SHORTLIST = 12

class _AllNodes:
    """Every node of a hardware group, without listing them until someone asks (verdicts are rarely read)."""

    def __init__(self, by_free: Mapping[FreeKey, Sequence[NodeState]]) -> None:
        self.by_free = by_free

    def __iter__(self) -> Iterator[NodeState]:
        for nodes in self.by_free.values():
            yield from nodes

    def __len__(self) -> int:
        return sum(len(nodes) for nodes in self.by_free.values())


Members = Sequence[NodeState] | Sequence[str] | _AllNodes


@dataclass
class _Pass:
    """One replica's evaluation over the snapshot."""

    best: tuple[tuple[int, ...], str, Option, _Fit, NodeState] | None = None
    groups: list[tuple[Members, Verdict]] = field(default_factory=list)
    unscored: list[tuple[dict[FreeKey, list[NodeState]], frozenset[FreeKey]]] = field(default_factory=list)
    closest: tuple[tuple[float, int], str, str] | None = None  # (closeness, node, words)
    missed: list[tuple[dict[FreeKey, list[NodeState]], Option]] = field(default_factory=list)
    passed: int = 0  # nodes that passed every filter (scored candidates)

    def near(self, closeness: tuple[float, int], node: str, words: str) -> None:
        # Deterministic whatever the group order: closer first, then the smaller node name.
        if self.closest is None or (closeness, _neg(node)) > (self.closest[0], _neg(self.closest[1])):
            self.closest = (closeness, node, words)


def _neg(name: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in name) + (1,)


def _place_one(snapshot: Snapshot, request: PlacementRequest, options: Sequence[Option],
               workload: Workload) -> _Pass:
    out = _Pass()
    if request.node is not None:
        # An explicit node is a filter that needs no grouping: evaluate that one node alone.
        others = tuple(sorted(n.name for n in snapshot.nodes if n.name != request.node))
        if others:
            out.groups.append((others, Verdict(Shortfall("node", request.node, "", f"not {request.node}"))))
        target = snapshot.by_name.get(request.node)
        snapshot = Snapshot((target,) if target is not None else ())
    for attr, by_free in snapshot.groups.items():
        rep = next(iter(by_free.values()))[0]
        live: list[tuple[Option, tuple[bool, ...]]] = []
        first_short: Shortfall | None = None
        for opt in options:
            short = _first_shortfall(ATTR_FILTERS, rep, request, opt)
            if short is None:
                elig = _eligible(rep, request, opt)
                live.append((_for_group(opt, rep, elig), elig))
            elif first_short is None:
                first_short = short
        if not live:
            assert first_short is not None
            out.groups.extend((nodes, Verdict(first_short)) for nodes in by_free.values())
            continue
        if request.device == "cpu":
            for nodes in by_free.values():
                _cpu_nodes(out, nodes, request, live)
            continue
        node_cc = _node_cc(rep)
        exhaustive = (request.explain or len(by_free) <= EXACT_STATES
                      or not all(all(e) for _, e in live))  # mixed GPUs in a node: the index cannot tell
        if exhaustive:
            for free_key, nodes in by_free.items():
                _gpu_group(out, free_key, nodes, request, live, workload, node_cc)
            continue
        keys = _shortlist(snapshot.index[attr], live)
        if not keys:
            _no_fit(out, by_free, live)
            continue
        before = out.passed
        for free_key in keys:
            _gpu_group(out, free_key, by_free[free_key], request, live, workload, node_cc)
        if out.passed == before:
            # Every shortlisted node failed a per-node filter (anti-affinity, RAM, disk): score the rest.
            for free_key, nodes in by_free.items():
                if free_key not in keys:
                    _gpu_group(out, free_key, nodes, request, live, workload, node_cc)
        else:
            out.unscored.append((by_free, frozenset(keys)))
    return out


def _for_group(opt: Option, rep: NodeState, eligible: tuple[bool, ...]) -> Option:
    """The option as this hardware group needs it: the per-GPU need of the group's own GPU kinds."""
    need = opt.need_on([g for g, e in zip(rep.gpus, eligible, strict=True) if e])
    return opt if need == opt.per_gpu_bytes else replace(opt, per_gpu_bytes=need)


def _shortlist(entries: list[IndexEntry], live: list[tuple[Option, tuple[bool, ...]]]) -> list[FreeKey]:
    """For each option, the SHORTLIST free states whose tightest fitting GPU is smallest."""
    keys: list[FreeKey] = []
    chosen: set[FreeKey] = set()
    for opt, _ in live:
        if opt.tp <= 0:
            continue
        need, tp = opt.per_gpu_bytes, opt.tp
        seen: set[FreeKey] = set()
        found = 0
        for j in range(bisect_left(entries, (need,)), len(entries)):
            _, key, desc = entries[j]
            # Test the fit first: most entries of a long walk fail it, and it needs no hashing of the key.
            if len(desc) >= tp and desc[tp - 1] >= need:
                if key in seen:
                    continue
                seen.add(key)
                if key not in chosen:
                    chosen.add(key)
                    keys.append(key)
                found += 1
                if found >= SHORTLIST:
                    break
    return keys


@lru_cache(maxsize=1 << 16)
def _desc_key(free_key: FreeKey) -> tuple[int, ...]:
    return tuple(sorted((f for f, _ in free_key), reverse=True))


def _no_fit(out: _Pass, by_free: dict[FreeKey, list[NodeState]], live: list[tuple[Option, tuple[bool, ...]]]) -> None:
    """No free state of this hardware group has enough GPUs for any option: one reason for all its nodes."""
    opt = min((o for o, _ in live if o.tp > 0), key=lambda o: o.tp * o.per_gpu_bytes, default=None)
    if opt is None:
        out.groups.append((_AllNodes(by_free), Verdict(Shortfall("device", "gpu", "cpu", "no GPU option offered"))))
        return
    short = Shortfall("gpu_memory", opt.per_gpu_bytes * opt.tp, 0,
                      f"{opt.variant} needs {opt.tp} × {_gib(opt.per_gpu_bytes)} GiB; "
                      f"no {opt.tp} GPUs with that much free")
    out.groups.append((_AllNodes(by_free), Verdict(short)))
    out.missed.append((by_free, opt))


def _nearest_miss(out: _Pass) -> None:
    """Only when nothing fits: the node that came closest among the groups _no_fit summarised."""
    for by_free, opt in out.missed:
        for free_key, nodes in by_free.items():
            desc = _desc_key(free_key)
            top = desc[:opt.tp]
            fits = sum(1 for f in desc if f >= opt.per_gpu_bytes)
            closeness = (min(fits, opt.tp) / opt.tp, sum(top))
            if out.closest is None or closeness >= out.closest[0]:
                words = (f"{opt.variant} needs {opt.tp} × {_gib(opt.per_gpu_bytes)} GiB; "
                         f"best node {nodes[0].name} has {_free_words(top)}")
                out.near(closeness, nodes[0].name, words)


def _node_cc(node: NodeState) -> str:
    ccs = [g.compute_capability for g in node.gpus]
    return min(ccs, key=_cc) if ccs else ""


def _gpu_group(out: _Pass, free_key: FreeKey, nodes: list[NodeState], request: PlacementRequest,
               live: list[tuple[Option, tuple[bool, ...]]], workload: Workload, node_cc: str) -> None:
    fits: list[tuple[tuple[int, ...], Option, _Fit]] = []
    miss: tuple[tuple[float, int], Shortfall] | None = None
    for opt, elig in live:
        if opt.tp <= 0:
            continue
        fit = _fit(free_key, elig, opt.tp, opt.per_gpu_bytes, request.strategy, workload, node_cc)
        if isinstance(fit, Shortfall):
            fit = replace(fit, message=f"{opt.variant} {fit.message}")  # which variant was tried, not only bytes
            near = _closeness(fit, opt, free_key, elig)
            if miss is None or near > miss[0]:
                miss = (near, fit)
        else:
            fits.append((fit.rank, opt, fit))
    if not fits:
        short = miss[1] if miss else Shortfall("device", "gpu", "cpu", "no GPU option offered")
        out.groups.append((nodes, Verdict(short)))
        if miss is not None and miss[0] > (0.0, 0):  # no usable GPU at all is not "close": count reasons instead
            out.near(miss[0], nodes[0].name, miss[1].message.replace("; has ", f"; best node {nodes[0].name} has "))
        return
    fits.sort(key=lambda x: x[0])
    _scan_nodes(out, nodes, request, fits)


def _cpu_nodes(out: _Pass, nodes: list[NodeState], request: PlacementRequest,
               live: list[tuple[Option, tuple[bool, ...]]]) -> None:
    # RAM differs on every node, so CPU placements rank per node: tightest RAM fit for pack, loosest for spread.
    for node in nodes:
        ranked = []
        for opt, _ in live:
            if opt.tp != 0:
                continue
            left = node.ram_free - opt.ram_bytes
            score = -(left // MIB) if request.strategy == "pack" else left // MIB
            ranked.append(((-score,), opt, _Fit((), (-score,), score)))
        if not ranked:
            out.groups.append(((node.name,), Verdict(Shortfall("device", "cpu", "gpu", "no CPU option offered"))))
            continue
        _scan_nodes(out, [node], request, sorted(ranked, key=lambda x: x[0]))


def _scan_nodes(out: _Pass, nodes: list[NodeState], request: PlacementRequest,
                ranked: list[tuple[tuple[int, ...], Option, _Fit]]) -> None:
    """Per-node filters in name order; the first node that passes represents the group's score."""
    run: list[str] = []
    run_verdict: Verdict | None = None
    for k, node in enumerate(nodes):
        chosen = None
        short: Shortfall | None = None
        for rank, opt, fit in ranked:
            s = _first_shortfall(NODE_FILTERS, node, request, opt)
            if s is None:
                chosen = (rank, opt, fit)
                break
            short = short or s
        if chosen is None:
            assert short is not None
            out.groups.append(((node.name,), Verdict(short)))
            if short.resource != "anti_affinity":
                # It has the GPUs (or the RAM) and lacks only this: closer than any node short of GPU memory.
                out.near((2.0, 0), node.name, f"best node {node.name} has the GPU memory but {short.message}")
            continue
        out.passed += 1
        rank, opt, fit = chosen
        verdict = Verdict(score=fit.score, option=opt, gpus=tuple(node.gpus[i].index for i in fit.positions),
                          note=DECLARED_NOTE if node.declared else "")
        # Real nodes first: a replica on a declared node is accounted but never runs.
        rank = (int(node.declared), *rank)
        if out.best is None or (rank, node.name) < (out.best[0], out.best[1]):
            out.best = (rank, node.name, opt, fit, node)
        if not request.explain:
            # The rest of this group has the same free memory: the same score, not scanned.
            out.groups.append((nodes[k:], verdict))
            return
        if run_verdict == verdict:
            run.append(node.name)
        else:
            if run and run_verdict is not None:
                out.groups.append((tuple(run), run_verdict))
            run, run_verdict = [node.name], verdict
    if run and run_verdict is not None:
        out.groups.append((tuple(run), run_verdict))


def place(snapshot: Snapshot, request: PlacementRequest, workload: Workload) -> Plan:
    """Place every replica of `request` on `snapshot`; never raises for "does not fit".

    When the request offers options of several quality levels (the operator gave no --quant), the
    best quality level that places every replica wins; failing that, the level that places most.
    Fewer nodes come first: options over several nodes (multi-node) are tried only when no quality level
    places every replica on one node each.
    """
    if request.replicas < 1 or not request.options:
        why = "no options to place (the estimator offered none)" if not request.options else "no replicas requested"
        return Plan(request.deployment, request.replicas, (), None, why, why)
    single = tuple(o for o in request.options if o.nodes == 1)
    if single and len(single) < len(request.options):
        plan = _place_levels(snapshot, replace(request, options=single), workload)
        if plan.complete:
            return _better_across(snapshot, request, plan, workload)
    return _place_levels(snapshot, request, workload)


def _better_across(snapshot: Snapshot, request: PlacementRequest, plan: Plan, workload: Workload) -> Plan:
    """One node each won with a lower quality: say whether a better one fits over several nodes (not chosen)."""
    assert plan.option is not None
    better = tuple(o for o in request.options if o.nodes > 1 and o.quality > plan.option.quality)
    if not better:
        return plan
    across = _place_levels(snapshot, replace(request, options=better, explain=False), workload)
    if not across.complete or across.option is None:
        return plan
    o = across.option
    k = max(len(p.nodes) for p in across.placements)
    note = (f"{o.quant}/{o.engine} (quality {o.quality}) fits across {k} nodes; fewer nodes won: "
            f"pass --quant {o.quant} to span them")
    return replace(plan, why=f"{plan.why}; {note}" if plan.why else note)


def _place_levels(snapshot: Snapshot, request: PlacementRequest, workload: Workload) -> Plan:
    levels = sorted({o.quality for o in request.options}, reverse=True)
    tried: list[tuple[int, Plan]] = []
    for quality in levels:
        options = tuple(o for o in request.options if o.quality == quality)
        plan = _place_level(snapshot, request, options, workload)
        if plan.complete:
            return _with_why(plan, tried, request)
        tried.append((quality, plan))
    best = max(tried, key=lambda qp: (len(qp[1].placements), qp[0]))[1]
    return _with_why(best, [t for t in tried if t[1] is not best], request)


def _with_why(plan: Plan, worse: list[tuple[int, Plan]], request: PlacementRequest) -> Plan:
    if len({o.quality for o in request.options}) <= 1 or plan.option is None:
        return plan
    reasons = [f"{_level_name(q, request)} does not fit ({p.closest or 'no node'})"
               for q, p in worse]
    chosen = f"chose {plan.option.quant}/{plan.option.engine} (quality {plan.option.quality})"
    if reasons:
        why = f"{chosen}, the best quality that fits now: " + "; ".join(reasons)
    else:
        why = f"{chosen}, the best quality offered"
    if plan.why:  # why it spans several nodes
        why += "; " + plan.why
    return replace(plan, why=why)


def _level_name(quality: int, request: PlacementRequest) -> str:
    names = sorted({f"{o.quant}/{o.engine}" for o in request.options if o.quality == quality})
    return f"{', '.join(names)} (quality {quality})"


def _place_level(snapshot: Snapshot, request: PlacementRequest, options: tuple[Option, ...],
                 workload: Workload) -> Plan:
    """Every replica at one quality level: on one node if any fits, else over the fewest nodes that do."""
    placements: list[Placement] = []
    shown: _Pass | None = None
    closest = ""
    spans = ""  # why the first replica spans several nodes, and which
    snap = snapshot
    for replica in range(request.replicas):
        single = tuple(o for o in options if o.nodes == 1)
        counts = sorted({o.nodes for o in options if o.nodes > 1})
        ev = _place_one(snap, request, single, workload) if single or not counts else None
        if ev is not None and ev.best is None and placements:
            _own_replicas(ev, placements)
        if ev is not None and (replica == 0 or ev.best is None or shown is None):
            shown = ev
        placement: Placement | None = None
        if ev is not None and ev.best is not None:
            _, _, opt, fit, node = ev.best
            placement = Placement(replica, node.name, tuple(node.gpus[i].index for i in fit.positions),
                                  tuple(node.gpus[i].uuid for i in fit.positions), opt.per_gpu_bytes, opt, fit.score)
        else:
            from fleet.controller.core import gang  # gang placement builds on this module's filters and fit

            one = _closest_words(ev, request, single) if ev is not None else ""
            misses: list[str] = []
            for k in counts:
                found = gang.place_gang(snap, request, tuple(o for o in options if o.nodes == k), workload, replica)
                if ev is None and (replica == 0 or shown is None):
                    shown = found.verdicts
                if found.placement is not None:
                    placement = found.placement
                    if replica == 0:
                        spans = gang.why_spans(one, misses, found)
                    break
                misses.append(found.miss)
            if placement is None:
                closest = gang.why_not(one, misses) if counts else one
                break
        placements.append(placement)
        if replica + 1 < request.replicas:  # the last replica's snapshot would only be thrown away
            snap = snap.with_nodes(reserved_nodes(snap, placement, request).values())
        # One deployment runs one quantization on one engine; TP and nodes may differ between replicas.
        opt = placement.option
        options = tuple(o for o in options if (o.quant, o.engine) == (opt.quant, opt.engine))
    option = placements[0].option if placements else None
    why = spans if len(placements) == request.replicas else (
        f"placed {len(placements)} of {request.replicas} replicas: {closest}")
    assert shown is not None
    return Plan(request.deployment, request.replicas, tuple(placements), option, why, closest,
                tuple(shown.groups), tuple(shown.unscored))


def _own_replicas(ev: _Pass, placements: Sequence[Placement]) -> None:
    """A node rejected only because an earlier replica of this same placement went there says so (the
    deployment may not exist yet: "already runs a replica" would blame one that does not)."""
    taken = {p.node: p.replica for p in placements}
    for i, (members, v) in enumerate(ev.groups):
        s = v.shortfall
        names = [m if isinstance(m, str) else m.name for m in members] if isinstance(members, tuple | list) else []
        if s is not None and s.resource == "anti_affinity" and len(names) == 1 and names[0] in taken:
            ev.groups[i] = (members, replace(v, shortfall=replace(
                s, message=f"takes replica {taken[names[0]]} of this placement (one replica per node)")))


def _closest_words(ev: _Pass, request: PlacementRequest, options: Sequence[Option]) -> str:
    _nearest_miss(ev)
    if ev.closest is not None:
        return ev.closest[2]
    counts: dict[str, int] = {}
    for members, v in ev.groups:
        if v.shortfall is not None:
            counts[v.shortfall.message] = counts.get(v.shortfall.message, 0) + len(members)
    if not counts:
        return "the fleet has no nodes"
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return "no node fits: " + "; ".join(f"{n} node{'s' if n != 1 else ''}: {m}" for m, n in top)


def _reserved(node: NodeState, placement: Placement, request: PlacementRequest, part: Part | None = None) -> NodeState:
    """`node` after the placement (or, multi-node, its `part` on this node) reserves its share."""
    pos = {g.uuid: i for i, g in enumerate(node.gpus)}
    opt = placement.option
    if part is None:
        return reserve(node, {pos[u]: placement.per_gpu_bytes for u in placement.gpu_uuids},
                       deployment=request.deployment, ram=opt.ram_bytes, disk=opt.disk_bytes, source=opt.source)
    return reserve(node, {pos[u]: placement.per_gpu_bytes for u in part.gpu_uuids}, deployment=request.deployment,
                   ram=part.ram_bytes, disk=part.disk_bytes, source=opt.source if part.disk_bytes else "")


def reserved_nodes(snapshot: Snapshot, placement: Placement, request: PlacementRequest,
                   changed: dict[str, NodeState] | None = None) -> dict[str, NodeState]:
    """Every node the placement touches, after it reserves there (added to `changed`, which it returns)."""
    changed = {} if changed is None else changed
    for part in placement.parts or (None,):
        name = part.node if part is not None else placement.node
        # Look nodes up by position rather than through `by_name`: building (and then carrying into every
        # derived snapshot) a 10,000-entry name map per placement only feeds the cyclic GC.
        node = changed.get(name) or snapshot.nodes[snapshot.positions[name]]
        changed[name] = _reserved(node, placement, request, part)
    return changed


def apply(snapshot: Snapshot, plan: Plan) -> Snapshot:
    """The snapshot after committing `plan` (what the store's transaction does, for what-if and drain)."""
    request = PlacementRequest(plan.deployment)
    changed: dict[str, NodeState] = {}
    for p in plan.placements:
        reserved_nodes(snapshot, p, request, changed)
    return snapshot.with_nodes(changed.values())


# ---------------------------------------------------------------- small helpers


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


@cache
def _gpu_name(name: str) -> str:
    try:
        return gpu_type(name).name
    except KeyError:
        return name.lower()


@cache
def _cc(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in value.split("."))
    except ValueError:
        return ()


def _cc_ok(have: str, need: str) -> bool:
    got = _cc(have)
    return bool(got) and got >= _cc(need)
