"""Memory estimate of one replica: per-GPU bytes for weights, KV cache, activations and runtime.

A model of what the engines actually allocate (measured facts cited in data/engines.toml), not a rule of thumb:
- weights: parameters split into embeddings, lm_head, MoE experts and the rest, each at the bit
  width the variant stores it in (quantized bulk with its scales, wider embeddings), divided by TP
  except what TP replicates (KV projections when TP > kv heads);
- KV cache: from the architecture (kv heads per GPU, head_dim, sliding-window layers cache only the
  window, MLA caches one latent per layer and is replicated on every GPU), kv-cache dtype;
- activations: vLLM's profiling pass (max_num_batched_tokens through the widest layer, plus the
  sampler's logits); llama.cpp's compute buffer (one micro-batch of logits or MLP temporaries);
- runtime: CUDA context, non-torch allocations, NCCL buffers at TP >= 2, CUDA graphs.

A replica spanning `nodes` nodes (multi-node): vLLM runs pipeline stages (PP = nodes; vLLM's own split of
the decoder layers, embeddings on the first stage, lm_head on the last), each with its layers' weights and
KV cache, and the estimate is the largest stage's; llama.cpp splits layers over every device of every
part (its local GPUs, or its RAM on CPU) like over several local GPUs.

Pure: standard library and the catalog only; the engine constants (data/engines.toml) come in as
`engines` (Catalog.engines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fleet.controller.core.catalog import LLAMA_CPP, VLLM, Architecture, EngineConstants, Model, Variant
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.gguf_rules import GgufPlan, gguf_plan

MIB = 1024**2
GIB = 1024**3
MAX_UTILIZATION = 0.98
# Estimates default to the model's full context, but no deployment caches 10M tokens by accident.
DEFAULT_CONTEXT_CAP = 131072

# KV cache element widths in bytes per engine. llama.cpp's q8_0/q4_0 blocks store 32 values with
# one fp16 scale (34 and 18 bytes).
KV_DTYPES: dict[str, dict[str, float]] = {
    VLLM: {"auto": 2, "bf16": 2, "fp16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1},
    LLAMA_CPP: {"auto": 2, "f16": 2, "bf16": 2, "f32": 4, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
                "q5_0": 22 / 32, "q5_1": 24 / 32},
}


@dataclass(frozen=True)
class Estimate:
    model: str
    quant: str
    engine: str
    context: int
    tp: int
    device: str                      # gpu | cpu
    weights: int                     # per GPU bytes (device cpu: bytes of RAM)
    kv_cache: int
    activations: int
    runtime: int
    total: int
    gpu_memory_utilization: float | None  # vLLM only, when a GPU size was given
    notes: tuple[str, ...]
    nodes: int = 1                   # parts on that many nodes (vLLM: pipeline stages); figures are per GPU
    stage_totals: tuple[int, ...] = ()  # vLLM over several nodes: per-GPU total of every stage (the max is `total`)


def _mib(engines: EngineConstants, section: str, key: str) -> int:
    return int(engines[section][key] * MIB)


# ---------------------------------------------------------------- parameters and weights


@dataclass(frozen=True)
class ParamSplit:
    embed: int       # token embeddings (also the output layer when tied)
    output: int      # lm_head when not tied
    experts: int     # routed MoE experts
    attention: int   # attention projections (0 for MLA: not separated)
    mlp: int         # one dense layer's MLP
    rest: int        # everything else: attention, dense MLPs, shared experts, norms, vision tower


def param_split(model: Model, variant: Variant | None = None) -> ParamSplit:
    a = model.arch
    inter = (variant.intermediate_size if variant and variant.intermediate_size else a.intermediate_size)
    embed = a.vocab * a.hidden
    output = 0 if a.tied_embeddings else a.vocab * a.hidden
    experts = a.routed_moe_layers * a.experts * a.mlp_matrices * a.hidden * a.moe_intermediate_size
    if a.experts and variant and variant.intermediate_size:
        # Kernels that pad the expert width (vLLM's MXFP4 MoE to a multiple of 256) store the padding.
        experts = experts * variant.intermediate_size // a.moe_intermediate_size
    attention = 0 if a.attention == "mla" else a.layers * a.hidden * a.head_dim * (2 * a.heads + 2 * a.kv_heads)
    rest = max(0, model.params_total - embed - output - a.routed_moe_layers * a.experts * a.mlp_matrices
               * a.hidden * a.moe_intermediate_size)
    if not a.experts and inter != a.intermediate_size:
        # Padded checkpoints (Qwen 72B AWQ/GPTQ) carry the extra rows.
        rest += (a.layers - a.routed_moe_layers) * a.mlp_matrices * a.hidden * (inter - a.intermediate_size)
    return ParamSplit(embed, output, experts, min(attention, rest), a.mlp_matrices * a.hidden * inter, rest)


def gguf_plan_for(model: Model, variant: Variant, engines: EngineConstants | None) -> GgufPlan | None:
    """The GGUF file llama-quantize makes of this model in the variant's file type (None: not modelled)."""
    if variant.engine != LLAMA_CPP or not variant.ftype or not engines:
        return None
    if "ggml_types" not in engines.get("llamacpp", {}):
        return None
    return gguf_plan(model.arch, variant.ftype, engines["llamacpp"], model.arch.gguf_arch, variant.gguf_untied)


