"""Options (core/options.py): model, quant, context and the fleet's GPU kinds in, placement Options out."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.common.gpus import gpu_type
from fleet.controller.core.errors import InvalidArgument, NotFound
from fleet.controller.core.estimate import estimate
from fleet.controller.core.options import options_for
from fleet.controller.store.files import shipped_catalog

CATALOG = shipped_catalog()
GIB = 1024**3


def kinds(*names: str) -> list[Any]:
    return [gpu_type(n) for n in names]


TABLE = [
    # (case, model, quant, tp, device, gpu kinds, expected {(quant, engine, tp)})
    ("a quant names one variant; the fewest GPUs that fit", "llama3.1-70b", "bf16", None, "gpu",
     kinds("A100-80GB"), {("bf16", "vllm", 2)}),
    ("a smaller GPU needs a wider TP: one option per TP that some kind needs", "llama3.1-70b", "bf16", None, "gpu",
     kinds("A100-80GB", "L40S"), {("bf16", "vllm", 2), ("bf16", "vllm", 4)}),
    ("a given TP only", "llama3.1-8b", "bf16", 2, "gpu", kinds("A100-80GB"), {("bf16", "vllm", 2)}),
    ("on CPU: RAM options at TP 0", "smollm2-135m", "q4_1", None, "cpu", [], {("q4_1", "llama.cpp", 0)}),
    ("fp8 skips GPUs without the capability", "llama3.1-8b", "fp8", None, "gpu", kinds("A100-80GB", "H100-80GB"),
     {("fp8", "vllm", 1)}),
]


@pytest.mark.parametrize("case,model,quant,tp,device,gpus,expected", TABLE, ids=[row[0] for row in TABLE])
def test_options(case: str, model: str, quant: str | None, tp: int | None, device: str, gpus: list[Any],
                 expected: set[tuple[str, str, int]]) -> None:
    options = options_for(model, quant, None, 8192 if device == "gpu" else 512, gpus, tp, device=device,
                          catalog=CATALOG)
    assert {(o.quant, o.engine, o.tp) for o in options} == expected


def test_no_quant_offers_every_variant_with_its_quality() -> None:
    options = options_for("qwen2-72b", None, None, 8192, kinds("A100-80GB"), catalog=CATALOG)
    assert {o.quant for o in options} >= {"bf16", "awq"}
    assert len({o.quality for o in options}) > 1  # placement picks the best quality that fits


def test_each_option_carries_the_estimate_per_gpu_kind_and_reserves_the_largest() -> None:
    a100, l40s = kinds("A100-80GB", "L40S")
    (o,) = options_for("llama3.1-8b", "bf16", None, 8192, [a100, l40s], 1, catalog=CATALOG)
    model = CATALOG.get("llama3.1-8b")
    variant = CATALOG.variant(model, "bf16")
    for kind in (a100, l40s):
        want = estimate(model, variant, engines=CATALOG.engines, context=8192, tp=1, gpu_memory_bytes=kind.memory_bytes)
        assert o.estimate_for(kind.name, kind.memory_bytes) == want
    per_kind = [e.total for _, e in o.estimates]
    assert o.per_gpu_bytes == max(per_kind) and len(set(per_kind)) == 2  # vLLM sizes its profile by GPU memory
    assert o.estimate_for("RTX4090", 24 * GIB) is None


@pytest.mark.parametrize("model,quant,tp,gpus,error,words", [
    ("no-such-model", None, None, kinds("A100-80GB"), NotFound, "unknown model"),
    ("llama3.1-8b", "nope", None, kinds("A100-80GB"), InvalidArgument, "no nope variant"),
    ("llama3.1-8b", "fp8", None, kinds("A100-80GB"), InvalidArgument, "runs on A100-80GB"),
    ("llama3.1-8b", "bf16", 3, kinds("A100-80GB"), InvalidArgument, "at TP 3"),
])
def test_impossible_requests_say_why(model: str, quant: str | None, tp: int | None, gpus: list[Any],
                                     error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        options_for(model, quant, None, 8192, gpus, tp, catalog=CATALOG)
