"""Small builders for placement tests: nodes and options in GiB, as people write them."""

from __future__ import annotations

from typing import Any

from fleet.controller.core.placement import Option, PlacementRequest, Plan, Workload
from fleet.controller.core.placement import place as core_place
from fleet.controller.core.snapshot import GpuState, NodeState, Snapshot
from fleet.controller.store.files import shipped_catalog

WORKLOAD = shipped_catalog().workload  # the shipped demand mix (data/workload.toml)


def place(snap: Snapshot, request: PlacementRequest, workload: Workload | None = None) -> Plan:
    """The core's place() with the shipped workload unless a test gives its own."""
    return core_place(snap, request, WORKLOAD if workload is None else workload)

GIB = 1024**3


def gpu(i: int, node: str, total: float = 80, reserved: float = 0, other: float = 0, name: str = "A100-80GB",
        cc: str = "8.0") -> GpuState:
    return GpuState(f"{node}-gpu{i}", i, name, int(total * GIB), int(reserved * GIB), int(other * GIB), cc)


def node(name: str, reserved: list[float] | int = 8, *, total: float = 80, state: str = "ready",
         gpu_name: str = "A100-80GB", cc: str = "8.0", engines: tuple[str, ...] = ("vllm", "llama.cpp"),
         labels: dict[str, str] | None = None, ram: float = 512, disk: float = 2000,
         cached: tuple[str, ...] = (), deployments: tuple[str, ...] = ()) -> NodeState:
    """`reserved` is GiB reserved per GPU, or a GPU count (all free)."""
    per = [0.0] * reserved if isinstance(reserved, int) else list(reserved)
    return NodeState(name, state, tuple(gpu(i, name, total, r, 0, gpu_name, cc) for i, r in enumerate(per)),
                     int(ram * GIB), int(ram * GIB), int(disk * GIB), frozenset(engines),
                     tuple(sorted((labels or {}).items())), frozenset(cached), frozenset(deployments))


def opt(per_gpu: float, tp: int = 1, quant: str = "awq", engine: str = "vllm", quality: int = 50,
        cc: str = "", disk: float = 0, ram: float = 0, source: str = "") -> Option:
    return Option(quant, engine, tp, int(per_gpu * GIB), cc, quality, int(disk * GIB), int(ram * GIB), source)


def snapshot(*nodes: NodeState) -> Snapshot:
    return Snapshot(tuple(nodes))


def node_from_json(raw: dict[str, Any]) -> NodeState:
    gpus = raw.get("gpus", [])
    gpu_states = tuple(
        GpuState(f"{raw['name']}-gpu{i}", i, g.get("name", "A100-80GB"), int(g.get("total_gib", 80) * GIB),
                 int(g.get("reserved_gib", 0) * GIB), int(g.get("other_gib", 0) * GIB), g.get("cc", "8.0"))
        for i, g in enumerate(gpus))
    ram = int(raw.get("ram_gib", 512) * GIB)
    return NodeState(raw["name"], raw.get("state", "ready"), gpu_states, ram, ram, int(raw.get("disk_gib", 2000) * GIB),
                     frozenset(raw.get("engines", ["vllm", "llama.cpp"])), tuple(sorted(raw.get("labels", {}).items())),
                     frozenset(raw.get("cached", [])), frozenset(raw.get("deployments", [])))


def option_from_json(raw: dict[str, Any]) -> Option:
    return opt(raw["per_gpu_gib"], raw.get("tp", 1), raw.get("quant", "awq"), raw.get("engine", "vllm"),
               raw.get("quality", 50), raw.get("cc", ""), raw.get("disk_gib", 0), raw.get("ram_gib", 0),
               raw.get("source", ""))