def _gguf_bytes(model: Model, plan: GgufPlan, engines: EngineConstants) -> int:
    """The planned file's tensors, plus any parameters the catalog counts beyond them (a vision tower, extra
    norms) at the bulk type, so that what the plan does not know can only make the estimate larger."""
    planned = sum(math.prod(t.ne) for t in plan.tensors)
    extra = max(0, model.params_total - planned)
    c = engines["llamacpp"]
    block, size = c["ggml_types"][c["ftypes"][plan.ftype]]
    return plan.n_bytes + math.ceil(extra * size / block)


def total_weight_bytes(model: Model, variant: Variant, engines: EngineConstants | None = None) -> int:
    """Bytes of all weights as the engine holds them (the whole model, before any split).

    Exact when the catalog knows the artifact's size (a GGUF header read once, recorded); a GGUF in a
    file type llama-quantize makes is sized tensor by tensor (fleet.controller.core.gguf_rules) when
    `engines` carries the ggml type table; otherwise from bits per weight."""
    if variant.size_bytes:
        return variant.size_bytes
    plan = gguf_plan_for(model, variant, engines)
    if plan is not None:
        assert engines is not None
        return _gguf_bytes(model, plan, engines)
    p = param_split(model, variant)
    bulk = variant.bits_per_weight
    if variant.applies_to == "experts":
        bits = p.experts * bulk + p.rest * variant.rest_bits
    else:
        attn_bits = variant.attention_bits if variant.attention_bits is not None else bulk
        unquantized = min(variant.unquantized_layers * p.mlp, p.rest - p.attention)
        dense = p.rest - p.attention - unquantized
        bits = p.experts * bulk + p.attention * attn_bits + unquantized * 16 + dense * bulk
    if variant.engine == LLAMA_CPP and model.arch.tied_embeddings:
        # llama.cpp quantizes a tied embedding as the output layer (Q6_K / Q8_0).
        bits += p.embed * variant.output_bits
    else:
        bits += p.embed * variant.embed_bits + p.output * variant.output_bits
    return int(bits / 8)


@dataclass(frozen=True)
class WeightGroups:
    """Bytes of the whole model's weights by where a pipeline stage keeps them."""

    embed: int    # token embeddings (first stage; also the last when tied)
    output: int   # lm_head when not tied (last stage)
    dense: int    # decoder layers without the routed experts: spread evenly over the layers
    experts: int  # routed experts: spread over the MoE layers (the last `moe_layers` ones)


def weight_groups(model: Model, variant: Variant) -> WeightGroups:
    """total_weight_bytes split into embeddings, lm_head, dense layer weights and routed experts."""
    p = param_split(model, variant)
    total = total_weight_bytes(model, variant)
    if variant.engine == LLAMA_CPP and model.arch.tied_embeddings:
        embed_bits, output_bits = p.embed * variant.output_bits, 0.0
    else:
        embed_bits, output_bits = p.embed * variant.embed_bits, p.output * variant.output_bits
    embed, output = int(embed_bits / 8), int(output_bits / 8)
    experts = int(p.experts * variant.bits_per_weight / 8)
    if variant.size_bytes:
        # An exact artifact size: keep the proportions of the computed groups, scaled to the real total.
        raw = total_weight_bytes(model, replace(variant, size_bytes=None))
        scale = total / raw if raw else 1.0
        embed, output, experts = int(embed * scale), int(output * scale), int(experts * scale)
    experts = min(experts, max(0, total - embed - output))
    return WeightGroups(embed, output, max(0, total - embed - output - experts), experts)


