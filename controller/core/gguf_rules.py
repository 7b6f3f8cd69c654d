"""Which ggml type llama.cpp's quantizer gives each tensor of a GGUF file, and how many bytes that makes.

A model of `llama-quantize`'s choices (llama.cpp src/llama-quant.cpp), applied to the tensors an
architecture has:
- only 2-D and 3-D `*.weight` tensors are quantized; norms, biases and MoE routers stay F32;
- the output layer (and a tied token embedding, which llama.cpp quantizes as the output) takes Q6_K,
  or Q8_0 when its rows are not whole 256-blocks (older releases used 256 for every mix: the larger
  of the two is kept, so an estimate is never under either);
- the K-quant mixes upgrade attention-V and FFN-down on the first and last eighth of the layers and
  every third layer in between (`use_more_bits`), 70B-class models get a wider attention-V, 8-expert
  models Q8_0 attention K/V;
- a row that is not a whole number of blocks falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
  Q2_K/Q3_K -> a 4.5-bit 32-block type), and to F16 when even 32 does not divide it.
Type sizes and fallbacks are data (data/engines.toml [llamacpp.ggml_types] and [llamacpp.ggml_fallback]).
Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.controller.core.catalog import Architecture

# llama.cpp architectures whose attention is one fused QKV matrix (category attention-v for the mixes)
FUSED_QKV = frozenset({"phi3", "falcon", "gpt2", "bloom", "mpt", "phi2"})
# ... with a bias on Q, K and V
QKV_BIAS = frozenset({"qwen2", "qwen2moe"})
# ... with RMS norms on the query and key heads
QK_NORM = frozenset({"qwen3", "qwen3moe", "gemma3", "olmo2"})
# ... with a second norm after attention and after the MLP
POST_NORMS = frozenset({"gemma2", "gemma3"})
# Architectures llama.cpp calls "70B" at 80 layers (the only model size its quantizer looks at).
SEVENTY_B = frozenset({"llama", "qwen2", "deci", "olmo"})
# The file types this module models; others (IQ mixes, MXFP4) use the estimator's bits-per-weight figures.
MIXES = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S",
                   "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"})
# The block the output-layer rule checks rows against in every release (QK_K).
OUTPUT_BLOCK = 256


@dataclass(frozen=True)
class Tensor:
    name: str
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)


@dataclass(frozen=True)
class TypedTensor:
    name: str
    ne: tuple[int, ...]
    type: str
    n_bytes: int


@dataclass(frozen=True)
class GgufPlan:
    """The tensors of one GGUF file with the type each gets, and the bytes they add up to."""

    tensors: tuple[TypedTensor, ...]
    ftype: str

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.type] = out.get(t.type, 0) + t.n_bytes
        return out


GgmlTypes = Mapping[str, Sequence[int]]  # type -> (elements per block, bytes per block)


def tensor_bytes(ne: Sequence[int], type_: str, types: GgmlTypes) -> int:
    block, size = types[type_]
    rows = math.prod(ne[1:]) if len(ne) > 1 else 1
    return rows * (-(-int(ne[0]) // int(block))) * int(size)


# ---------------------------------------------------------------- the tensors of an architecture


def architecture_tensors(arch: Architecture, gguf_arch: str = "", untied_output: bool = False) -> list[Tensor] | None:
    """The tensors llama.cpp's converter writes for this architecture, or None when they are not modelled
    (MLA attention: its low-rank projections are not in the catalog's numbers)."""
    if arch.attention == "mla":
        return None
    h, hd = arch.hidden, arch.head_dim
    q, kv = arch.heads * hd, arch.kv_heads * hd
    out = [Tensor("token_embd.weight", (h, arch.vocab)), Tensor("output_norm.weight", (h,))]
    if not arch.tied_embeddings or untied_output:
        out.append(Tensor("output.weight", (h, arch.vocab)))
    moe_from = arch.layers - arch.routed_moe_layers  # routed experts sit in the last `moe_layers` layers
    for i in range(arch.layers):
        b = f"blk.{i}."
        out += [Tensor(b + "attn_norm.weight", (h,)), Tensor(b + "ffn_norm.weight", (h,))]
        if gguf_arch in FUSED_QKV:
            out.append(Tensor(b + "attn_qkv.weight", (h, q + 2 * kv)))
        else:
            out += [Tensor(b + "attn_q.weight", (h, q)), Tensor(b + "attn_k.weight", (h, kv)),
                    Tensor(b + "attn_v.weight", (h, kv))]
        if gguf_arch in QKV_BIAS:
            out += [Tensor(b + "attn_q.bias", (q,)), Tensor(b + "attn_k.bias", (kv,)), Tensor(b + "attn_v.bias", (kv,))]
        if gguf_arch in QK_NORM:
            out += [Tensor(b + "attn_q_norm.weight", (hd,)), Tensor(b + "attn_k_norm.weight", (hd,))]
        if gguf_arch in POST_NORMS:
            out += [Tensor(b + "post_attention_norm.weight", (h,)), Tensor(b + "post_ffw_norm.weight", (h,))]
        out.append(Tensor(b + "attn_output.weight", (q, h)))
        if arch.experts and i >= moe_from:
            e, mi = arch.experts, arch.moe_intermediate_size
            out.append(Tensor(b + "ffn_gate_inp.weight", (h, e)))
            if arch.gated_mlp:
                out.append(Tensor(b + "ffn_gate_exps.weight", (h, mi, e)))
            out += [Tensor(b + "ffn_up_exps.weight", (h, mi, e)), Tensor(b + "ffn_down_exps.weight", (mi, h, e))]
            if arch.shared_experts:
                si = mi * arch.shared_experts
                if arch.gated_mlp:
                    out.append(Tensor(b + "ffn_gate_shexp.weight", (h, si)))
                out += [Tensor(b + "ffn_up_shexp.weight", (h, si)), Tensor(b + "ffn_down_shexp.weight", (si, h))]
        else:
            inter = arch.intermediate_size
            if arch.gated_mlp and gguf_arch != "phi3":
                out.append(Tensor(b + "ffn_gate.weight", (h, inter)))
            # Phi-3 stores gate and up as one matrix of twice the width
            up = 2 * inter if gguf_arch == "phi3" else inter
            out += [Tensor(b + "ffn_up.weight", (h, up)), Tensor(b + "ffn_down.weight", (inter, h))]
    return out


# ---------------------------------------------------------------- llama-quantize's choices


def category(name: str) -> str:
    """The broad role llama-quantize sees in a tensor name (its tensor_get_category)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                      ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                      ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                      ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


def quantizable(t: Tensor) -> bool:
    """2-D and 3-D weights only; norms and MoE routers stay as converted (F32)."""
    return (len(t.ne) >= 2 and t.name.endswith("weight") and "_norm.weight" not in t.name
            and "ffn_gate_inp.weight" not in t.name and "position_embd" not in t.name)


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else 0


@dataclass(frozen=True)
class MixContext:
    """What the mixes look at besides the tensor: the model's shape and the quantizer's options."""

    ftype: str
    n_layer: int
    n_attn_v: int            # tensors in the attention-V category (one per layer normally)
    n_gqa: int               # query heads per KV head
    n_expert: int
    seventy_b: bool
    falcon: bool
    tied: bool
    imatrix: bool = True     # published K-quants are made with an importance matrix (the conservative side)


def _mix_type(t: Tensor, default: str, c: MixContext, i_attn_v: int, i_ffn_down: int) -> str:
    cat, f = category(t.name), c.ftype
    # Dense models count FFN-down tensors in file order; MoE models read the layer from the name.
    i, n = (_layer(t.name) if c.n_expert > 1 else i_ffn_down), c.n_layer
    if cat == "output" or (c.tied and cat == "token_embd"):
        if c.falcon or t.ne[0] % OUTPUT_BLOCK:
            return "Q8_0"
        return default if default == "Q8_0" else "Q6_K"
    if cat == "token_embd":
        return default
    new = default
    if cat == "attn_v":
        if f == "Q2_K":
            new = "Q4_K" if c.n_gqa >= 4 else "Q3_K"
        elif f == "Q2_K_S" and c.n_gqa >= 4:
            new = "Q4_K"
        elif f == "Q3_K_M":
            new = "Q5_K" if i_attn_v < 2 else "Q4_K"
        elif f == "Q3_K_L":
            new = "Q5_K"
        elif f in ("Q4_K_M", "Q5_K_M") and _more_bits(i_attn_v, c.n_attn_v):
            new = "Q6_K"
        elif f == "Q4_K_S" and i_attn_v < 4:
            new = "Q5_K"
        if c.seventy_b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        if c.n_expert == 8:
            new = "Q8_0"
    elif cat == "attn_k":
        if c.n_expert == 8:
            new = "Q8_0"
    elif cat == "ffn_down":
        if f == "Q2_K":
            new = "Q3_K"
        elif f == "Q2_K_S":
            new = "Q4_K" if i < n // 8 else new
        elif f == "Q3_K_M":
            new = "Q5_K" if i < n // 16 else ("Q4_K" if not c.falcon or _more_bits(i, n) else "Q3_K")
        elif f == "Q3_K_L":
            new = "Q4_K" if c.falcon else "Q5_K"
        elif f == "Q4_K_M":
            if c.falcon:
                new = "Q6_K" if i < n // 16 else ("Q5_K" if _more_bits(i, n) else "Q4_K")
            elif _more_bits(i, n):
                new = "Q6_K"
        elif f == "Q5_K_M" and _more_bits(i, n):
            new = "Q6_K"
        elif f == "Q4_K_S" and not c.falcon and i < n // 8:
            new = "Q5_K"
        elif f in ("Q4_0", "Q5_0") and c.imatrix and i < n // 8:
            new = "Q4_1" if f == "Q4_0" else "Q5_1"
    elif cat == "attn_output":
        if not c.falcon:
            if c.n_expert == 8:
                if f in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"):
                    new = "Q5_K"
            elif f == "Q2_K":
                new = "Q3_K"
            elif f == "Q3_K_M":
                new = "Q4_K"
            elif f == "Q3_K_L":
                new = "Q5_K"
        elif f == "Q3_K_L":
            new = "Q4_K"
    return new


def _fallback(ne0: int, type_: str, types: GgmlTypes, fallback: Mapping[str, str]) -> str:
    """A type whose blocks do not divide the row length falls back to a 32-block type, then to F16."""
    block = int(types[type_][0])
    if ne0 % block == 0:
        return type_
    if block > 32:
        type_ = fallback[type_]
    return type_ if ne0 % int(types[type_][0]) == 0 else "F16"


def plan_types(tensors: Iterable[Tensor], ftype: str, default: str, *, arch: Architecture, gguf_arch: str,
               untied_output: bool, types: GgmlTypes, fallback: Mapping[str, str]) -> GgufPlan:
    """Each tensor with the type llama-quantize gives it for file type `ftype` (bulk type `default`)."""
    tensors = list(tensors)
    n_attn_v = sum(1 for t in tensors if quantizable(t) and category(t.name) == "attn_v")
    ctx = MixContext(
        ftype=ftype, n_layer=arch.layers, n_attn_v=n_attn_v or arch.layers,
        n_gqa=arch.heads // max(1, arch.kv_heads), n_expert=arch.experts,
        seventy_b=(gguf_arch in SEVENTY_B and arch.layers == 80
                   and (gguf_arch != "llama" or arch.heads != arch.kv_heads)),
        falcon=gguf_arch == "falcon", tied=arch.tied_embeddings and not untied_output,
    )
    quantized = default not in ("F32", "F16", "BF16")
    out: list[TypedTensor] = []
    # llama-quantize counts attention-V and FFN-down tensors in the order the file lists them (by layer
    # for files written by the converter; some older files list layers as text, blk.10 before blk.2).
    i_attn_v = i_ffn_down = 0
    for t in tensors:
        if not quantizable(t):
            type_ = "F32"
        elif not quantized:
            type_ = default
        else:
            type_ = _fallback(t.ne[0], _mix_type(t, default, ctx, i_attn_v, i_ffn_down), types, fallback)
            cat = category(t.name)
            i_attn_v += cat == "attn_v"
            i_ffn_down += cat == "ffn_down"
        out.append(TypedTensor(t.name, t.ne, type_, tensor_bytes(t.ne, type_, types)))
    return GgufPlan(tuple(out), ftype)


def gguf_plan(arch: Architecture, ftype: str, llamacpp: Mapping[str, Any], gguf_arch: str = "",
              untied_output: bool = False) -> GgufPlan | None:
    """The planned GGUF of a catalog architecture in file type `ftype`, or None when it is not modelled."""
    ftype = ftype.upper()
    if ftype not in MIXES:
        return None
    tensors = architecture_tensors(arch, gguf_arch, untied_output)
    if tensors is None:
        return None
    return plan_types(tensors, ftype, llamacpp["ftypes"][ftype], arch=arch, gguf_arch=gguf_arch,
                      untied_output=untied_output, types=llamacpp["ggml_types"], fallback=llamacpp["ggml_fallback"])
