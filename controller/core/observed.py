"""What replicas really used, and what that means for the next reservation. Pure.

Observations are kept per replica and grouped by key: (model, quant, engine, GPU type or "cpu", TP, PP,
context); the engine version is recorded with each and listed, but replicas of every version count
(the larger figure wins, so an upgrade that needs more memory is seen at once). Figures are per GPU (or
RAM on CPU), like the estimate.

A new replica reserves max(estimate, observed + margin); with `trust` (an operator's --trust-observed)
observed + margin even below the estimate. vLLM's KV pool takes whatever its budget leaves, so its
observed total says nothing about need: there the need is what it used besides the pool plus the
estimate's KV for one full-context sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TERMS = ("weights", "kv_cache", "activations", "runtime", "total")
# Engines whose KV pool grows to fill the budget they are given (vLLM), so observed total = the budget.
ELASTIC_KV = frozenset({"vllm"})


@dataclass(frozen=True)
class Memory:
    """One replica's measurement (its agent's last report)."""

    gpus: tuple[tuple[str, int], ...] = ()  # (GPU UUID, bytes) from NVML
    ram: int = 0
    weights: int = 0
    kv_cache: int = 0
    activations: int = 0
    runtime: int = 0
    total: int = 0
    engine_version: str = ""
    measured_at: float = 0.0

    @property
    def measured(self) -> bool:
        return bool(self.total or self.weights or self.kv_cache)


@dataclass(frozen=True)
class Key:
    model: str
    quant: str
    engine: str
    gpu_type: str  # GPU type name, or "cpu"
    tp: int
    context: int
    pp: int = 1

    def label(self) -> str:
        where = "cpu" if self.gpu_type == "cpu" else f"{self.gpu_type} TP {self.tp}" + \
            (f" PP {self.pp}" if self.pp > 1 else "")
        return f"{self.model} {self.quant} on {self.engine}, {where}, context {self.context}"


@dataclass(frozen=True)
class Observed:
    """The largest figure per term over the replicas of one key (0 = never measured or logged)."""

    replicas: int
    weights: int = 0
    kv_cache: int = 0
    activations: int = 0
    runtime: int = 0
    total: int = 0
    engine_versions: tuple[str, ...] = ()
    gpu_types: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"replicas": self.replicas, **{t: getattr(self, t) for t in TERMS},
                "engine_versions": list(self.engine_versions), "gpu_types": list(self.gpu_types)}


def summarize(memories: Iterable[Memory], gpu_types: Iterable[str] = ()) -> Observed | None:
    """The largest per term over measured replicas; None when none has been measured."""
    ms = [m for m in memories if m.measured]
    if not ms:
        return None
    return Observed(replicas=len(ms), **{t: max(getattr(m, t) for m in ms) for t in TERMS},
                    engine_versions=tuple(sorted({m.engine_version for m in ms if m.engine_version})),
                    gpu_types=tuple(sorted(set(gpu_types))))


@dataclass(frozen=True)
class Margin:
    fraction: float = 0.05
    minimum: int = 256 * 2**20

    @classmethod
    def from_engines(cls, engines: Mapping[str, Mapping[str, Any]]) -> Margin:
        c = engines.get("observed", {})
        return cls(float(c.get("margin", 0.05)), int(float(c.get("margin_min_mib", 256)) * 2**20))


def observed_need(engine: str, obs: Observed, estimate_kv: int) -> int | None:
    """What a replica of this key needs per GPU by observation, or None when the observation cannot say."""
    if not obs.total:
        return None
    if engine in ELASTIC_KV:
        if not obs.kv_cache:
            return None  # its pool is part of the total and we cannot tell how much
        return max(0, obs.total - obs.kv_cache) + estimate_kv
    return obs.total


@dataclass(frozen=True)
class Reservation:
    bytes: int
    source: str  # estimate | observed
    why: str


def reservation(engine: str, estimate_total: int, estimate_kv: int, obs: Observed | None, margin: Margin,
                trust: bool = False) -> Reservation:
    """Bytes per GPU (or RAM) a new replica reserves: the estimate, or observed + margin where that is more
    (or, trusted, wherever there is an observation)."""
    need = observed_need(engine, obs, estimate_kv) if obs is not None else None
    if need is None:
        return Reservation(estimate_total, "estimate", "no observation" if obs is None else "observation incomplete")
    padded = need + max(math.ceil(need * margin.fraction), margin.minimum)
    assert obs is not None
    seen = f"observed {need} on {obs.replicas} replica(s) + margin"
    if trust:
        return Reservation(padded, "observed", seen + " (--trust-observed)")
    if padded > estimate_total:
        return Reservation(padded, "observed", seen + f" > estimate {estimate_total}")
    return Reservation(estimate_total, "estimate", f"estimate {estimate_total} covers {seen}")


def over_reservation(memory: Memory, reserved: Mapping[str, int], ram_reserved: int) -> list[tuple[str, int, int]]:
    """(GPU UUID or "cpu", observed, reserved) where a replica uses more than it reserved."""
    if reserved:
        return [(u, b, reserved[u]) for u, b in memory.gpus if u in reserved and b > reserved[u]]
    if ram_reserved and memory.ram > ram_reserved and not memory.gpus:
        return [("cpu", memory.ram, ram_reserved)]
    return []