def pp_layers(layers: int, pp: int) -> list[int]:
    """Decoder layers per pipeline stage, as vLLM splits them (get_pp_indices): even, the remainder going to
    the stages before the last (which also holds the final norm and lm_head)."""
    parts = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    return parts


def _kv_heads_per_gpu(arch: Architecture, tp: int) -> int:
    # TP shards KV heads; with more GPUs than KV heads each GPU keeps a replica of one.
    return max(1, math.ceil(arch.kv_heads / tp))


def weight_bytes(model: Model, variant: Variant, tp: int, engines: EngineConstants | None = None) -> int:
    """Per-GPU weight bytes at tensor parallelism `tp` (llama.cpp: layers split over `tp` GPUs)."""
    total = total_weight_bytes(model, variant, engines)
    if tp == 1:
        return total
    a = model.arch
    replicated = 0
    if variant.engine == VLLM and a.attention != "mla" and tp > a.kv_heads:
        kv_proj = a.layers * 2 * a.hidden * a.head_dim
        replicated = int(kv_proj * (1 - a.kv_heads / tp) * variant.bits_per_weight / 8)
    return total // tp + replicated


# ---------------------------------------------------------------- KV cache


def kv_bytes_per_token(arch: Architecture, engine: str, tp: int, dtype_bytes: float, window_tokens: int,
                       context: int) -> float:
    """KV bytes for `context` tokens of one sequence on one GPU."""
    if arch.attention == "mla":
        # One compressed latent + rope key per layer and token, the same on every GPU.
        return arch.layers * (arch.kv_lora_rank + arch.qk_rope_head_dim) * dtype_bytes * context
    heads = _kv_heads_per_gpu(arch, tp) if engine == VLLM else arch.kv_heads
    per_layer_token = 2 * heads * arch.head_dim * dtype_bytes
    sliding = arch.sliding_layers if arch.sliding_window else 0
    full_layers = arch.layers - sliding
    window = min(context, arch.sliding_window + window_tokens) if sliding else 0
    total = per_layer_token * (full_layers * context + sliding * window)
    # llama.cpp splits layers (and their cache) across GPUs; vLLM already divided heads.
    return total / tp if engine == LLAMA_CPP else total


def kv_dtype_bytes(engine: str, kv_cache_dtype: str) -> float:
    table = KV_DTYPES[engine]
    dtype = kv_cache_dtype.lower()
    if dtype not in table:
        raise InvalidArgument(f"kv cache dtype {kv_cache_dtype!r} is not available on {engine}; "
                              f"choose one of {', '.join(table)}")
    return table[dtype]


# ---------------------------------------------------------------- activations and runtime


def _widest_mlp(arch: Architecture, tp: int) -> float:
    """Per-token MLP intermediate width on one GPU (MoE: the active experts' share)."""
    if arch.experts:
        routed = arch.experts_active * arch.moe_intermediate_size
        shared = arch.shared_experts * arch.moe_intermediate_size
        dense = arch.intermediate_size if arch.routed_moe_layers < arch.layers else 0
        return max(routed + shared, dense) / tp
    return arch.intermediate_size / tp


