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
from dataclasses import dataclass, fields, replace
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
    gguf_arch: str = ""                # llama.cpp's name for the architecture (llama, qwen2, falcon, ...)
    # Context beyond max_context (the config's native length) through rope scaling, as the model card
    # documents it: up to extended_context with `rope_scaling` (yarn, linear, dynamic) x rope_factor over
    # rope_original_context (0: max_context); rope_theta restated for engines that replace the rope settings.
    rope_scaling: str = ""
    rope_factor: float = 0.0
    rope_original_context: int = 0
    extended_context: int = 0
    rope_theta: float = 0.0

    @property
    def context_limit(self) -> int:
        """The longest context the model serves: extended by rope scaling where documented."""
        return max(self.max_context, self.extended_context if self.rope_scaling else 0)

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
    ftype: str = ""                    # GGUF only: llama-quantize's file type (Q4_K_M, Q8_0, ...)
    gguf_untied: bool = False          # GGUF only: the file keeps output.weight although the model ties it


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


@dataclass(frozen=True)
class Resolved:
    model: Model
    quant: str | None   # implied by the id (a quantized repo), or None
    engine: str | None


# Repo-name suffixes that say how the weights are quantized (longest first), and the quant they imply.
_QUANT_SUFFIXES = (
    ("-awq-int4", "awq", VLLM), ("-gptq-int4", "gptq", VLLM), ("-gptq-int8", "gptq-int8", VLLM),
    ("-quantized.w8a8", "int8", VLLM), ("-fp8-dynamic", "fp8", VLLM), ("-w8a8", "int8", VLLM),
    ("-awq", "awq", VLLM), ("-gptq", "gptq", VLLM), ("-fp8", "fp8", VLLM), ("-int4", "gptq", VLLM),
    ("-gguf", None, LLAMA_CPP),
)
_CHAT_SUFFIXES = ("-instruct", "-chat", "-it", "-hf", "-base")


def _loose(name: str) -> tuple[str, str | None, str | None]:
    """(the id reduced to the model, the quant and engine its suffix implies)."""
    k = _key(name).rsplit("/", 1)[-1].replace("_", "-")
    quant: str | None = None
    engine: str | None = None
    for suffix, q, e in _QUANT_SUFFIXES:
        if k.endswith(suffix):
            k, quant, engine = k[: -len(suffix)], q, e
            break
    changed = True
    while changed:
        changed = False
        for suffix in _CHAT_SUFFIXES:
            if k.endswith(suffix):
                k, changed = k[: -len(suffix)], True
    for prefix in ("meta-",):
        k = k.removeprefix(prefix)
    return k, quant, engine


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
        # Hub ids loosely: without the organisation, chat suffixes (-Instruct, -it) and quant suffixes, so a
        # base-model id, an instruct id and quantized repos of the same model all land on it.
        self._loose: dict[str, str] = {}
        for m in self._models.values():
            for k in (m.name, *m.aliases, m.hf_id, *(v.source for v in m.variants if "/" in v.source)):
                if k:
                    self._loose.setdefault(_loose(k)[0], m.name)

    def resolve(self, name: str) -> Resolved:
        """A model by name, alias or hub id (base, instruct or a quantized repo of it), with the quant and engine
        the id implies when that is unambiguous (a repo that is one variant's source, or ends in -AWQ, -GPTQ-Int4,
        -FP8, ...; a -GGUF repo implies llama.cpp only)."""
        key = _key(name)
        found = self._index.get(key)
        if found is not None:
            model = self._models[found]
            if key in {_key(k) for k in (model.name, model.hf_id, *model.aliases)}:
                return Resolved(model, None, None)  # the model itself: any of its variants
            same = {(v.quant, v.engine) for v in model.variants if _key(v.source) == key}
            if len(same) == 1:
                quant, engine = next(iter(same))
                return Resolved(model, quant, engine)
            engines = {e for _, e in same}
            return Resolved(model, None, engines.pop() if len(engines) == 1 else None)
        loose, quant, engine = _loose(name)
        found = self._loose.get(loose)
        if found is None:
            self.get(name)  # raises NotFound with suggestions
        model = self._models[found]  # type: ignore[index]
        if quant is not None and not any(v.quant == quant for v in model.variants):
            quant = None  # a quantization the catalog does not carry for it: let the caller choose
        return Resolved(model, quant, engine)

    def get(self, name: str) -> Model:
        """A model by name, alias or HF repo id, any case."""
        found = self._index.get(_key(name))
        if found is None:
            loose = self._loose.get(_loose(name)[0])
            if loose is not None:
                return self._models[loose]
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


def apply_measured(models: Sequence[Model], measured: Iterable[Mapping[str, Any]]) -> list[Model]:
    """Models with the exact sizes recorded from GGUF headers (`[[variant]]` entries: model, quant, engine,
    source, file, size_bytes) set on their variants; an entry for a model or file no longer in the catalog
    is ignored."""
    sizes = {(e.get("model"), e.get("quant"), e.get("engine"), e.get("source"), e.get("file", "")): e.get("size_bytes")
             for e in measured}
    out = []
    for m in models:
        variants = tuple(
            replace(v, size_bytes=int(size)) if isinstance(size := sizes.get((m.name, v.quant, v.engine, v.source,
                                                                              v.file)), int) and size > 0 else v
            for v in m.variants)
        out.append(replace(m, variants=variants) if variants != m.variants else m)
    return out


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
    measured: list[Mapping[str, Any]] = []
    for origin, text in source.model_files():
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"{origin}: not valid TOML ({e})") from None
        models += [model_from_dict(m, quants, origin) for m in data.get("model", ())]
        measured += data.get("variant", ())
    # later definitions (operator folders) replace earlier ones by name before the sizes apply
    by_name = {m.name: m for m in models}
    models = apply_measured(list(by_name.values()), measured)
    return Catalog(models, quants, tomllib.loads(source.text("engines.toml")),
                   parse_workload(source.text("workload.toml")))
