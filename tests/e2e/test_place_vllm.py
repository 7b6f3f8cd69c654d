"""Issue 5 acceptance 2: `fleet place` starts a real `vllm serve` (CPU build) of a tiny offline model."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import Fleet, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def vllm_fleet(tmp_path: Path, vllm_path: Path, tiny_llama_dir: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, heartbeat=0.5, offline_after=10.0)
    f.env["HF_HUB_OFFLINE"] = "1"
    f.start_controller()
    f.start_agent("cpu", extra=("--engine-ports", "42000-42099"))
    wait_for(lambda: f.states() == {"cpu": "ready"}, 60, "agent ready")  # vllm --version imports torch
    try:
        yield f
    finally:
        f.close()
        for proc in psutil.process_iter(["cmdline"]):
            if "vllm" in " ".join(proc.info["cmdline"] or []) and "42" in " ".join(proc.info["cmdline"] or []):
                try:
                    proc.kill()
                except psutil.Error:
                    pass


def test_place_tiny_model_on_vllm_cpu(vllm_fleet: Fleet, tiny_llama_dir: Path) -> None:
    f = vllm_fleet
    assert "vllm" in {e["name"] for e in f.nodes()[0]["engines"]}
    # a custom model enters the catalog from its config.json; its weights are the local folder
    add = f.cli("models", "add", "--from-config", str(tiny_llama_dir / "config.json"), "--hf-id", str(tiny_llama_dir),
                "--name", "tiny-llama", "--catalog-dir", str(f.data_dir / "catalog"), "-o", "json")
    assert add.returncode == 0, add.stderr
    quant = json.loads(add.stdout)["variants"][0]["quant"]
    r = f.cli("place", "tiny-llama", "--quant", quant, "--engine", "vllm", "--device", "cpu", "--context", "256",
              "--wait", "--timeout", "300", "-o", "json", timeout=400)
    assert r.returncode == 0, r.stderr + r.stdout
    dep = json.loads(r.stdout)
    rep = dep["replicas"][0]
    assert dep["engine"] == "vllm" and rep["state"] == "healthy"
    body = json.dumps({"model": dep["name"], "prompt": "hello world", "max_tokens": 5}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {rep['api_key']}"}
    req = urllib.request.Request(f"{rep['endpoint']}/v1/completions", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        out = json.load(resp)
    assert out["choices"][0]["text"] is not None and out["usage"]["completion_tokens"] > 0
    assert f.cli("remove", dep["name"]).returncode == 0
    wait_for(lambda: json.loads(f.cli("deployments", "-o", "json").stdout) == [], 120, "removed")
