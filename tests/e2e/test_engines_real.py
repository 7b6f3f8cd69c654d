"""Real engines started with exactly the launchers' argv/env: health, an answer, and the API key enforced."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleet.agent.engines import EngineConfig, ReplicaSpec, launch
from tests.e2e.procs import EngineProcess, free_port

pytestmark = pytest.mark.e2e

API_KEY = "sk-fleet-e2e-key"


def _request(url: str, body: dict[str, Any] | None = None, key: str | None = None,
             timeout: float = 120) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip() else {}
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


def wait_healthy(proc: EngineProcess, base: str, timeout: float) -> float:
    """Seconds from process start until GET /health answers 200; fails with the engine's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            pytest.fail(f"engine exited with {proc.proc.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - proc.started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"no /health within {timeout}s:\n{proc.tail()}")


StartEngine = Callable[..., EngineProcess]


def secret_kept(proc: EngineProcess) -> None:
    """The key is neither on the engine's command line (`ps`) nor in anything it logged."""
    assert API_KEY not in Path(f"/proc/{proc.proc.pid}/cmdline").read_bytes().decode(errors="replace")
    assert API_KEY not in proc.log.read_text(errors="replace")


def test_llama_server_serves_chat_and_requires_the_key(
    llama_server_path: Path, smollm2_gguf: Path, start_engine: StartEngine, tmp_path: Path,
) -> None:
    port = free_port()
    spec = ReplicaSpec(id="e2e-llama", engine="llama.cpp", served_name="smollm2-135m",
                       model_path=str(smollm2_gguf), port=port, api_key=API_KEY, quant="q4_1",
                       context=512, device="cpu", api_key_file=str(tmp_path / "api-key"))
    ln = launch(spec, EngineConfig(llama_server=str(llama_server_path), host="127.0.0.1"))
    for path, content in ln.files.items():  # as the supervisor does
        Path(path).write_text(content)
    proc = start_engine(ln.argv, ln.env, "llama-server")
    base = f"http://127.0.0.1:{port}"
    seconds = wait_healthy(proc, base, timeout=60)
    print(f"llama-server healthy after {seconds:.1f}s")

    chat = {"model": "smollm2-135m", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
    status, body = _request(f"{base}/v1/chat/completions", chat, key=API_KEY)
    assert status == 200, body
    text = body["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip(), body
    assert body["model"] == "smollm2-135m"

    assert _request(f"{base}/v1/chat/completions", chat)[0] == 401
    assert _request(f"{base}/v1/chat/completions", chat, key="wrong")[0] == 401
    secret_kept(proc)


def test_vllm_on_cpu_serves_completions_and_requires_the_key(
    vllm_path: Path, tiny_llama_dir: Path, start_engine: StartEngine, tmp_path: Path,
) -> None:
    port = free_port()
    spec = ReplicaSpec(id="e2e-vllm", engine="vllm", served_name="tiny-llama", model_path=str(tiny_llama_dir),
                       port=port, api_key=API_KEY, quant="bf16", context=256, device="cpu",
                       kv_cache_bytes=64 * 1024**2)
    config = EngineConfig(vllm=str(vllm_path), host="127.0.0.1", offline=True,
                          vllm_cache_root=str(tmp_path / "vllm-cache"))
    ln = launch(spec, config)
    # vLLM leaves /tmp/vllm_dist_* files behind; keep them in this test's own tmp dir.
    proc = start_engine(ln.argv, {**ln.env, "TMPDIR": str(tmp_path)}, "vllm")
    base = f"http://127.0.0.1:{port}"
    seconds = wait_healthy(proc, base, timeout=240)
    print(f"vllm healthy after {seconds:.1f}s")

    req = {"model": "tiny-llama", "prompt": "The quick brown fox", "max_tokens": 8, "ignore_eos": True}
    status, body = _request(f"{base}/v1/completions", req, key=API_KEY)
    assert status == 200, body
    assert isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["completion_tokens"] == 8, body

    assert _request(f"{base}/v1/completions", req)[0] == 401
    assert _request(f"{base}/v1/completions", req, key="wrong")[0] == 401
    secret_kept(proc)
