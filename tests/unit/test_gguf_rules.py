"""llama.cpp's quantization rules against real GGUF headers (tests/unit/gguf_headers/, from files on the
package index): every tensor's type, the tensor table an architecture implies, and estimates never under."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleet.controller.core.catalog import Architecture
from fleet.controller.core.catalog_import import FTYPE_NAMES, GgufHeader, GgufTensor, model_from_gguf
from fleet.controller.core.estimate import total_weight_bytes
from fleet.controller.core.gguf_rules import Tensor, architecture_tensors, gguf_plan, plan_types
from fleet.controller.store.files import shipped_catalog

HEADERS = sorted((Path(__file__).parent / "gguf_headers").glob("*.json"))
CATALOG = shipped_catalog()
LLAMACPP = CATALOG.engines["llamacpp"]
# fixture -> the catalog model and quant the file is
CATALOG_MODEL = {"deepseek-r1-distill-qwen-7b-q4_k_m": ("deepseek-r1-distill-qwen-7b", "q4_k_m"),
                 "gemma3-270m-q4_k_m": ("gemma3-270m", "q4_k_m"),
                 "qwen2.5-coder-1.5b-q4_k_m": ("qwen2.5-coder-1.5b", "q4_k_m"),
                 "smollm2-135m-q4_1": ("smollm2-135m", "q4_1")}


def load(path: Path) -> tuple[dict[str, Any], GgufHeader]:
    d = json.loads(path.read_text())
    tensors = tuple(GgufTensor(n, tuple(s), 0, b, t) for n, s, t, b in d["tensors"])
    return d, GgufHeader(str(path), d["fields"], tensors)


def test_there_are_real_k_quant_headers():
    ftypes = {json.loads(p.read_text())["fields"]["general.file_type"] for p in HEADERS}
    assert len(HEADERS) >= 4 and {3, 15} <= ftypes  # Q4_1 and Q4_K_M


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.stem)
def test_every_tensor_gets_the_type_llama_quantize_gave_it(path: Path):
    d, header = load(path)
    model = model_from_gguf(header, quants=CATALOG.quants)
    ftype = FTYPE_NAMES[d["fields"]["general.file_type"]]
    plan = plan_types([Tensor(t.name, t.shape) for t in header.tensors], ftype, LLAMACPP["ftypes"][ftype],
                      arch=model.arch, gguf_arch=model.arch.gguf_arch, untied_output=False,
                      types=LLAMACPP["ggml_types"], fallback=LLAMACPP["ggml_fallback"])
    real = {t.name: t for t in header.tensors}
    wrong = [(t.name, t.type, real[t.name].type) for t in plan.tensors if t.type != real[t.name].type]
    assert wrong == []
    assert [t.n_bytes for t in plan.tensors] == [real[t.name].n_bytes for t in plan.tensors]
    assert plan.n_bytes == d["tensor_bytes"]


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.stem)
def test_the_architecture_implies_the_files_tensor_table(path: Path):
    _, header = load(path)
    model = model_from_gguf(header, quants=CATALOG.quants)
    made = {t.name: t.ne for t in architecture_tensors(model.arch, model.arch.gguf_arch) or []}
    assert made == {t.name: t.shape for t in header.tensors}


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.stem)
def test_the_catalog_estimate_is_never_under_the_real_file(path: Path):
    d, _ = load(path)
    name, quant = CATALOG_MODEL[path.stem]
    model = CATALOG.get(name)
    variant = CATALOG.variant(model, quant)
    if variant.size_bytes:  # recorded exactly: the rules are not used; check them without it
        from dataclasses import replace
        variant = replace(variant, size_bytes=None)
    est = total_weight_bytes(model, variant, CATALOG.engines)
    assert d["tensor_bytes"] <= est <= d["tensor_bytes"] * 1.005


def _arch(**kw: Any) -> Architecture:
    base = dict(layers=8, hidden=4096, heads=32, kv_heads=8, head_dim=128, vocab=32000, intermediate_size=14336,
                max_context=8192)
    return Architecture(**{**base, **kw})


def types_of(arch: Architecture, ftype: str, gguf_arch: str = "llama") -> dict[str, str]:
    plan = gguf_plan(arch, ftype, LLAMACPP, gguf_arch)
    assert plan is not None
    return {t.name: t.type for t in plan.tensors}


def test_rows_that_are_not_whole_blocks_fall_back():
    # Qwen2-72B's FFN width 29568 is not a multiple of 256: its FFN-down leaves the K-quants.
    t = types_of(_arch(intermediate_size=29568), "Q4_K_M")
    assert {t[f"blk.{i}.ffn_down.weight"] for i in range(8)} == {"Q5_0", "Q8_0"}
    assert t["blk.0.ffn_up.weight"] == "Q4_K"
    # a row of 1000 is not even whole 32-blocks: F16
    assert types_of(_arch(hidden=1000, heads=8, head_dim=125), "Q4_K_M")["blk.3.attn_q.weight"] == "F16"


def test_output_and_tied_embeddings():
    untied = types_of(_arch(), "Q4_K_M")
    assert untied["output.weight"] == "Q6_K" and untied["token_embd.weight"] == "Q4_K"
    tied = types_of(_arch(tied_embeddings=True, hidden=576, heads=9, kv_heads=3, head_dim=64), "Q4_0")
    assert "output.weight" not in tied and tied["token_embd.weight"] == "Q8_0"  # 576 is not whole 256-blocks
    assert types_of(_arch(), "Q8_0")["output.weight"] == "Q8_0"
    assert set(types_of(_arch(), "F16").values()) == {"F16", "F32"}


def test_70b_attention_v_and_eight_experts():
    big = types_of(_arch(layers=80, hidden=8192, heads=64), "Q4_K_M")
    assert {big[f"blk.{i}.attn_v.weight"] for i in range(80)} == {"Q5_K", "Q6_K"}
    moe = types_of(_arch(experts=8, experts_active=2, moe_intermediate_size=14336), "Q4_K_M")
    assert moe["blk.3.attn_v.weight"] == moe["blk.3.attn_k.weight"] == "Q8_0"
    assert moe["blk.3.attn_output.weight"] == "Q5_K" and moe["blk.3.ffn_gate_inp.weight"] == "F32"


def test_mla_is_not_modelled_and_uses_bits_per_weight():
    m = CATALOG.get("deepseek-r1")
    assert gguf_plan(m.arch, "Q4_K_M", LLAMACPP, m.arch.gguf_arch) is None
    assert total_weight_bytes(m, CATALOG.variant(m, "q4_k_m"), CATALOG.engines) > 0
