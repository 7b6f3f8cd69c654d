"""The model catalog: families, architectures and quantized variants, as parsed from data files.

Shipped data lives in data/models/*.toml (one file per family) with the quantization vocabulary in
data/quants.toml, the estimator's engine constants in data/engines.toml and placement's workload mix in
data/workload.toml; operators add models (fine-tunes) as TOML files in a catalog directory. Pure: the
files are read by a CatalogSource the caller passes in (fleet.controller.store.files); nothing here
opens a file.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from fleet.controller.core.errors import InvalidArgument, NotFound
from fleet.controller.core.workload import Workload, parse_workload

VLLM = "vllm"
LLAMA_CPP = "llama.cpp"
ENGINES = (VLLM, LLAMA_CPP)
ATTENTION_KINDS = ("full", "sliding", "mla")


@dataclass(frozen=True)
class Architecture:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate_size: int
    max_context: int
    experts: int = 0
    experts_active: int = 0
    attention: str = "full"            # full | sliding | mla
    sliding_window: int = 0            # tokens a sliding-window (or chunked) layer attends to
    sliding_layers: int = 0            # how many of `layers` use the window; the rest are global
    tied_embeddings: bool = False      # lm_head shares the embedding matrix
    moe_intermediate_size: int = 0     # per routed expert
    shared_experts: int = 0
    moe_layers: int = 0                # layers with routed experts; 0 = all layers when experts > 0
    kv_lora_rank: int = 0              # MLA: latent width cached per token and layer
    qk_rope_head_dim: int = 0          # MLA: rope key width cached beside the latent
    gated_mlp: bool = True             # SwiGLU/GeGLU (3 matrices) vs plain GELU MLP (2)

    @property
    def routed_moe_layers(self) -> int:
        if not self.experts:
            return 0
        return self.moe_layers or self.layers

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2


@dataclass(frozen=True)
class Variant:
    quant: str
    engine: str                        # "vllm" | "llama.cpp"
    source: str                        # HF repo id (or local path) the weights come from
    min_compute_capability: str        # "" = any
    bits_per_weight: float             # effective, scales included, for the quantized bulk
    size_bytes: int | None             # exact artifact size when known
    group_size: int | None             # AWQ/GPTQ quantization group
    quality: int                       # higher = better
    file: str = ""                     # GGUF file (or split prefix) inside `source`
    embed_bits: float = 16.0
    output_bits: float = 16.0
    applies_to: str = "linear"         # linear | experts (MXFP4 quantizes only MoE experts)
    rest_bits: float = 16.0            # with applies_to = experts: everything else
    attention_bits: float | None = None  # attention kept wider than the bulk (Meta's FP8 405B)
    unquantized_layers: int = 0        # decoder layers whose MLP stays at 16 bits
    intermediate_size: int | None = None  # padded intermediate size of this checkpoint
    rocm: bool = True                  # runs on vLLM's ROCm build (AMD GPUs have no compute capability)


@dataclass(frozen=True)
class Model:
    name: str
    family: str
    hf_id: str
    aliases: tuple[str, ...]
    arch: Architecture
    params_total: int
    params_active: int
    license: str
    variants: tuple[Variant, ...]
    origin: str = "shipped"            # shipped | a catalog file path for user-added models


def _key(name: str) -> str:
    return name.strip().lower()


def _close(name: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(_key(name), list(candidates), n=5, cutoff=0.5)


Quants = Mapping[str, Mapping[str, Any]]
# The estimator's engine constants (data/engines.toml): section -> key -> number.
EngineConstants = Mapping[str, Mapping[str, Any]]


class Catalog:
    """Models by name, alias or HF id, with the data every decision about them reads.

    `engines` calibrates the estimator (fleet.controller.core.estimate); `workload` is the demand mix
    placement's `pack` scorer protects (fleet.controller.core.placement).
    """

    def __init__(self, models: Sequence[Model], quants: Quants, engines: EngineConstants | None = None,
                 workload: Workload | None = None) -> None:
        self._models = {m.name: m for m in models}   # later definitions (user dirs) win
        self.quants = quants
        self.engines: EngineConstants = engines or {}
        self.workload = workload or Workload(())
        self._index: dict[str, str] = {}
        # Exact names first, then aliases and HF ids, then variant sources (a quantized repo id
        # names its model too); the first claim on a key wins.
        for m in self._models.values():
            self._index[_key(m.name)] = m.name
        for m in self._models.values():
            for k in (*m.aliases, m.hf_id):
                self._index.setdefault(_key(k), m.name)
        for m in self._models.values():
            for v in m.variants:
                if "/" in v.source:
                    self._index.setdefault(_key(v.source), m.name)

    def get(self, name: str) -> Model:
        """A model by name, alias or HF repo id, any case."""
        found = self._index.get(_key(name))
        if found is None:
            close = _close(name, self._index)
            # best match first (difflib's order), each model once
            hint = f"; did you mean {', '.join(dict.fromkeys(self._index[c] for c in close))}?" if close else ""
            raise NotFound(f"unknown model {name!r}{hint} (`fleet models` lists all {len(self._models)})")
        return self._models[found]

    def models(self) -> list[Model]:
        return sorted(self._models.values(), key=lambda m: (m.family, m.params_total, m.name))

    def variant(self, model: Model, quant: str, engine: str | None = None) -> Variant:
        """The variant of `model` in `quant` (on `engine` when given); InvalidArgument says what exists."""
        q = self.canonical_quant(quant)
        if engine is not None and engine not in ENGINES:
            raise InvalidArgument(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
        same_quant = [v for v in model.variants if v.quant == q]
        matches = [v for v in same_quant if engine is None or v.engine == engine]
        if matches:
            return max(matches, key=lambda v: v.quality)
        available = ", ".join(f"{v.quant} ({v.engine})" for v in model.variants)
        if same_quant:
            on = sorted({v.engine for v in same_quant})
            others = ", ".join(v.quant for v in model.variants if v.engine == engine) or "none"
            raise InvalidArgument(
                f"{model.name} in {q} runs on {' and '.join(on)}, not {engine}; "
                f"{engine} variants of {model.name}: {others}")
        raise InvalidArgument(f"{model.name} has no {q} variant; available: {available}")

    def canonical_quant(self, quant: str) -> str:
        q = _key(quant)
        for name, spec in self.quants.items():
            if q == name or q in spec.get("aliases", ()):
                return name
        return q


# ---------------------------------------------------------------- loading


_VARIANT_FIELDS = {f.name for f in fields(Variant)}
_ARCH_FIELDS = {f.name for f in fields(Architecture)}


def parse_variant(row: dict[str, Any], quants: Quants, model: str) -> Variant:
    quant = _key(row["quant"])
    spec = quants.get(quant)
    if spec is None:
        raise InvalidArgument(f"model {model}: unknown quant {quant!r}; known: {', '.join(quants)}")
    merged = {k: v for k, v in spec.items() if k in _VARIANT_FIELDS}
    merged.update({k: v for k, v in row.items() if k in _VARIANT_FIELDS})
    merged["quant"] = quant
    merged.setdefault("source", "")
    merged.setdefault("size_bytes", None)
    merged.setdefault("group_size", None)
    unknown = set(row) - _VARIANT_FIELDS
    if unknown:
        raise InvalidArgument(f"model {model}: unknown variant fields {sorted(unknown)}")
    return Variant(**merged)


def model_from_dict(raw: dict[str, Any], quants: Quants, origin: str = "shipped") -> Model:
    name = raw["name"]
    arch_raw = raw["arch"]
    unknown = set(arch_raw) - _ARCH_FIELDS
    if unknown:
        raise InvalidArgument(f"model {name}: unknown architecture fields {sorted(unknown)}")
    arch = Architecture(**arch_raw)
    if arch.attention not in ATTENTION_KINDS:
        raise InvalidArgument(f"model {name}: attention must be one of {ATTENTION_KINDS}")
    total = int(raw["params_total"])
    return Model(
        name=name,
        family=raw.get("family", name),
        hf_id=raw.get("hf_id", ""),
        aliases=tuple(raw.get("aliases", ())),
        arch=arch,
        params_total=total,
        params_active=int(raw.get("params_active", total)),
        license=raw.get("license", "unknown"),
        variants=tuple(parse_variant(v, quants, name) for v in raw.get("variants", ())),
        origin=origin,
    )


def _models_in(text: str, quants: Quants, origin: str) -> list[Model]:
    return [model_from_dict(m, quants, origin) for m in tomllib.loads(text).get("model", ())]


class CatalogSource(Protocol):
    """Where catalog data comes from: the only way the core reads files (implemented by the store)."""

    def text(self, name: str) -> str:
        """A shipped data file by name: quants.toml, engines.toml or workload.toml."""
        ...

    def model_files(self) -> Iterable[tuple[str, str]]:
        """(origin, TOML text) of every model file: shipped first, then operator-added (which win)."""
        ...


def parse_quants(text: str) -> dict[str, dict[str, Any]]:
    return dict(tomllib.loads(text)["quant"])


def load_catalog(source: CatalogSource) -> Catalog:
    """The catalog `source` describes; InvalidArgument names the file and field that is wrong."""
    quants = parse_quants(source.text("quants.toml"))
    models: list[Model] = []
    for origin, text in source.model_files():
        models += _models_in(text, quants, origin)
    return Catalog(models, quants, tomllib.loads(source.text("engines.toml")),
                   parse_workload(source.text("workload.toml")))
