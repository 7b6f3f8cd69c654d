"""Gang placement: one replica over k nodes (multi-node), every part or none.

Placement (fleet.controller.core.placement) calls this when no single node fits a replica, or when the
operator asked for --nodes N, once per node count, fewest first. The nodes are judged with placement's own
filters and per-node GPU fit (the same reasons, the same scores), then k of them are chosen:
  1. nodes sharing a `rack` label, else a `fabric` label (operator-set node labels), else any;
  2. among those, the lowest total rank (the scorer of the strategy, summed over the parts);
  3. ties by node names.
The main part (part 0, serves HTTP) is the best-ranked chosen node that has room on disk for the weights:
the main downloads them, and so does every vLLM follower; llama.cpp's rpc-server parts get their
tensors from the main over the network. Pure, like placement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fleet.controller.core.placement import (
    ATTR_FILTERS,
    MIB,
    Option,
    Part,
    Placement,
    PlacementRequest,
    Shortfall,
    Verdict,
    _AllNodes,
    _eligible,
    _first_shortfall,
    _fit,
    _gib,
    _node_cc,
    _Pass,
    disk_enough,
    not_hosting,
    ram_enough,
)
from fleet.controller.core.snapshot import NodeState, Snapshot
from fleet.controller.core.workload import Workload

# Labels whose shared value keeps a replica's parts close (same switch, same fabric), most local first.
DOMAIN_LABELS = ("rack", "fabric")
PART_FILTERS = (not_hosting, ram_enough, disk_enough)


@dataclass(frozen=True)
class Candidate:
    rank: tuple[int, ...]
    name: str
    node: NodeState
    positions: tuple[int, ...]  # GPUs (positions in node.gpus) the part would get
    score: int
    main_ok: bool  # room on disk for the weights the main part downloads


@dataclass
class GangResult:
    placement: Placement | None
    miss: str  # when nothing fits: why, in words
    verdicts: _Pass  # per node, for --explain
    domain: str = ""  # "rack=r1" when the parts share it


def place_gang(snapshot: Snapshot, request: PlacementRequest, options: Sequence[Option], workload: Workload,
               replica: int) -> GangResult:
    """One replica over exactly `options[0].nodes` nodes, the best option's gang; a miss when none fits."""
    k = options[0].nodes
    best: tuple[tuple[object, ...], Option, list[Candidate], str, _Pass] | None = None
    shown: _Pass | None = None
    misses: list[tuple[tuple[int, int], str]] = []
    for opt in options:
        out = _Pass()
        cands, counts = _candidates(snapshot, request, opt, workload, out)
        shown = shown or out
        chosen = _choose(cands, k, request)
        if chosen is None:
            misses.append(((len(cands), -opt.tp * opt.per_gpu_bytes), _miss(cands, counts, opt, k, request, out)))
            continue
        key, domain, gang = chosen
        if best is None or key < best[0]:
            best = (key, opt, gang, domain, out)
    if best is None:
        assert shown is not None
        words = max(misses, key=lambda m: m[0])[1] if misses else f"{k} nodes: no option offered"
        return GangResult(None, words, shown)
    _, opt, gang, domain, out = best
    parts = tuple(Part(c.name, tuple(c.node.gpus[i].index for i in c.positions),
                       tuple(c.node.gpus[i].uuid for i in c.positions), opt.ram_bytes,
                       opt.disk_bytes if i == 0 else opt.part_disk_bytes)
                  for i, c in enumerate(gang))
    main = parts[0]
    placement = Placement(replica, main.node, main.gpus, main.gpu_uuids, opt.per_gpu_bytes, opt,
                          sum(c.score for c in gang), parts)
    return GangResult(placement, "", out, domain)


