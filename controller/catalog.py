"""The model catalog: families, architectures and quantized variants, read from data files.

Shipped data lives in data/models/*.toml (one file per family) with the quantization vocabulary in
data/quants.toml; operators add models (fine-tunes) as TOML files in a catalog directory, written by
`fleet models add` from a HF config.json or a GGUF header. Pure: reads files, nothing else.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fleet.controller.errors import InvalidArgument, NotFound

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


class Catalog:
    def __init__(self, models: Sequence[Model], quants: dict[str, dict[str, Any]]) -> None:
        self._models = {m.name: m for m in models}   # later definitions (user dirs) win
        self.quants = quants
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
            hint = f"; did you mean {', '.join(sorted({self._index[c] for c in close}))}?" if close else ""
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


def _data() -> Any:
    return resources.files("fleet.controller").joinpath("data")


def load_quants() -> dict[str, dict[str, Any]]:
    return tomllib.loads(_data().joinpath("quants.toml").read_text())["quant"]


_VARIANT_FIELDS = {f.name for f in fields(Variant)}
_ARCH_FIELDS = {f.name for f in fields(Architecture)}


def _variant(row: dict[str, Any], quants: dict[str, dict[str, Any]], model: str) -> Variant:
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


def model_from_dict(raw: dict[str, Any], quants: dict[str, dict[str, Any]], origin: str = "shipped") -> Model:
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
        variants=tuple(_variant(v, quants, name) for v in raw.get("variants", ())),
        origin=origin,
    )


def _models_in(text: str, quants: dict[str, dict[str, Any]], origin: str) -> list[Model]:
    return [model_from_dict(m, quants, origin) for m in tomllib.loads(text).get("model", ())]


def _shipped(quants: dict[str, dict[str, Any]]) -> list[Model]:
    models: list[Model] = []
    folder = _data().joinpath("models")
    for f in sorted(folder.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".toml"):
            models += _models_in(f.read_text(), quants, "shipped")
    return models


@cache
def _default_catalog() -> Catalog:
    quants = load_quants()
    return Catalog(_shipped(quants), quants)


def load_catalog(extra_dirs: Sequence[Path] = ()) -> Catalog:
    """The shipped catalog plus every *.toml in `extra_dirs` (user-added models; they win on a name clash)."""
    if not extra_dirs:
        return _default_catalog()
    quants = load_quants()
    models = _shipped(quants)
    for d in extra_dirs:
        d = Path(d).expanduser()
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                models += _models_in(f.read_text(), quants, str(f))
    return Catalog(models, quants)


# ---------------------------------------------------------------- user-added models


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def _inline(d: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in d.items()) + " }"


def model_to_toml(model: Model, quants: dict[str, dict[str, Any]]) -> str:
    """The catalog file for `model`: only what differs from the defaults, so it stays readable."""
    arch_defaults = Architecture(1, 1, 1, 1, 1, 1, 1, 1)
    arch = {f.name: getattr(model.arch, f.name) for f in fields(Architecture)
            if f.name in ("layers", "hidden", "heads", "kv_heads", "head_dim", "vocab", "intermediate_size",
                          "max_context") or getattr(model.arch, f.name) != getattr(arch_defaults, f.name)}
    variants = []
    for v in model.variants:
        spec = quants.get(v.quant, {})
        row: dict[str, Any] = {"quant": v.quant, "engine": v.engine, "source": v.source}
        for f in fields(Variant):
            val = getattr(v, f.name)
            if f.name in row or val is None or val == "":
                continue
            if f.name in spec and spec[f.name] == val:
                continue
            if f.name not in spec and val == f.default:
                continue
            row[f.name] = val
        variants.append(_inline(row))
    lines = [
        "# Added with `fleet models add`.",
        "[[model]]",
        f"name = {_toml_value(model.name)}",
        f"family = {_toml_value(model.family)}",
        f"hf_id = {_toml_value(model.hf_id)}",
        f"aliases = {_toml_value(model.aliases)}",
        f"license = {_toml_value(model.license)}",
        f"params_total = {model.params_total}",
        f"params_active = {model.params_active}",
        f"arch = {_inline(arch)}",
        "variants = [",
        *(f"  {v}," for v in variants),
        "]",
    ]
    return "\n".join(lines) + "\n"


def write_model(model: Model, catalog_dir: Path, quants: dict[str, dict[str, Any]] | None = None) -> Path:
    catalog_dir = Path(catalog_dir).expanduser()
    catalog_dir.mkdir(parents=True, exist_ok=True)
    path = catalog_dir / f"{slug(model.name)}.toml"
    path.write_text(model_to_toml(model, quants or load_quants()))
    return path


def _variant_for(quant: str, quants: dict[str, dict[str, Any]], **over: Any) -> Variant:
    return _variant({"quant": quant, **over}, quants, over.get("source", quant))


def estimate_params(arch: Architecture) -> int:
    """Parameters implied by an architecture (decoder-only transformer), for configs that do not say."""
    attn = arch.hidden * arch.head_dim * (2 * arch.heads + 2 * arch.kv_heads)
    dense_layers = arch.layers - arch.routed_moe_layers
    mlp = arch.mlp_matrices * arch.hidden * arch.intermediate_size
    experts = arch.mlp_matrices * arch.hidden * arch.moe_intermediate_size * (arch.experts + arch.shared_experts)
    embed = arch.vocab * arch.hidden * (1 if arch.tied_embeddings else 2)
    return arch.layers * attn + dense_layers * mlp + arch.routed_moe_layers * experts + embed


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def model_from_hf_config(cfg: dict[str, Any], *, name: str | None = None, hf_id: str = "",
                         license: str = "unknown", quants: dict[str, dict[str, Any]] | None = None) -> Model:
    """A catalog model from a Hugging Face config.json (text part of multimodal configs too)."""
    quants = quants or load_quants()
    if "text_config" in cfg and "num_hidden_layers" not in cfg:
        cfg = {**cfg["text_config"], "torch_dtype": cfg.get("torch_dtype"),
               "quantization_config": cfg.get("quantization_config")}
    try:
        hidden = int(_first(cfg, "hidden_size", "n_embd", "d_model"))
        layers = int(_first(cfg, "num_hidden_layers", "n_layer", "num_layers"))
        heads = int(_first(cfg, "num_attention_heads", "n_head"))
        vocab = int(cfg["vocab_size"])
    except (TypeError, KeyError) as e:
        raise InvalidArgument(f"config.json lacks {e}: need hidden_size, num_hidden_layers, "
                              "num_attention_heads and vocab_size") from None
    kv = int(_first(cfg, "num_key_value_heads", "num_kv_heads", default=1 if cfg.get("multi_query") else heads))
    head_dim = int(_first(cfg, "head_dim", default=hidden // heads))
    experts = int(_first(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0))
    window = _first(cfg, "sliding_window", "attention_chunk_size", default=0) or 0
    use_window = bool(window) and cfg.get("use_sliding_window", True) is not False
    layer_types = cfg.get("layer_types") or []
    sliding_layers = sum(1 for t in layer_types if "sliding" in str(t) or "chunked" in str(t))
    if use_window and not sliding_layers:
        sliding_layers = layers
    mla = bool(cfg.get("kv_lora_rank"))
    arch = Architecture(
        layers=layers, hidden=hidden, heads=heads, kv_heads=kv, head_dim=head_dim, vocab=vocab,
        intermediate_size=int(_first(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden)),
        max_context=int(_first(cfg, "max_position_embeddings", "n_positions", "seq_length", default=4096)),
        experts=experts,
        experts_active=int(_first(cfg, "num_experts_per_tok", "num_experts_per_token", default=0)) if experts else 0,
        attention="mla" if mla else ("sliding" if use_window else "full"),
        sliding_window=int(window) if use_window else 0,
        sliding_layers=sliding_layers if use_window else 0,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        moe_intermediate_size=int(_first(cfg, "moe_intermediate_size", "intermediate_size", default=0))
        if experts else 0,
        shared_experts=int(_first(cfg, "n_shared_experts", default=0)),
        kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
        gated_mlp=str(cfg.get("hidden_act", cfg.get("activation_function", "silu"))) not in ("gelu", "gelu_new"),
    )
    params = estimate_params(arch)
    qcfg = cfg.get("quantization_config") or {}
    method = str(qcfg.get("quant_method", "")).lower()
    if method in ("awq", "gptq"):
        bits = int(qcfg.get("bits", 4))
        quant = "gptq-int8" if method == "gptq" and bits == 8 else method
        group = qcfg.get("group_size") or 128
        variant = _variant_for(quant, quants, source=hf_id, group_size=int(group))
    elif method == "fp8":
        variant = _variant_for("fp8", quants, source=hf_id)
    elif method == "mxfp4":
        variant = _variant_for("mxfp4", quants, source=hf_id)
    else:
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
        variant = _variant_for("fp16" if "float16" == dtype else "bf16", quants, source=hf_id)
    model_name = slug(name or hf_id.rsplit("/", 1)[-1] or cfg.get("model_type", "custom"))
    return Model(
        name=model_name, family=str(cfg.get("model_type", "custom")), hf_id=hf_id, aliases=(),
        arch=arch, params_total=params, params_active=_active_params(arch, params), license=license,
        variants=(variant,), origin="user",
    )


def _active_params(arch: Architecture, total: int) -> int:
    if not arch.experts:
        return total
    per_expert = arch.mlp_matrices * arch.hidden * arch.moe_intermediate_size
    idle = arch.routed_moe_layers * per_expert * (arch.experts - arch.experts_active)
    return max(1, total - idle)


# GGUF file types (general.file_type, llama_ftype) -> fleet quant names.
_GGUF_FTYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 15: "q4_k_m", 17: "q5_k_m", 18: "q6_k",
                32: "bf16", 38: "mxfp4"}


def _gguf_field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.data) == 1:
        part = f.parts[f.data[0]]
        if f.types and f.types[0].name == "STRING":
            return bytes(part).decode("utf-8", "replace")
        return part.tolist()[0] if hasattr(part, "tolist") else part
    return [f.parts[i].tolist()[0] if hasattr(f.parts[i], "tolist") else f.parts[i] for i in f.data]


_GGUF_QUANT_SUFFIX = re.compile(r"[._-](i?q\d\w*|f16|bf16|f32|mxfp4\w*)(-\d+-of-\d+)?$", re.IGNORECASE)


def model_from_gguf(path: Path, *, name: str | None = None, license: str | None = None,
                    quants: dict[str, dict[str, Any]] | None = None) -> Model:
    """A catalog model from a GGUF file's header: architecture, tensor sizes, file type."""
    from gguf import GGUFReader  # only here: the core estimator never needs it

    quants = quants or load_quants()
    path = Path(path).expanduser()
    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{path}: not a readable GGUF file ({e})") from None
    arch_name = _gguf_field(reader, "general.architecture")
    if not arch_name:
        raise InvalidArgument(f"{path}: GGUF has no general.architecture")

    def a(key: str, default: Any = None) -> Any:
        v = _gguf_field(reader, f"{arch_name}.{key}")
        return default if v is None else v

    hidden = int(a("embedding_length"))
    heads_raw = a("attention.head_count")
    heads = int(max(heads_raw) if isinstance(heads_raw, list) else heads_raw)
    kv_raw = a("attention.head_count_kv", heads)
    kv = int(max(kv_raw) if isinstance(kv_raw, list) else kv_raw)
    tensors = {t.name: t for t in reader.tensors}
    params = sum(int(t.n_elements) for t in reader.tensors)
    size = sum(int(t.n_bytes) for t in reader.tensors)
    embd = tensors.get("token_embd.weight")
    vocab = int(embd.shape[-1]) if embd is not None else len(_gguf_field(reader, "tokenizer.ggml.tokens") or [])
    window = int(a("attention.sliding_window", 0) or 0)
    experts = int(a("expert_count", 0) or 0)
    layers = int(a("block_count"))
    arch = Architecture(
        layers=layers, hidden=hidden, heads=heads, kv_heads=kv,
        head_dim=int(a("attention.key_length", hidden // heads)), vocab=vocab,
        intermediate_size=int(a("feed_forward_length", 4 * hidden) if not isinstance(
            a("feed_forward_length"), list) else max(a("feed_forward_length"))),
        max_context=int(a("context_length", 4096)),
        experts=experts, experts_active=int(a("expert_used_count", 0) or 0),
        attention="mla" if a("attention.kv_lora_rank") else ("sliding" if window else "full"),
        sliding_window=window, sliding_layers=layers if window else 0,
        tied_embeddings="output.weight" not in tensors,
        moe_intermediate_size=int(a("expert_feed_forward_length", 0) or 0),
        kv_lora_rank=int(a("attention.kv_lora_rank", 0) or 0),
        qk_rope_head_dim=int(a("rope.dimension_count", 0) or 0) if a("attention.kv_lora_rank") else 0,
    )
    ftype = _gguf_field(reader, "general.file_type")
    quant = _GGUF_FTYPES.get(int(ftype) if ftype is not None else -1, "")
    bits = size * 8 / params if params else 16.0
    if quant not in quants:
        quant = min((q for q, s in quants.items() if s["engine"] == LLAMA_CPP),
                    key=lambda q: abs(quants[q]["bits_per_weight"] - bits))
    variant = _variant_for(quant, quants, engine=LLAMA_CPP, source=str(path.parent), file=path.name,
                           size_bytes=size, bits_per_weight=round(bits, 4), embed_bits=round(bits, 4),
                           output_bits=round(bits, 4))
    # The file name says which fine-tune this is better than general.name (often the base model's).
    default_name = _GGUF_QUANT_SUFFIX.sub("", path.stem) or path.stem
    return Model(
        name=slug(name or default_name), family=str(arch_name),
        hf_id=str(_gguf_field(reader, "general.repo_url") or ""),
        aliases=(), arch=arch, params_total=params, params_active=_active_params(arch, params),
        license=license or str(_gguf_field(reader, "general.license") or "unknown"),
        variants=(variant,), origin="user",
    )


def with_name(model: Model, name: str) -> Model:
    return replace(model, name=slug(name))


__all__ = [
    "ATTENTION_KINDS", "ENGINES", "LLAMA_CPP", "VLLM", "Architecture", "Catalog", "Model", "Variant",
    "estimate_params", "load_catalog", "load_quants", "model_from_dict", "model_from_gguf",
    "model_from_hf_config", "model_to_toml", "slug", "with_name", "write_model",
]
