"""What-if planning (`fleet plan`): place a list of requests on a described fleet, one replica at a time.

"If I buy 4 L40S nodes, how many qwen2.5-72b AWQ replicas fit?" — the same placement core as
`fleet place`, on a Snapshot built from a FLEET.json instead of the live inventory. Pure: the CLI
reads the files and renders; this module parses plain JSON-shaped data and returns plain data.

FLEET:    {"nodes": [{"name": "n1", "gpus": [{"type": "A100-80GB", "count": 8}], "ram_gib": 1024,
           "disk_gib": 4000, "labels": {"rack": "a"}}]}   (a GPU may give memory_gib + compute_capability)
REQUESTS: {"requests": [{"model": "qwen2-72b", "quant": "awq", "context": 8192, "replicas": 1}]}
          ("nodes": N spans each replica over N nodes; without it, over the fewest that fit when one does not)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.common.gpus import GpuType, gpu_type
from fleet.controller.core.errors import FleetError, InvalidArgument
from fleet.controller.core.gpus import fleet_gpu_types
from fleet.controller.core.placement import Option, Placement, PlacementRequest, apply, place
from fleet.controller.core.snapshot import NODE_STATES, GpuState, NodeState, Snapshot
from fleet.controller.core.workload import GIB, Workload

# options_for(model, quant, engine, context, gpu_types, tp, device=..., nodes=...) -> Options (core/options.py)
OptionsFor = Callable[..., tuple[Option, ...]]

DEFAULT_ENGINES = frozenset({"vllm", "llama.cpp"})
UNLIMITED = 1 << 62  # RAM / disk not given in FLEET.json: not a constraint


@dataclass(frozen=True)
class Request:
    model: str
    quant: str | None = None
    engine: str | None = None
    context: int | None = None
    replicas: int = 1
    tp: int | None = None
    gpu_type: str | None = None
    node: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    device: str = "gpu"
    strategy: str = "pack"
    name: str | None = None
    nodes: int | None = None  # nodes each replica spans; None: one, or the fewest that fit when none does


@dataclass(frozen=True)
class Row:
    request: int
    replica: int
    placement: Placement | None
    reason: str


@dataclass(frozen=True)
class WhatIf:
    rows: tuple[Row, ...]
    requests: tuple[Request, ...]
    vram_total: int
    vram_reserved: int

    @property
    def placed_total(self) -> int:
        return sum(1 for r in self.rows if r.placement is not None)

    @property
    def placed_before_first_reject(self) -> int:
        n = 0
        for r in self.rows:
            if r.placement is None:
                break
            n += 1
        return n

    def as_json(self) -> dict[str, Any]:
        """The documented `fleet plan -o json` shape (placements, rejected, counts, reserved fraction)."""
        return {
            "placements": [{"request": r.request, "replica": r.replica, "node": r.placement.node,
                            "gpus": list(r.placement.gpus), "per_gpu_bytes": r.placement.per_gpu_bytes,
                            # a replica over several nodes also says where each part goes (the main first)
                            **({"nodes": list(r.placement.nodes),
                                "parts": [{"node": p.node, "gpus": list(p.gpus)} for p in r.placement.parts]}
                               if r.placement.parts else {})}
                           for r in self.rows if r.placement is not None],
            "rejected": [{"request": r.request, "replica": r.replica, "reason": r.reason}
                         for r in self.rows if r.placement is None],
            "placed_before_first_reject": self.placed_before_first_reject,
            "placed_total": self.placed_total,
            "vram_reserved_fraction": round(self.vram_reserved / self.vram_total, 4) if self.vram_total else 0.0,
        }


# ---------------------------------------------------------------- parsing


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _num(raw: Mapping[str, Any], key: str, where: str, default: float | None = None, *,
         positive: bool = False) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{where}.{key}: expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise InvalidArgument(f"{where}.{key}: must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return float(value)


def _int(raw: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int | None:
    value = _num(raw, key, where, default, positive=True)
    if value is None:
        return None
    if value != int(value):
        raise InvalidArgument(f"{where}.{key}: expected a whole number, got {raw.get(key)!r}")
    return int(value)


def _str(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = raw.get(key, default)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{where}.{key}: expected a string, got {value!r}")
    return value


def _labels(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if isinstance(raw, list):  # ["k=v", ...] as on the command line
        pairs = []
        for i, item in enumerate(raw):
            if not isinstance(item, str) or "=" not in item:
                raise InvalidArgument(f"{where}[{i}]: expected \"key=value\", got {item!r}")
            k, v = item.split("=", 1)
            pairs.append((k, v))
        return tuple(sorted(pairs))
    labels = _obj(raw, where)
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def _gpu_spec(raw: Any, where: str) -> tuple[GpuType, int]:
    spec = _obj(raw, where)
    count = _int(spec, "count", where, 1)
    assert count is not None
    name = _str(spec, "type", where)
    if name is not None:
        try:
            known = gpu_type(name)
        except KeyError as e:
            raise InvalidArgument(f"{where}.type: {e.args[0]}") from None
        if "memory_gib" not in spec:
            return known, count
    memory = _num(spec, "memory_gib", where, positive=True)
    if memory is None:
        raise InvalidArgument(f"{where}: give \"type\" (e.g. \"A100-80GB\") or \"memory_gib\" and "
                              "\"compute_capability\"")
    cc = spec.get("compute_capability", "")
    if not isinstance(cc, str | int | float) or isinstance(cc, bool):
        raise InvalidArgument(f"{where}.compute_capability: expected a string such as \"8.9\", got {cc!r}")
    cc = str(cc)
    if cc and not all(p.isdigit() for p in cc.split(".")):
        raise InvalidArgument(f"{where}.compute_capability: expected a string such as \"8.9\", got {cc!r}")
    label = name or f"{memory:g}GiB"
    return GpuType(label, int(memory * GIB), cc, "nvidia"), count


def parse_fleet(data: Any, source: str = "FLEET.json") -> Snapshot:
    """A Snapshot of empty nodes as the file describes them; InvalidArgument names the bad field."""
    root = _obj(data, source)
    nodes_raw = _list(root.get("nodes"), f"{source}: nodes")
    nodes: list[NodeState] = []
    seen: set[str] = set()
    for i, raw in enumerate(nodes_raw):
        where = f"{source}: nodes[{i}]"
        spec = _obj(raw, where)
        name = _str(spec, "name", where) or f"node-{i + 1}"
        if name in seen:
            raise InvalidArgument(f"{where}.name: duplicate node name {name!r}")
        seen.add(name)
        gpus: list[GpuState] = []
        for j, g in enumerate(_list(spec.get("gpus", []), f"{where}.gpus")):
            kind, count = _gpu_spec(g, f"{where}.gpus[{j}]")
            for _ in range(count):
                k = len(gpus)
                gpus.append(GpuState(f"{name}-gpu{k}", k, kind.name, kind.memory_bytes, 0, 0,
                                     kind.compute_capability))
        state = _str(spec, "state", where, "ready") or "ready"
        if state not in NODE_STATES:
            raise InvalidArgument(f"{where}.state: {state!r} is not one of {', '.join(NODE_STATES)}")
        engines_raw = spec.get("engines")
        engines = DEFAULT_ENGINES if engines_raw is None else frozenset(
            str(e) for e in _list(engines_raw, f"{where}.engines"))
        ram = _num(spec, "ram_gib", where)
        disk = _num(spec, "disk_gib", where)
        ram_b = UNLIMITED if ram is None else int(ram * GIB)
        disk_b = UNLIMITED if disk is None else int(disk * GIB)
        # A planned node can hold a part of a multi-node replica on any engine it has.
        nodes.append(NodeState(name, state, tuple(gpus), ram_b, ram_b, disk_b, engines,
                               _labels(spec.get("labels"), f"{where}.labels"), multinode=engines))
    if not nodes:
        raise InvalidArgument(f"{source}: nodes: the fleet has no nodes")
    return Snapshot(tuple(nodes))


def parse_requests(data: Any, source: str = "REQUESTS.json") -> tuple[Request, ...]:
    root = _obj(data, source)
    out: list[Request] = []
    for i, raw in enumerate(_list(root.get("requests"), f"{source}: requests")):
        where = f"{source}: requests[{i}]"
        spec = _obj(raw, where)
        model = _str(spec, "model", where)
        if not model:
            raise InvalidArgument(f"{where}.model: required (a catalog name such as \"qwen2-72b\")")
        device = _str(spec, "device", where, "gpu") or "gpu"
        strategy = _str(spec, "strategy", where, "pack") or "pack"
        if device not in ("gpu", "cpu"):
            raise InvalidArgument(f"{where}.device: expected \"gpu\" or \"cpu\", got {device!r}")
        if strategy not in ("pack", "spread"):
            raise InvalidArgument(f"{where}.strategy: expected \"pack\" or \"spread\", got {strategy!r}")
        replicas = _int(spec, "replicas", where, 1)
        assert replicas is not None
        out.append(Request(model, _str(spec, "quant", where), _str(spec, "engine", where),
                           _int(spec, "context", where), replicas, _int(spec, "tp", where),
                           _str(spec, "gpu_type", where), _str(spec, "node", where),
                           _labels(spec.get("labels"), f"{where}.labels"), device, strategy,
                           _str(spec, "name", where), _int(spec, "nodes", where)))
    return tuple(out)


# ---------------------------------------------------------------- planning


def what_if(snapshot: Snapshot, requests: Sequence[Request], options_for: OptionsFor, workload: Workload) -> WhatIf:
    """Place requests in order, one replica at a time, each placement applied before the next.

    A request that cannot be estimated (unknown model, impossible quant) rejects all its replicas
    with the estimator's message; the remaining requests still run.
    """
    types = fleet_gpu_types(snapshot)
    rows: list[Row] = []
    snap = snapshot
    for i, req in enumerate(requests):
        deployment = req.name or f"{req.model}#{i}"
        try:
            options = options_for(req.model, req.quant, req.engine, req.context, types, req.tp, device=req.device,
                                  nodes=req.nodes)
        except FleetError as e:
            rows.extend(Row(i, j, None, e.message) for j in range(req.replicas))
            continue
        for j in range(req.replicas):
            result = place(snap, PlacementRequest(deployment, 1, options, req.node, req.gpu_type, req.labels,
                                                  req.device, req.strategy),  # type: ignore[arg-type]
                           workload)
            if not result.placements:
                # an earlier replica of this same request is not "a replica of" some deployment named req#i
                reason = (result.closest or result.why).replace(
                    f"already runs a replica of {deployment}",
                    f"holds an earlier replica of request {i} (one per node)")
                rows.append(Row(i, j, None, reason))
                continue
            rows.append(Row(i, j, result.placements[0], ""))
            snap = apply(snap, result)
            # one deployment, one quantization: later replicas use the first replica's quant/engine
            chosen = result.placements[0].option
            options = tuple(o for o in options if (o.quant, o.engine) == (chosen.quant, chosen.engine))
    total = sum(g.memory_total for n in snap.nodes for g in n.gpus)
    reserved = sum(g.memory_reserved for n in snap.nodes for g in n.gpus)
    return WhatIf(tuple(rows), tuple(requests), total, reserved)


def what_if_files(fleet: Any, requests: Any, options_for: OptionsFor, workload: Workload) -> WhatIf:
    """`fleet plan` on already-decoded FLEET.json and REQUESTS.json contents."""
    return what_if(parse_fleet(fleet), parse_requests(requests), options_for, workload)
