"""Table tests of the estimator: breakdown arithmetic against the architecture, TP rules, utilization."""

from __future__ import annotations

import pytest

from fleet.common.gpus import gpu_type
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.estimate import (
    GIB,
    estimate,
    fits,
    gpu_memory_utilization,
    incompatibility,
    min_gpus,
    total_weight_bytes,
    valid_tps,
)
from fleet.controller.store.files import shipped_catalog


@pytest.fixture(scope="module")
def cat():
    return shipped_catalog()


def est(cat, name, quant, engine=None, **kw):
    m = cat.get(name)
    return estimate(m, cat.variant(m, quant, engine), engines=cat.engines, **kw)


def test_breakdown_adds_up_and_bf16_is_two_bytes_per_param(cat):
    e = est(cat, "llama3.1-8b", "bf16", context=8192)
    assert e.total == e.weights + e.kv_cache + e.activations + e.runtime
    assert e.weights == pytest.approx(cat.get("llama3.1-8b").params_total * 2, rel=0.001)


@pytest.mark.parametrize("name,quant,tp,context", [
    ("llama3.1-8b", "bf16", 1, 8192), ("llama3.1-70b", "bf16", 4, 32768), ("qwen2-7b", "awq", 2, 4096),
    ("qwen2-0.5b", "bf16", 2, 32768),  # TP 2 = kv heads: no replication yet
])
def test_vllm_kv_from_architecture(cat, name, quant, tp, context):
    a = cat.get(name).arch
    e = est(cat, name, quant, context=context, tp=tp)
    assert e.kv_cache == 2 * a.layers * (a.kv_heads // tp) * a.head_dim * 2 * context


def test_kv_heads_replicate_when_tp_exceeds_them(cat):
    # Qwen2-1.5B has 2 KV heads: at TP 4 each GPU still holds one whole head.
    a = cat.get("qwen2-1.5b").arch
    e = est(cat, "qwen2-1.5b", "bf16", context=4096, tp=4)
    assert e.kv_cache == 2 * a.layers * 1 * a.head_dim * 2 * 4096
    assert any("replica" in n for n in e.notes)


def test_sliding_window_layers_cache_only_the_window(cat):
    a = cat.get("gemma3-27b").arch
    long = est(cat, "gemma3-27b", "bf16", context=131072, tp=2)
    full_every_layer = 2 * a.layers * (a.kv_heads // 2) * a.head_dim * 2 * 131072
    assert long.kv_cache < full_every_layer * 0.3  # 52 of 62 layers keep ~9k tokens, not 128k


def test_mla_caches_the_latent_on_every_gpu(cat):
    a = cat.get("deepseek-r1").arch
    e4 = est(cat, "deepseek-r1", "fp8", context=16384, tp=8)
    assert e4.kv_cache == a.layers * (a.kv_lora_rank + a.qk_rope_head_dim) * 2 * 16384


def test_kv_cache_dtype(cat):
    base = est(cat, "llama3.1-8b", "bf16", context=32768)
    assert est(cat, "llama3.1-8b", "bf16", context=32768, kv_cache_dtype="fp8").kv_cache * 2 == base.kv_cache
    q8 = est(cat, "llama3.1-8b", "q8_0", context=32768, kv_cache_dtype="q8_0")
    f16 = est(cat, "llama3.1-8b", "q8_0", context=32768)
    assert q8.kv_cache == pytest.approx(f16.kv_cache * 34 / 64, rel=0.001)
    with pytest.raises(InvalidArgument, match="q8_0"):
        est(cat, "llama3.1-8b", "bf16", kv_cache_dtype="q8_0")


def test_quantization_shrinks_weights_in_order(cat):
    sizes = [est(cat, "llama3.1-70b", q, context=4096).weights for q in ("bf16", "q8_0", "fp8", "q5_k_m", "awq")]
    assert sizes == sorted(sizes, reverse=True)
    awq = est(cat, "llama3.1-70b", "awq", context=4096).weights
    # Int4 bulk but bf16 embeddings and lm_head: between 0.25x and 0.3x of bf16.
    assert 0.25 < awq / sizes[0] < 0.3


def test_gguf_estimate_matches_published_file_sizes(cat):
    # bartowski/Meta-Llama-3.1-8B-Instruct-GGUF file sizes (HF model page).
    published = {"q4_k_m": 4_920_734_016, "q5_k_m": 5_732_987_072, "q8_0": 8_540_770_624}
    m = cat.get("llama3.1-8b")
    for quant, size in published.items():
        assert total_weight_bytes(m, cat.variant(m, quant)) == pytest.approx(size, rel=0.02), quant


@pytest.mark.parametrize("name,quant,expected", [
    ("llama3.1-70b", "bf16", [1, 2, 4, 8]),
    ("qwen2.5-72b", "awq", [1, 2, 4, 8]),     # official AWQ repo padded to 29696
    ("phi3-medium", "bf16", [1, 2, 5]),        # 10 KV heads: TP 4 and 8 neither divide nor multiply
    ("falcon-7b", "bf16", [1]),                # 71 heads
    ("qwen2.5-14b", "awq", [1, 2, 4]),         # 13824 / (128 x 8) is not whole
    ("qwen2.5-7b", "gptq", [1, 2, 4]),
])
def test_valid_tps(cat, name, quant, expected):
    m = cat.get(name)
    assert valid_tps(m, cat.variant(m, quant)) == expected


def test_self_quantized_qwen_72b_awq_is_tp1_only(cat):
    from dataclasses import replace

    m = cat.get("qwen2-72b")
    unpadded = replace(cat.variant(m, "awq"), intermediate_size=None)
    assert valid_tps(m, unpadded) == [1]


def test_invalid_tp_and_context_say_what_is_possible(cat):
    with pytest.raises(InvalidArgument, match=r"valid TP sizes: \[1, 2, 4, 8\]"):
        est(cat, "llama3.1-70b", "bf16", tp=3)
    with pytest.raises(InvalidArgument, match="at most 8192"):
        est(cat, "llama3-8b", "bf16", context=9000)


def test_more_gpus_means_less_weight_per_gpu_and_nccl(cat):
    one = est(cat, "llama3.1-70b", "bf16", context=8192, tp=1)
    four = est(cat, "llama3.1-70b", "bf16", context=8192, tp=4)
    assert four.weights == pytest.approx(one.weights / 4, rel=0.01)
    assert four.runtime > one.runtime  # NCCL buffers


def test_incompatibility(cat):
    m = cat.get("llama3.1-8b")
    assert "8.9" in incompatibility(cat.variant(m, "fp8"), gpu_type("V100").compute_capability)
    assert incompatibility(cat.variant(m, "fp8"), "9.0") is None
    assert incompatibility(cat.variant(m, "awq"), "7.0") is not None
    assert incompatibility(cat.variant(m, "awq"), "7.5") is None
    assert incompatibility(cat.variant(m, "awq"), "") is not None   # AMD: no AWQ kernels on ROCm
    assert incompatibility(cat.variant(m, "q4_k_m"), "7.0") is None


def test_gpu_memory_utilization_is_the_estimate_not_92_percent(cat):
    a100 = gpu_type("A100-80GB").memory_bytes
    e = est(cat, "llama3.1-8b", "awq", context=8192, gpu_memory_bytes=a100)
    assert e.gpu_memory_utilization == gpu_memory_utilization(e, a100)
    assert e.total / a100 < e.gpu_memory_utilization <= e.total / a100 + 0.021
    assert e.gpu_memory_utilization < 0.2
    big = est(cat, "llama3.1-70b", "bf16", context=131072, tp=2, gpu_memory_bytes=a100)
    assert big.gpu_memory_utilization == 0.98  # capped
    assert est(cat, "llama3.1-8b", "q4_k_m", gpu_memory_bytes=a100).gpu_memory_utilization is None


def test_min_gpus(cat):
    m = cat.get("llama3.1-70b")
    a100 = gpu_type("A100-80GB").memory_bytes
    assert min_gpus(m, cat.variant(m, "bf16"), engines=cat.engines, context=8192, gpu_memory_bytes=a100) == 2
    assert min_gpus(m, cat.variant(m, "awq"), engines=cat.engines, context=8192, gpu_memory_bytes=a100) == 1
    l4 = gpu_type("L4").memory_bytes
    assert min_gpus(cat.get("llama3.1-405b"), cat.variant(cat.get("llama3.1-405b"), "bf16"),
                    engines=cat.engines, context=8192, gpu_memory_bytes=l4) is None


def test_cpu_placement_for_small_models(cat):
    e = est(cat, "tinyllama-1.1b", "q4_k_m", context=2048, device="cpu")
    assert e.device == "cpu" and e.total < 2 * GIB
    with pytest.raises(InvalidArgument, match="TP must be 1"):
        est(cat, "tinyllama-1.1b", "q4_k_m", device="cpu", tp=2)


def test_fits_respects_vllm_utilization_cap(cat):
    e = est(cat, "llama3.1-8b", "bf16", context=8192)
    assert fits(e, int(e.total / 0.98) + 1)
    assert not fits(e, e.total)  # vLLM cannot take 100 % of a GPU


def test_long_context_through_rope_scaling(cat):
    native = est(cat, "qwen2.5-7b", "bf16", context=32768)
    long = est(cat, "qwen2.5-7b", "bf16", context=131072)
    assert long.kv_cache == native.kv_cache * 4  # estimated at the extended length
    assert "yarn rope scaling x4" in long.notes[0] and not any("rope" in n for n in native.notes)
    with pytest.raises(InvalidArgument, match=r"at most 131072 tokens of context \(32768 native, 131072 with yarn"):
        est(cat, "qwen2.5-7b", "bf16", context=200000)
    assert "yarn" in est(cat, "qwen2.5-7b", "q4_k_m", context=65536).notes[0]  # llama.cpp too
