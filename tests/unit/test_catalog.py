"""The shipped catalog: every family issue 3 names, consistent architecture numbers, lookups and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.controller.core.catalog import ENGINES
from fleet.controller.core.catalog_import import estimate_params, model_from_hf_config
from fleet.controller.core.errors import InvalidArgument, NotFound
from fleet.controller.store.files import catalog_with, shipped_catalog, write_model

# Issue 3's list: family -> models that must be in the catalog.
REQUIRED = {
    "llama3": ["llama3-8b", "llama3-70b"], "llama3.1": ["llama3.1-8b", "llama3.1-70b", "llama3.1-405b"],
    "llama3.3": ["llama3.3-70b"], "llama4": ["llama4-scout", "llama4-maverick"], "mistral": ["mistral-7b"],
    "mixtral": ["mixtral-8x7b", "mixtral-8x22b"],
    "qwen2": ["qwen2-0.5b", "qwen2-1.5b", "qwen2-7b", "qwen2-72b"],
    "qwen2.5": ["qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b"],
    "qwen3": ["qwen3-8b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b"],
    "phi3": ["phi3-mini", "phi3-medium"], "phi4": ["phi4"], "gemma": ["gemma-2b", "gemma-7b"],
    "gemma2": ["gemma2-9b", "gemma2-27b"], "gemma3": ["gemma3-1b", "gemma3-4b", "gemma3-12b", "gemma3-27b"],
    "deepseek-r1": ["deepseek-r1", "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-32b",
                    "deepseek-r1-distill-llama-70b"],
    "gpt-oss": ["gpt-oss-20b", "gpt-oss-120b"], "falcon": ["falcon-7b", "falcon-40b", "falcon-180b"],
    "grok": ["grok-1"], "tinyllama": ["tinyllama-1.1b"], "smollm2": ["smollm2-135m"], "gpt2": ["gpt2"],
}
VLLM_QUANTS = {"bf16", "fp16", "fp8", "int8", "awq", "gptq", "gptq-int8"}
GGUF_QUANTS = {"q4_0", "q4_1", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16"}


@pytest.fixture(scope="module")
def catalog():
    return shipped_catalog()


@pytest.mark.parametrize("family,names", sorted(REQUIRED.items()))
def test_every_required_family_is_there(catalog, family, names):
    for name in names:
        m = catalog.get(name)
        assert m.family == family
        assert m.hf_id and "/" in m.hf_id and m.license and m.variants


def test_quant_vocabulary_is_complete_and_engines_right():
    quants = shipped_catalog().quants
    assert VLLM_QUANTS | GGUF_QUANTS <= set(quants)
    for q in VLLM_QUANTS:
        assert quants[q]["engine"] == "vllm"
    for q in GGUF_QUANTS:
        assert quants[q]["engine"] == "llama.cpp"
    assert quants["fp8"]["min_compute_capability"] == "8.9"
    assert quants["awq"]["min_compute_capability"] == "7.5"


def test_every_variant_is_well_formed(catalog):
    for m in catalog.models():
        for v in m.variants:
            assert v.engine in ENGINES, (m.name, v)
            assert v.source, (m.name, v.quant)
            assert 3 < v.bits_per_weight <= 32
            assert v.quality > 0
            if v.quant in ("awq", "gptq", "gptq-int8"):
                assert v.group_size == 128


def test_architecture_numbers_agree_with_param_counts(catalog):
    # The architecture must reproduce the published parameter count: a typo in layers, hidden or
    # intermediate size shows up here. Gemma 3 (vision tower) and MLA (DeepSeek) are counted differently.
    for m in catalog.models():
        if m.arch.attention == "mla" or m.family == "gemma3":
            continue
        assert estimate_params(m.arch) == pytest.approx(m.params_total, rel=0.01), m.name
        assert m.arch.max_context >= 1024 and m.params_active <= m.params_total


def test_lookup_by_alias_hf_id_and_case(catalog):
    assert catalog.get("Qwen/Qwen2-72B-Instruct").name == "qwen2-72b"
    assert catalog.get("QWEN2-72B").name == "qwen2-72b"
    assert catalog.get("meta-llama/Meta-Llama-3.1-8B-Instruct").name == "llama3.1-8b"
    assert catalog.get("Qwen/Qwen2-72B-Instruct-AWQ").name == "qwen2-72b"  # a variant's repo names its model


def test_unknown_model_suggests_close_names(catalog):
    with pytest.raises(NotFound, match="qwen2-72b"):
        catalog.get("qwen2-27b")


def test_variant_errors_say_what_exists(catalog):
    m = catalog.get("qwen2-72b")
    with pytest.raises(InvalidArgument, match="runs on vllm.*q4_k_m"):
        catalog.variant(m, "awq", "llama.cpp")
    with pytest.raises(InvalidArgument, match="available: bf16"):
        catalog.variant(m, "q3_k_s")
    assert catalog.variant(m, "Q4_K_M").engine == "llama.cpp"
    assert catalog.variant(m, "gptq-int4").quant == "gptq"


def test_licenses_operators_filter_on(catalog):
    by_name = {m.name: m.license for m in catalog.models()}
    assert by_name["llama3.1-8b"].startswith("Llama")
    assert by_name["gemma2-9b"] == "Gemma"
    assert by_name["phi4"] == "MIT" and by_name["deepseek-r1"] == "MIT"
    assert by_name["mistral-7b"] == "Apache-2.0" and by_name["qwen2-72b"] == "Qwen"


def test_hf_config_import(tmp_path: Path):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
           "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
           "intermediate_size": 14336, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
           "tie_word_embeddings": False}
    m = model_from_hf_config(cfg, name="my-llama-ft", hf_id="acme/my-llama-ft", quants=shipped_catalog().quants)
    assert m.name == "my-llama-ft" and m.arch.kv_heads == 8
    assert m.params_total == pytest.approx(8_030_261_248, rel=0.001)
    assert m.variants[0].quant == "bf16" and m.variants[0].source == "acme/my-llama-ft"
    awq = model_from_hf_config({**cfg, "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 64}},
                               hf_id="acme/x-awq", quants=shipped_catalog().quants)
    assert awq.variants[0].quant == "awq" and awq.variants[0].group_size == 64
    assert json.dumps(cfg)  # unchanged input


def test_user_catalog_dir_adds_models(tmp_path: Path):

    cfg = {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "vocab_size": 151936, "intermediate_size": 4864,
           "max_position_embeddings": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    m = model_from_hf_config(cfg, name="tiny-qwen-ft", hf_id="acme/tiny-qwen-ft", license="Apache-2.0",
                             quants=shipped_catalog().quants)
    path = write_model(m, tmp_path, shipped_catalog().quants)
    cat = catalog_with([tmp_path])
    back = cat.get("acme/tiny-qwen-ft")
    assert path.exists() and back.name == "tiny-qwen-ft" and back.arch == m.arch and back.variants == m.variants
    assert back.params_total == m.params_total
    with pytest.raises(NotFound):
        shipped_catalog().get("tiny-qwen-ft")


@pytest.mark.parametrize("hub_id,model,quant,engine", [
    ("Qwen/Qwen2.5-7B", "qwen2.5-7b", None, None),                       # base model
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b", None, None),              # instruct: any variant
    ("Qwen/Qwen2.5-7B-Instruct-AWQ", "qwen2.5-7b", "awq", "vllm"),       # a catalog variant's source
    ("Qwen/Qwen3-8B-FP8", "qwen3-8b", "fp8", "vllm"),                    # quant from the repo's suffix
    ("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "llama3.1-70b", "awq", "vllm"),
    ("meta-llama/Llama-3.1-8B", "llama3.1-8b", None, None),
    ("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF", "llama3.1-8b", None, "llama.cpp"),  # many quants: ambiguous
    ("unsloth/Qwen2.5-7B-Instruct-GGUF", "qwen2.5-7b", None, "llama.cpp"),
    ("TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", "tinyllama-1.1b", None, "llama.cpp"),
])
def test_hub_ids_resolve_with_the_quant_they_imply(hub_id, model, quant, engine):
    r = shipped_catalog().resolve(hub_id)
    assert (r.model.name, r.quant, r.engine) == (model, quant, engine)
    assert shipped_catalog().get(hub_id).name == model


def test_unknown_hub_id_still_says_what_is_close():
    with pytest.raises(NotFound, match="unknown model"):
        shipped_catalog().resolve("someone/Totally-Different-13B-AWQ")
