"""The GPU table (data/gpus.toml): names, memory and compute capability of common GPUs."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_bytes: int
    compute_capability: str  # "8.0"; "" when the vendor has none (AMD)
    vendor: str
    aliases: tuple[str, ...] = ()


def _key(name: str) -> str:
    # "A100 80GB", "a100-80gb" and "A100_80GB" are the same GPU to an operator.
    return re.sub(r"[\s_\-]+", "", name).lower()


@cache
def gpu_table() -> dict[str, GpuType]:
    raw = tomllib.loads(resources.files("fleet.common").joinpath("data/gpus.toml").read_text())
    table: dict[str, GpuType] = {}
    for row in raw["gpu"]:
        gpu = GpuType(
            name=row["name"],
            memory_bytes=int(row["memory_mib"]) * MIB,
            compute_capability=row.get("compute_capability", ""),
            vendor=row.get("vendor", "nvidia"),
            aliases=tuple(row.get("aliases", ())),
        )
        for name in (gpu.name, *gpu.aliases):
            table.setdefault(_key(name), gpu)
    return table


def gpu_type(name: str) -> GpuType:
    """The GPU called `name` (any alias, any case); KeyError says which names exist."""
    found = gpu_table().get(_key(name))
    if found is None:
        known = ", ".join(sorted({g.name for g in gpu_table().values()}))
        raise KeyError(f"unknown GPU type {name!r}; known types: {known}")
    return found