def vllm_scheduler_defaults(engines: EngineConstants, gpu_memory_bytes: int | None) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that `vllm serve` picks for a GPU of this size;
    the larger pair when the GPU is unknown (the conservative side)."""
    c = engines["vllm"]
    if gpu_memory_bytes is not None and gpu_memory_bytes < c["big_gpu_gib"] * GIB:
        return c["small_gpu_profile_tokens"], c["small_gpu_max_num_seqs"]
    return c["profile_tokens"], c["max_num_seqs"]


def vllm_activation_bytes(engines: EngineConstants, arch: Architecture, tp: int, context: int,
                          gpu_memory_bytes: int | None = None) -> int:
    """Peak of vLLM's profiling run: max_num_batched_tokens through one layer, plus the sampler
    run over max_num_seqs sequences."""
    c = engines["vllm"]
    batched, seqs = vllm_scheduler_defaults(engines, gpu_memory_bytes)
    tokens = min(batched, max(context, seqs))
    q_width = arch.heads * arch.head_dim / tp
    # Residual + normed hidden + attention q/k/v/out, then gate_up (2x), its activation (1x) and down.
    per_token = 2 * (4 * arch.hidden + 3 * q_width + 3 * _widest_mlp(arch, tp))
    if arch.experts:
        # fused_moe keeps its routed copies of the tokens (top-k of them) alongside.
        per_token += 2 * arch.experts_active * arch.hidden
    sampler = seqs * arch.vocab * c["sampler_bytes_per_logit"]
    return int(tokens * per_token + sampler)


def llamacpp_compute_bytes(engines: EngineConstants, arch: Architecture, context: int) -> int:
    """llama.cpp's compute buffer with flash attention: the larger of one micro-batch's fp32 logits
    and its MLP temporaries (the graph allocator reuses one buffer for both)."""
    ub = engines["llamacpp"]["ubatch"]
    ub = min(ub, context)
    logits = ub * arch.vocab * 4
    mlp = ub * 4 * (3 * _widest_mlp(arch, 1) + 4 * arch.hidden)
    return int(max(logits, mlp) + ub * 4 * arch.hidden * 2)


def vllm_runtime_bytes(engines: EngineConstants, arch: Architecture, tp: int) -> int:
    graphs = (_mib(engines, "vllm", "cuda_graph_base_mib")
              + arch.layers * _mib(engines, "vllm", "cuda_graph_per_layer_mib"))
    nccl = _mib(engines, "vllm", "nccl_mib") if tp >= 2 else 0
    return _mib(engines, "vllm", "cuda_context_mib") + _mib(engines, "vllm", "non_torch_mib") + nccl + graphs


# ---------------------------------------------------------------- validity


def valid_tps(model: Model, variant: Variant, max_tp: int = 8) -> list[int]:
    return [tp for tp in range(1, max_tp + 1) if tp_problem(model, variant, tp) is None]


def tp_problem(model: Model, variant: Variant, tp: int) -> str | None:
    """Why `tp` GPUs cannot serve this variant, or None."""
    a = model.arch
    if tp < 1:
        return "TP must be at least 1"
    if tp == 1:
        return None
    if variant.engine == LLAMA_CPP:
        # llama.cpp splits whole layers across GPUs: any count up to the layer count works.
        return None if tp <= a.layers else f"{model.name} has only {a.layers} layers to split"
    if a.heads % tp:
        return f"TP {tp} does not divide {model.name}'s {a.heads} attention heads"
    if a.attention != "mla" and a.kv_heads % tp and tp % a.kv_heads:
        return f"TP {tp} neither divides nor is a multiple of {model.name}'s {a.kv_heads} KV heads"
    if variant.group_size:
        inter = a.moe_intermediate_size if a.experts else (variant.intermediate_size or a.intermediate_size)
        if inter % (variant.group_size * tp):
            return (f"{variant.quant} intermediate size {inter} does not divide by group size "
                    f"{variant.group_size} x TP {tp}")
    return None


def _cc(value: str) -> tuple[int, ...]:
    return tuple(int(x) for x in value.split(".") if x.isdigit())


def incompatibility(variant: Variant, compute_capability: str) -> str | None:
    """Why a GPU of this compute capability cannot run the variant ("" = AMD/ROCm), or None."""
    if not compute_capability:
        if variant.engine == VLLM and not variant.rocm:
            return f"{variant.quant} has no ROCm kernels in vLLM (needs an NVIDIA GPU)"
        return None
    need = variant.min_compute_capability
    if need and _cc(compute_capability) < _cc(need):
        return (f"{variant.quant} on {variant.engine} needs compute capability {need}, "
                f"the GPU has {compute_capability}")
    return None


# ---------------------------------------------------------------- the estimate


def default_context(model: Model) -> int:
    return min(model.arch.max_context, DEFAULT_CONTEXT_CAP)


MAX_NODES = 16  # parts of one replica; beyond this the network is the bottleneck, not memory


def nodes_problem(model: Model, variant: Variant, nodes: int, device: str = "gpu") -> str | None:
    """Why one replica of this variant cannot span `nodes` nodes, or None."""
    if nodes < 1:
        return "a replica runs on at least 1 node"
    if nodes == 1:
        return None
    if nodes > MAX_NODES:
        return f"a replica spans at most {MAX_NODES} nodes"
    if nodes > model.arch.layers:
        return f"{model.name} has only {model.arch.layers} layers to split over {nodes} nodes"
    if variant.engine == VLLM and device == "cpu":
        return "vLLM's CPU build runs a replica on one node; use llama.cpp (rpc-server) across nodes"
    return None


def _check(model: Model, variant: Variant, context: int, tp: int, device: str, nodes: int = 1) -> None:
    if device not in ("gpu", "cpu"):
        raise InvalidArgument(f"device must be gpu or cpu, not {device!r}")
    if context < 1:
        raise InvalidArgument(f"context must be positive, got {context}")
    if context > model.arch.context_limit and variant.engine == VLLM:
        extended = (f" ({model.arch.max_context} native, {model.arch.extended_context} with {model.arch.rope_scaling} "
                    "rope scaling)" if model.arch.context_limit > model.arch.max_context else "")
        raise InvalidArgument(f"{model.name} supports at most {model.arch.context_limit} tokens of context"
                              f"{extended}, not {context}")
    problem = tp_problem(model, variant, tp)
    if problem:
        raise InvalidArgument(f"{problem}; valid TP sizes: {valid_tps(model, variant)}")
    if device == "cpu" and tp != 1:
        raise InvalidArgument("a CPU replica runs in one process per node: TP must be 1")
    problem = nodes_problem(model, variant, nodes, device)
    if problem:
        raise InvalidArgument(problem)
    if variant.engine == LLAMA_CPP and tp * nodes > model.arch.layers:
        raise InvalidArgument(f"{model.name} has only {model.arch.layers} layers to split over {tp * nodes} devices")


@dataclass(frozen=True)
class RopeLaunch:
    """Rope scaling an engine must be launched with to serve a context beyond the model's native length."""

    scaling: str
    factor: float
    original_context: int
    theta: float

    def note(self, model: Model, context: int) -> str:
        return (f"context {context} is beyond {model.name}'s native {model.arch.max_context} tokens: launched with "
                f"{self.scaling} rope scaling x{self.factor:g} over {self.original_context} (documented up to "
                f"{model.arch.extended_context})")


