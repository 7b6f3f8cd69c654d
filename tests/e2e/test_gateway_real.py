"""Issue 8 acceptance 1: a real llama-server replica answers through the gateway by deployment name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from tests.e2e.cpu_fleet import start_cpu_fleet, stop_cpu_fleet
from tests.integration.gateway_client import chat_through_gateway
from tests.integration.harness import Fleet, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def one_agent(tmp_path: Path, llama_server_path: Path, smollm2_gguf: Path) -> Iterator[Fleet]:
    f = start_cpu_fleet(tmp_path, smollm2_gguf, ["cpu"])
    try:
        yield f
    finally:
        stop_cpu_fleet(f)


def test_chat_through_gateway_then_503(one_agent: Fleet) -> None:
    f = one_agent
    r = f.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--name", "smol",
              "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stderr
    key = f.cli("apikey", "create", "--name", "e2e")
    assert key.returncode == 0, key.stderr
    base = f"http://{f.http}"
    text, streamed = asyncio.run(chat_through_gateway(base, key.stdout.strip(), "smol"))
    assert text.strip() and streamed.strip()

    # the replica stops (its node's agent and engine die): the deployment still exists, nothing serves it
    f.kill_agent("cpu")
    for proc in psutil.process_iter(["cmdline"]):
        if "llama-server" in " ".join(proc.info["cmdline"] or []) and "--alias smol" in " ".join(proc.info["cmdline"]):
            proc.kill()
    wait_for(lambda: '"unknown"' in f.cli("deployments", "-o", "json").stdout, 30, "replica not healthy")
    with pytest.raises(openai.APIStatusError) as down:
        asyncio.run(chat_through_gateway(base, key.stdout.strip(), "smol"))
    assert down.value.status_code == 503
    assert "healthy" in str(down.value.body or down.value.message)