def _candidates(snapshot: Snapshot, request: PlacementRequest, opt: Option, workload: Workload,
                out: _Pass) -> tuple[list[Candidate], dict[str, int]]:
    """Nodes that could hold one part of `opt` (verdicts recorded in `out`), and eligible GPUs per node judged."""
    cands: list[Candidate] = []
    counts: dict[str, int] = {}
    part_opt = replace(opt, disk_bytes=opt.part_disk_bytes)
    k = opt.nodes
    for by_free in snapshot.groups.values():
        rep = next(iter(by_free.values()))[0]
        short = _first_shortfall(ATTR_FILTERS, rep, request, opt)
        if short is not None:
            out.groups.append((_AllNodes(by_free), Verdict(short)))
            continue
        if request.device == "cpu":
            for nodes in by_free.values():
                for node in nodes:
                    left = node.ram_free - opt.ram_bytes
                    score = -(left // MIB) if request.strategy == "pack" else left // MIB
                    _judge(node, (-score,), (), score, request, opt, part_opt, out, cands)
            continue
        elig = _eligible(rep, request, opt)
        node_cc = _node_cc(rep)
        for nodes in by_free.values():
            counts.update((n.name, sum(elig)) for n in nodes)
        for free_key, nodes in by_free.items():
            fit = _fit(free_key, elig, opt.tp, opt.per_gpu_bytes, request.strategy, workload, node_cc)
            if isinstance(fit, Shortfall):
                out.groups.append((nodes, Verdict(fit)))
                continue
            passed = main = 0
            for i, node in enumerate(nodes):
                if not request.explain and passed >= k and main:
                    # Same hardware, labels and free memory: the same rank; the first names are the best.
                    out.groups.append((nodes[i:], Verdict()))
                    break
                c = _judge(node, fit.rank, fit.positions, fit.score, request, opt, part_opt, out, cands)
                if c is not None:
                    passed += 1
                    main += c.main_ok
    return cands, counts


def _judge(node: NodeState, rank: tuple[int, ...], positions: tuple[int, ...], score: int, request: PlacementRequest,
           opt: Option, part_opt: Option, out: _Pass, cands: list[Candidate]) -> Candidate | None:
    short = _first_shortfall(PART_FILTERS, node, request, part_opt)
    if short is not None:
        out.groups.append(((node.name,), Verdict(short)))
        return None
    c = Candidate(rank, node.name, node, positions, score, disk_enough(node, request, opt) is None)
    cands.append(c)
    out.groups.append(((node.name,), Verdict(score=score, option=opt, gpus=tuple(node.gpus[i].index
                                                                                  for i in positions))))
    out.passed += 1
    return c


def _cost(gang: list[Candidate]) -> tuple[int, ...]:
    width = max(len(c.rank) for c in gang)
    return tuple(sum(c.rank[i] if i < len(c.rank) else 0 for c in gang) for i in range(width))


def _pick(pool: list[Candidate], k: int, request: PlacementRequest) -> list[Candidate] | None:
    mains = [c for c in pool if c.main_ok and (request.node is None or c.name == request.node)]
    if not mains:
        return None
    main = mains[0]
    others = [c for c in pool if c is not main][:k - 1]
    return [main, *others] if len(others) == k - 1 else None


def _choose(cands: list[Candidate], k: int, request: PlacementRequest
            ) -> tuple[tuple[object, ...], str, list[Candidate]] | None:
    """The best k candidates: in one rack, else one fabric, else anywhere; then by total rank, then names."""
    cands = sorted(cands, key=lambda c: (c.rank, c.name))
    for level, label in enumerate(DOMAIN_LABELS):
        pools: dict[str, list[Candidate]] = {}
        for c in cands:
            value = c.node.label_map.get(label)
            if value is not None:
                pools.setdefault(value, []).append(c)
        found = []
        for value, pool in pools.items():
            gang = _pick(pool, k, request)
            if gang is not None:
                found.append(((level, _cost(gang), tuple(c.name for c in gang)), f"{label}={value}", gang))
        if found:
            return min(found, key=lambda f: f[0])
    gang = _pick(cands, k, request)
    if gang is None:
        return None
    return (len(DOMAIN_LABELS), _cost(gang), tuple(c.name for c in gang)), "", gang


def _names(names: Sequence[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _miss(cands: list[Candidate], counts: dict[str, int], opt: Option, k: int, request: PlacementRequest,
          out: _Pass) -> str:
    """Why `opt` found no k nodes: how many qualify, which, what the others lack (the commonest reasons), and
    (vLLM) whether GPU counts differ."""
    if request.device == "cpu":
        each = f"{_gib(opt.ram_bytes)} GiB RAM free"
    else:
        each = f"{opt.tp} × {_gib(opt.per_gpu_bytes)} GiB free"
    shape = f"TP {opt.tp} × PP {k}" if opt.engine == "vllm" and opt.tp else f"{k} parts"
    have = [c.name for c in sorted(cands, key=lambda c: c.name)]
    words = f"{k} nodes ({opt.quant}/{opt.engine}, {shape}) need {each} on each node; "
    if len(have) >= k:
        if request.node is not None:
            return words + f"{request.node} cannot hold the main part (it downloads {_gib(opt.disk_bytes)} GiB)"
        return words + f"none of {_names(have)} has disk for the {_gib(opt.disk_bytes)} GiB the main part downloads"
    words += (f"only {len(have)} node{'s' if len(have) != 1 else ''} ({_names(have)}) "
              f"{'has' if len(have) == 1 else 'have'} that" if have else "no node has that")
    reasons: dict[str, int] = {}
    for members, v in out.groups:
        if v.shortfall is not None and v.shortfall.resource != "gpu_memory":
            reasons[v.shortfall.message] = reasons.get(v.shortfall.message, 0) + len(members)
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
        words += " (" + "; ".join(f"{n} node{'s' if n != 1 else ''}: {m}" for m, n in top) + ")"
    fewer = sorted(n for n, c in counts.items() if c < opt.tp)
    if opt.engine == "vllm" and fewer and len(set(counts.values())) > 1:
        sizes = ", ".join(f"{n} has {counts[n]}" for n in fewer[:4])
        words += (f" (vLLM runs the same TP on every node, TP = GPUs per node: {sizes} GPU"
                  f"{'s' if counts[fewer[0]] != 1 else ''} of {opt.tp})")
    return words


def why_spans(one: str, misses: list[str], found: GangResult) -> str:
    """--explain: why this replica spans k nodes, and which."""
    p = found.placement
    assert p is not None
    o = p.option
    roles = ", ".join(f"{n} ({'main' if i == 0 else 'rpc-server' if o.engine == 'llama.cpp' else 'follower'})"
                      for i, n in enumerate(p.nodes))
    shape = f"TP {o.tp} × PP {o.nodes}" if o.engine == "vllm" and o.tp else f"{o.nodes} parts"
    words = f"spans {o.nodes} nodes ({shape}): {roles}"
    if found.domain:
        words += f", all in {found.domain}"
    before = []
    if one:
        before.append(f"no single node fits ({one})")
    before += misses
    return "; ".join([*before, words])


def why_not(one: str, misses: list[str]) -> str:
    parts = [f"no single node fits ({one})"] if one else []
    if misses:
        parts.append(f"across nodes: {misses[0]}")
        if len(misses) > 1:
            parts.append(misses[-1])
    return "; ".join(parts) or "no node fits"