def rope_launch(model: Model, context: int) -> RopeLaunch | None:
    """The rope scaling `context` needs, or None within the native length (or without documented scaling)."""
    a = model.arch
    if context <= a.max_context or not a.rope_scaling or context > a.context_limit:
        return None
    return RopeLaunch(a.rope_scaling, a.rope_factor, a.rope_original_context or a.max_context, a.rope_theta)


def estimate(model: Model, variant: Variant, *, engines: EngineConstants, context: int | None = None, tp: int = 1,
             gpu_memory_bytes: int | None = None, kv_cache_dtype: str = "auto", device: str = "gpu",
             nodes: int = 1) -> Estimate:
    """Per-GPU (device cpu: per node's RAM) bytes of one replica at TP `tp` on each of `nodes` nodes."""
    ctx = default_context(model) if context is None else context
    _check(model, variant, ctx, tp, device, nodes)
    kv_bytes = kv_dtype_bytes(variant.engine, kv_cache_dtype)
    stages: tuple[int, ...] = ()
    if variant.engine == VLLM and nodes > 1:
        parts, notes, stages = _vllm_stages(engines, model, variant, ctx, tp, nodes, kv_bytes, gpu_memory_bytes)
    elif variant.engine == VLLM:
        parts, notes = _vllm(engines, model, variant, ctx, tp, kv_bytes, device, gpu_memory_bytes)
    else:
        parts, notes = _llamacpp(engines, model, variant, ctx, tp, kv_bytes, device, nodes)
    weights, kv, act, runtime = parts
    rope = rope_launch(model, ctx)
    if rope is not None:
        notes = [rope.note(model, ctx), *notes]
    total = weights + kv + act + runtime
    util = None
    est = Estimate(model.name, variant.quant, variant.engine, ctx, tp, device, weights, kv, act, runtime,
                   total, None, tuple(notes), nodes, stages)
    if variant.engine == VLLM and device == "gpu" and gpu_memory_bytes:
        util = gpu_memory_utilization(est, gpu_memory_bytes)
        est = replace(est, gpu_memory_utilization=util)
    return est


