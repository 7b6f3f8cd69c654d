"""The estimator against published measurements (estimate_reference.toml): weights within 3 %, KV within
5 %, total within 10 %, and never a fit where the source ran out of memory."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from fleet.controller.core.estimate import GIB, estimate, fits
from fleet.controller.store.files import shipped_catalog

ROWS: list[dict[str, Any]] = tomllib.loads((Path(__file__).parent / "estimate_reference.toml").read_text())["row"]
CATALOG = shipped_catalog()


def _estimate(row: dict[str, Any], context: int | None = None):
    model = CATALOG.get(row["model"])
    variant = CATALOG.variant(model, row["quant"], row.get("engine"))
    memory = int(row["gpu_memory_gib"] * GIB) if "gpu_memory_gib" in row else None
    return estimate(model, variant, engines=CATALOG.engines, context=context or row["context"], tp=row["tp"],
                    gpu_memory_bytes=memory, kv_cache_dtype=row.get("kv_cache_dtype", "auto"))


def _measured_weights(row: dict[str, Any]) -> float | None:
    if "weights_gib" in row:
        return row["weights_gib"] * GIB
    if "weights_gb" in row:
        return row["weights_gb"] * 1e9
    return row.get("weights_bytes")


def test_the_table_is_broad():
    assert len(ROWS) >= 20
    assert all(r["source"] and r["measured"] for r in ROWS)
    engines = {CATALOG.variant(CATALOG.get(r["model"]), r["quant"], r.get("engine")).engine for r in ROWS}
    assert engines == {"vllm", "llama.cpp"}
    assert {r["tp"] for r in ROWS} >= {1, 4, 8}
    assert sum(1 for r in ROWS if r.get("oom")) >= 3


@pytest.mark.parametrize("row", [r for r in ROWS if _measured_weights(r)], ids=lambda r: r["id"])
def test_weights_within_3_percent(row):
    assert _estimate(row).weights == pytest.approx(_measured_weights(row), rel=0.03)


@pytest.mark.parametrize("row", [r for r in ROWS if "kv_gib" in r or "kv_bytes_per_token" in r],
                         ids=lambda r: r["id"])
def test_kv_cache_within_5_percent(row):
    if "kv_gib" in row:
        assert _estimate(row, row["kv_tokens"]).kv_cache == pytest.approx(row["kv_gib"] * GIB, rel=0.05)
    else:
        est = _estimate(row)
        assert est.kv_cache / est.context == pytest.approx(row["kv_bytes_per_token"], rel=0.05)


@pytest.mark.parametrize("row", [r for r in ROWS if "total_gib" in r], ids=lambda r: r["id"])
def test_total_within_10_percent(row):
    assert _estimate(row).total == pytest.approx(row["total_gib"] * GIB, rel=0.10)


@pytest.mark.parametrize("row", [r for r in ROWS if r.get("oom")], ids=lambda r: r["id"])
def test_never_fits_where_the_source_ran_out_of_memory(row):
    assert not fits(_estimate(row), int(row["gpu_memory_gib"] * GIB))


def report() -> str:
    """Worst errors over the table (run this file as a script to print them)."""
    w = [abs(_estimate(r).weights / _measured_weights(r) - 1) for r in ROWS if _measured_weights(r)]
    t = [abs(_estimate(r).total / (r["total_gib"] * GIB) - 1) for r in ROWS if "total_gib" in r]
    return (f"{len(ROWS)} rows; max weight error {max(w):.1%} ({len(w)} rows); "
            f"max total error {max(t):.1%} ({len(t)} rows)")


if __name__ == "__main__":
    print(report())
