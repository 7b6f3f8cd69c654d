"""`fleet estimate --explain`: every term of an estimate with its formula and the inputs that went into it,
so an operator can check the arithmetic (the numbers are the estimator's own, recomputed here). Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fleet.controller.core.catalog import LLAMA_CPP, VLLM, EngineConstants, Model, Variant
from fleet.controller.core.estimate import (
    MIB,
    Estimate,
    _kv_heads_per_gpu,
    _widest_mlp,
    gguf_plan_for,
    kv_dtype_bytes,
    param_split,
    vllm_scheduler_defaults,
)


@dataclass(frozen=True)
class Term:
    name: str
    bytes: int
    formula: str
    inputs: dict[str, Any]


def _weights(model: Model, variant: Variant, est: Estimate, engines: EngineConstants) -> Term:
    tp = {"tp": est.tp}
    if variant.size_bytes:
        return Term("weights", est.weights, "exact size of the weights (read from the artifact) / TP",
                    {"size_bytes": variant.size_bytes, **tp})
    plan = gguf_plan_for(model, variant, engines)
    if plan is not None:
        counts: dict[str, int] = {}
        for t in plan.tensors:
            counts[t.type] = counts.get(t.type, 0) + 1
        planned = sum(math.prod(t.ne) for t in plan.tensors)
        return Term("weights", est.weights, "sum over tensors of rows x ceil(row / block) x block bytes, each tensor "
                    "at the type llama-quantize gives it; params beyond the tensor table at the bulk type; / TP",
                    {"ftype": plan.ftype, "tensors": len(plan.tensors), "tensors_by_type": counts,
                     "bytes_by_type": plan.bytes_by_type(), "params_total": model.params_total,
                     "params_in_tensors": planned, **tp})
    p = param_split(model, variant)
    inputs = {"params_total": model.params_total, "embedding_params": p.embed, "lm_head_params": p.output,
              "expert_params": p.experts, "attention_params": p.attention, "bits_per_weight": variant.bits_per_weight,
              "embed_bits": variant.embed_bits, "output_bits": variant.output_bits, **tp}
    if variant.attention_bits is not None:
        inputs["attention_bits"] = variant.attention_bits
    if variant.applies_to == "experts":
        inputs["rest_bits"] = variant.rest_bits
    return Term("weights", est.weights, "(experts + attention + rest) x their bits + embeddings x embed_bits + "
                "lm_head x output_bits, / 8, / TP (+ KV projections each GPU replicates when TP > KV heads)", inputs)


def _kv(model: Model, variant: Variant, est: Estimate, kv_cache_dtype: str, engines: EngineConstants) -> Term:
    a = model.arch
    dtype = kv_dtype_bytes(variant.engine, kv_cache_dtype)
    context = est.context
    if variant.engine == LLAMA_CPP:
        pad = engines["llamacpp"]["ctx_pad"]
        context = math.ceil(est.context / pad) * pad
    inputs: dict[str, Any] = {"layers": a.layers, "context": context, "dtype": kv_cache_dtype,
                              "bytes_per_element": round(dtype, 4), "tp": est.tp, "engine": variant.engine}
    if a.attention == "mla":
        inputs.update(kv_lora_rank=a.kv_lora_rank, qk_rope_head_dim=a.qk_rope_head_dim)
        return Term("kv_cache", est.kv_cache, "layers x (kv_lora_rank + qk_rope_head_dim) x bytes x context "
                    "(the latent is replicated on every GPU)", inputs)
    heads = _kv_heads_per_gpu(a, est.tp) if variant.engine == VLLM else a.kv_heads
    inputs.update(kv_heads=a.kv_heads, kv_heads_per_gpu=heads, head_dim=a.head_dim)
    formula = "2 x layers x KV heads (per GPU) x head_dim x bytes x context"
    if a.sliding_window and a.sliding_layers:
        inputs.update(sliding_layers=a.sliding_layers, sliding_window=a.sliding_window)
        formula += "; sliding-window layers cache the window plus one batch, not the whole context"
    if variant.engine == LLAMA_CPP and est.tp > 1:
        formula += "; layers split over TP GPUs"
    return Term("kv_cache", est.kv_cache, formula, inputs)


def _activations(model: Model, variant: Variant, est: Estimate, engines: EngineConstants,
                 gpu_memory_bytes: int | None) -> Term:
    a = model.arch
    if variant.engine == VLLM:
        batched, seqs = vllm_scheduler_defaults(engines, gpu_memory_bytes)
        return Term("activations", est.activations, "profile tokens x 2 bytes x (4 x hidden + 3 x q width + 3 x MLP "
                    "width per GPU) + max_num_seqs x vocab x sampler bytes per logit",
                    {"profile_tokens": min(batched, max(est.context, seqs)), "max_num_batched_tokens": batched,
                     "max_num_seqs": seqs, "hidden": a.hidden, "q_width_per_gpu": a.heads * a.head_dim / est.tp,
                     "mlp_width_per_gpu": _widest_mlp(a, est.tp), "vocab": a.vocab,
                     "sampler_bytes_per_logit": engines["vllm"]["sampler_bytes_per_logit"], "tp": est.tp})
    ub = engines["llamacpp"]["ubatch"]
    return Term("activations", est.activations, "max(ubatch x vocab x 4, ubatch x 4 x (3 x MLP width + 4 x hidden)) "
                "+ ubatch x 4 x hidden x 2 (llama.cpp's compute buffer)",
                {"ubatch": min(ub, est.context), "vocab": a.vocab, "hidden": a.hidden,
                 "mlp_width": _widest_mlp(a, 1)})


def _runtime(model: Model, variant: Variant, est: Estimate, engines: EngineConstants) -> Term:
    if est.device == "cpu":
        section = "vllm" if variant.engine == VLLM else "llamacpp"
        return Term("runtime", est.runtime, "the engine process in RAM (constant)",
                    {"cpu_runtime_mib": engines[section]["cpu_runtime_mib"]})
    if variant.engine == LLAMA_CPP:
        return Term("runtime", est.runtime, "CUDA context (constant)",
                    {"cuda_context_mib": engines["llamacpp"]["cuda_context_mib"]})
    c = engines["vllm"]
    return Term("runtime", est.runtime, "CUDA context + non-torch memory + NCCL buffers (TP >= 2) + CUDA graphs "
                "(base + per layer x layers)",
                {"cuda_context_mib": c["cuda_context_mib"], "non_torch_mib": c["non_torch_mib"],
                 "nccl_mib": c["nccl_mib"] if est.tp >= 2 else 0, "cuda_graph_base_mib": c["cuda_graph_base_mib"],
                 "cuda_graph_per_layer_mib": c["cuda_graph_per_layer_mib"], "layers": model.arch.layers,
                 "tp": est.tp})


def explain(model: Model, variant: Variant, est: Estimate, *, engines: EngineConstants, kv_cache_dtype: str = "auto",
            gpu_memory_bytes: int | None = None) -> tuple[Term, ...]:
    """The estimate's terms, each with its formula and inputs; they add up to est.total."""
    terms = (_weights(model, variant, est, engines), _kv(model, variant, est, kv_cache_dtype, engines),
             _activations(model, variant, est, engines, gpu_memory_bytes), _runtime(model, variant, est, engines))
    total = Term("total", est.total, "weights + kv_cache + activations + runtime",
                 {"per": "GPU" if est.device == "gpu" else "replica (RAM)", "MiB": round(est.total / MIB, 1)})
    return (*terms, total)