def _vllm(engines: EngineConstants, model: Model, variant: Variant, ctx: int, tp: int, kv_bytes: float, device: str,
          gpu_memory_bytes: int | None) -> tuple[tuple[int, int, int, int], list[str]]:
    a = model.arch
    weights = weight_bytes(model, variant, tp, engines)
    batched, _ = vllm_scheduler_defaults(engines, gpu_memory_bytes)
    # Sliding-window layers need the window plus one scheduled chunk (vLLM's SlidingWindowSpec).
    kv = int(kv_bytes_per_token(a, VLLM, tp, kv_bytes, batched, ctx))
    notes = [f"KV pool sized for one {ctx}-token sequence; more memory = more concurrent sequences"]
    if device == "cpu":
        act = vllm_activation_bytes(engines, a, tp, ctx, gpu_memory_bytes)
        return (weights, kv, act, _mib(engines, "vllm", "cpu_runtime_mib")), \
            notes + ["vLLM CPU backend: launch with --kv-cache-memory-bytes = kv_cache"]
    act = vllm_activation_bytes(engines, a, tp, ctx, gpu_memory_bytes)
    runtime = vllm_runtime_bytes(engines, a, tp)
    if tp > a.kv_heads and a.attention != "mla":
        notes.append(f"TP {tp} > {a.kv_heads} KV heads: each GPU keeps a replica of one KV head")
    if a.attention == "mla":
        notes.append("MLA: the compressed KV latent is replicated on every GPU")
    if tp >= 2:
        notes.append("includes NCCL/all-reduce buffers per GPU")
    return (weights, kv, act, runtime), notes


def _vllm_stages(engines: EngineConstants, model: Model, variant: Variant, ctx: int, tp: int, pp: int,
                 kv_bytes: float, gpu_memory_bytes: int | None
                 ) -> tuple[tuple[int, int, int, int], list[str], tuple[int, ...]]:
    """vLLM over `pp` nodes: TP `tp` inside each node, one pipeline stage per node; the largest stage's GPU."""
    a = model.arch
    g = weight_groups(model, variant)
    per_layer_replicated = weight_bytes(model, variant, tp) - total_weight_bytes(model, variant) // tp \
        if tp > 1 else 0
    batched, seqs = vllm_scheduler_defaults(engines, gpu_memory_bytes)
    kv_all = kv_bytes_per_token(a, VLLM, tp, kv_bytes, batched, ctx)
    act_all = vllm_activation_bytes(engines, a, tp, ctx, gpu_memory_bytes)
    sampler = int(seqs * a.vocab * engines["vllm"]["sampler_bytes_per_logit"])
    nccl = _mib(engines, "vllm", "nccl_mib")  # PP sends activations between stages over NCCL even at TP 1
    base_runtime = (_mib(engines, "vllm", "cuda_context_mib") + _mib(engines, "vllm", "non_torch_mib") + nccl
                    + _mib(engines, "vllm", "cuda_graph_base_mib"))
    moe_first = a.layers - a.routed_moe_layers  # routed experts live in the last `moe_layers` layers
    rows: list[tuple[int, int, int, int]] = []
    start = 0
    layer_counts = pp_layers(a.layers, pp)
    for i, n in enumerate(layer_counts):
        end = start + n
        moe_here = max(0, end - max(start, moe_first)) if a.routed_moe_layers else 0
        body = g.dense * n / a.layers + (g.experts * moe_here / a.routed_moe_layers if a.routed_moe_layers else 0)
        edges = (g.embed if i == 0 else 0) + ((g.output or (g.embed if a.tied_embeddings else 0)) if i == pp - 1
                                               else 0)
        weights = int((body + edges) / tp + per_layer_replicated * n / a.layers)
        kv = int(kv_all * n / a.layers)
        act = act_all - (sampler if i < pp - 1 else 0)  # only the last stage samples
        runtime = base_runtime + n * _mib(engines, "vllm", "cuda_graph_per_layer_mib")
        rows.append((weights, kv, act, runtime))
        start = end
    totals = tuple(sum(r) for r in rows)
    worst = max(range(pp), key=lambda i: (totals[i], -i))
    notes = [f"TP {tp} × PP {pp}: {pp} nodes with {tp} GPU{'s' if tp > 1 else ''} each; stage layers "
             f"{'+'.join(map(str, layer_counts))} (embeddings on the first, lm_head on the last); "
             f"figures are stage {worst}'s, the largest",
             f"KV pool sized for one {ctx}-token sequence, each stage caching its own layers",
             "includes NCCL buffers per GPU (pipeline sends between nodes)"]
    if a.attention == "mla":
        notes.append("MLA: the compressed KV latent is replicated on every GPU of a stage")
    return rows[worst], notes, totals


