"""Catalog entries for operators' own models: from a Hugging Face config.json or a GGUF header, and back to TOML.

Pure: the caller decodes the config.json or reads the GGUF header (fleet.controller.store.files) and
writes the TOML this returns into a catalog directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import PurePath
from typing import Any

from fleet.controller.core.catalog import (
    LLAMA_CPP,
    Architecture,
    Model,
    Quants,
    Variant,
    parse_variant,
)
from fleet.controller.core.errors import InvalidArgument


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


def model_to_toml(model: Model, quants: Quants) -> str:
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



def _variant_for(quant: str, quants: Quants, **over: Any) -> Variant:
    return parse_variant({"quant": quant, **over}, quants, over.get("source", quant))


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
                         license: str = "unknown", quants: Quants) -> Model:
    """A catalog model from a Hugging Face config.json (text part of multimodal configs too)."""
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
_GGUF_FTYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 10: "q2_k", 12: "q3_k_m", 14: "q4_k_s",
                15: "q4_k_m", 16: "q5_k_s", 17: "q5_k_m", 18: "q6_k", 32: "bf16", 38: "mxfp4"}
# general.file_type -> llama-quantize's name for the mix (llama_ftype)
FTYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               21: "Q2_K_S", 32: "BF16", 38: "MXFP4_MOE"}


_GGUF_QUANT_SUFFIX = re.compile(r"[._-](i?q\d\w*|f16|bf16|f32|mxfp4\w*)(-\d+-of-\d+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    n_elements: int
    n_bytes: int
    type: str = ""          # ggml type name: Q4_K, F32, ...
    offset: int = 0         # from the start of the tensor data


@dataclass(frozen=True)
class GgufHeader:
    """What a GGUF file's header says, decoded (the store reads it with the `gguf` package)."""

    path: str  # the file, for messages and the variant's source/file
    fields: Mapping[str, Any]  # key -> value (strings decoded, arrays as lists)
    tensors: tuple[GgufTensor, ...]
    data_offset: int = 0    # where tensor data starts (the header's length, padded)

    @property
    def tensor_bytes(self) -> int:
        """Bytes of all tensors: what llama.cpp loads."""
        return sum(t.n_bytes for t in self.tensors)

    @property
    def file_size(self) -> int:
        """The whole file: header, tensors and the alignment padding between them."""
        return self.data_offset + max((t.offset + t.n_bytes for t in self.tensors), default=0)


def model_from_gguf(header: GgufHeader, *, name: str | None = None, license: str | None = None,
                    quants: Quants) -> Model:
    """A catalog model from a GGUF file's header: architecture, tensor sizes, file type."""
    path = PurePath(header.path)
    arch_name = header.fields.get("general.architecture")
    if not arch_name:
        raise InvalidArgument(f"{path}: GGUF has no general.architecture")

    def a(key: str, default: Any = None) -> Any:
        v = header.fields.get(f"{arch_name}.{key}")
        return default if v is None else v

    try:
        hidden = int(a("embedding_length"))
        heads_raw = a("attention.head_count")
        heads = int(max(heads_raw) if isinstance(heads_raw, list) else heads_raw)
        layers = int(a("block_count"))
    except (TypeError, ValueError):
        raise InvalidArgument(f"{path}: GGUF lacks {arch_name}.embedding_length, attention.head_count or "
                              "block_count") from None
    kv_raw = a("attention.head_count_kv", heads)
    kv = int(max(kv_raw) if isinstance(kv_raw, list) else kv_raw)
    tensors = {t.name: t for t in header.tensors}
    params = sum(t.n_elements for t in header.tensors)
    size = sum(t.n_bytes for t in header.tensors)
    embd = tensors.get("token_embd.weight")
    vocab = int(embd.shape[-1]) if embd is not None else len(header.fields.get("tokenizer.ggml.tokens") or [])
    window = int(a("attention.sliding_window", 0) or 0)
    experts = int(a("expert_count", 0) or 0)
    ffn = a("feed_forward_length", 4 * hidden)
    arch = Architecture(
        layers=layers, hidden=hidden, heads=heads, kv_heads=kv,
        head_dim=int(a("attention.key_length", hidden // heads)), vocab=vocab,
        intermediate_size=int(max(ffn) if isinstance(ffn, list) else ffn),
        max_context=int(a("context_length", 4096)),
        experts=experts, experts_active=int(a("expert_used_count", 0) or 0),
        attention="mla" if a("attention.kv_lora_rank") else ("sliding" if window else "full"),
        sliding_window=window, sliding_layers=layers if window else 0,
        tied_embeddings="output.weight" not in tensors,
        moe_intermediate_size=int(a("expert_feed_forward_length", 0) or 0),
        kv_lora_rank=int(a("attention.kv_lora_rank", 0) or 0),
        qk_rope_head_dim=int(a("rope.dimension_count", 0) or 0) if a("attention.kv_lora_rank") else 0,
        gguf_arch=str(arch_name),
    )
    ftype = header.fields.get("general.file_type")
    quant = _GGUF_FTYPES.get(int(ftype) if ftype is not None else -1, "")
    bits = size * 8 / params if params else 16.0
    if quant not in quants:
        quant = min((q for q, s in quants.items() if s["engine"] == LLAMA_CPP),
                    key=lambda q: abs(quants[q]["bits_per_weight"] - bits))
    variant = _variant_for(quant, quants, engine=LLAMA_CPP, source=str(path.parent), file=path.name,
                           size_bytes=size, bits_per_weight=round(bits, 4), embed_bits=round(bits, 4),
                           output_bits=round(bits, 4),
                           ftype=FTYPE_NAMES.get(int(ftype) if ftype is not None else -1, ""))
    # The file name says which fine-tune this is better than general.name (often the base model's).
    default_name = _GGUF_QUANT_SUFFIX.sub("", path.stem) or path.stem
    return Model(
        name=slug(name or default_name), family=str(arch_name),
        hf_id=str(header.fields.get("general.repo_url") or ""),
        aliases=(), arch=arch, params_total=params, params_active=_active_params(arch, params),
        license=license or str(header.fields.get("general.license") or "unknown"),
        variants=(variant,), origin="user",
    )