def _llamacpp(engines: EngineConstants, model: Model, variant: Variant, ctx: int, tp: int, kv_bytes: float,
              device: str, nodes: int = 1) -> tuple[tuple[int, int, int, int], list[str]]:
    a = model.arch
    c = engines["llamacpp"]
    n_ctx = math.ceil(ctx / c["ctx_pad"]) * c["ctx_pad"]
    # Over several nodes llama.cpp splits layers over every device of every part, like over local GPUs.
    split = tp * nodes
    weights = weight_bytes(model, variant, split, engines)
    # llama.cpp's SWA cache holds the window plus one batch (swa_full off).
    kv = int(kv_bytes_per_token(a, LLAMA_CPP, split, kv_bytes, c["ubatch"], n_ctx))
    act = llamacpp_compute_bytes(engines, a, n_ctx)
    notes = [f"-c {n_ctx} is shared by all of llama-server's parallel slots"]
    if ctx > a.context_limit:
        notes.append(f"context beyond the model's {a.context_limit} trained tokens: only as several parallel slots")
    if kv_bytes < 2:
        notes.append("a quantized V cache needs flash attention (-fa on)")
    if nodes > 1:
        notes.append(f"layers split over {nodes} nodes (the main llama-server and {nodes - 1} rpc-server "
                     f"part{'s' if nodes > 2 else ''}); figures are one {'node' if device == 'cpu' else 'GPU'}'s share")
    if device == "cpu":
        return (weights, kv, act, _mib(engines, "llamacpp", "cpu_runtime_mib")), \
            notes + ["CPU placement: weights are mmapped from the GGUF file (page cache), all in RAM"]
    if tp >= 2:
        notes.append(f"layers split over {tp} GPUs (--tensor-split); per-GPU figures are shares")
    return (weights, kv, act, _mib(engines, "llamacpp", "cuda_context_mib")), notes


def gpu_memory_utilization(est: Estimate, gpu_memory_bytes: int) -> float:
    """The --gpu-memory-utilization that gives vLLM exactly the estimate (rounded up to 0.01, with a
    0.01 margin), instead of its default 92 % of the GPU; capped at 0.98."""
    if gpu_memory_bytes <= 0:
        raise InvalidArgument("GPU memory must be positive")
    fraction = est.total / gpu_memory_bytes
    return min(MAX_UTILIZATION, math.ceil(fraction * 100 - 1e-9) / 100 + 0.01)


def fits(est: Estimate, gpu_memory_bytes: int) -> bool:
    # vLLM cannot be given more than MAX_UTILIZATION of a GPU; llama.cpp takes what it allocates.
    limit = gpu_memory_bytes * (MAX_UTILIZATION if est.engine == VLLM else 1.0)
    return est.total <= limit


def min_gpus(model: Model, variant: Variant, *, engines: EngineConstants, context: int, gpu_memory_bytes: int,
             kv_cache_dtype: str = "auto") -> int | None:
    """Smallest valid TP whose per-GPU estimate fits `gpu_memory_bytes`, or None."""
    for tp in valid_tps(model, variant):
        est = estimate(model, variant, engines=engines, context=context, tp=tp, gpu_memory_bytes=gpu_memory_bytes,
                       kv_cache_dtype=kv_cache_dtype)
        if fits(est, gpu_memory_bytes):
            return tp
    return None


def min_nodes(model: Model, variant: Variant, *, engines: EngineConstants, context: int, gpu_memory_bytes: int,
              gpus_per_node: int = 8, kv_cache_dtype: str = "auto") -> tuple[int, int] | None:
    """Fewest nodes (then the smallest TP per node, at most `gpus_per_node`) whose per-GPU estimate fits, or None."""
    for nodes in range(1, MAX_NODES + 1):
        if nodes_problem(model, variant, nodes):
            continue
        for tp in valid_tps(model, variant, max_tp=gpus_per_node):
            if variant.engine == LLAMA_CPP and tp * nodes > model.arch.layers:
                continue
            est = estimate(model, variant, engines=engines, context=context, tp=tp, nodes=nodes,
                           gpu_memory_bytes=gpu_memory_bytes, kv_cache_dtype=kv_cache_dtype)
            if fits(est, gpu_memory_bytes):
                return nodes, tp
    return None
