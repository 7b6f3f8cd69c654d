"""Issue 5 acceptance with real processes: controller, a CPU agent, a real llama-server placed by fleet."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.harness import Fleet, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def cpu_fleet(tmp_path: Path, llama_server_path: Path, smollm2_gguf: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, heartbeat=0.5, offline_after=5.0)
    f.env["HF_HUB_OFFLINE"] = "1"  # no hub here: weights come from the models dir, or the replica fails clearly
    f.start_controller()
    models = tmp_path / "agent-cpu" / "models"
    models.mkdir(parents=True)
    shutil.copy(smollm2_gguf, models / smollm2_gguf.name)  # the agent finds weights in its models dir
    f.start_agent("cpu", extra=("--models-dir", str(models)))
    wait_for(lambda: f.states() == {"cpu": "ready"}, 30, "cpu agent ready")
    node = f.nodes()[0]
    assert "llama.cpp" in {e["name"] for e in node["engines"]}, node["engines"]
    try:
        yield f
    finally:
        f.close()
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(tmp_path) in cmd and "llama-server" in cmd:
                proc.kill()


def deployment(f: Fleet, name: str) -> dict[str, Any]:
    r = f.cli("deployment", "describe", name, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def chat(endpoint: str, key: str, model: str) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                       "max_tokens": 16}).encode()
    req = urllib.request.Request(f"{endpoint}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return str(json.load(resp)["choices"][0]["message"]["content"])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_place_wait_chat_restart_adopt_remove(cpu_fleet: Fleet) -> None:
    f = cpu_fleet
    r = f.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--wait",
              "--timeout", "120", "-o", "json", timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout
    dep = json.loads(r.stdout)
    replica = dep["replicas"][0]
    assert replica["state"] == "healthy" and replica["endpoint"].startswith("http://127.0.0.1:")
    assert chat(replica["endpoint"], replica["api_key"], dep["name"]).strip()
    with pytest.raises(urllib.error.HTTPError) as denied:
        chat(replica["endpoint"], "wrong-key", dep["name"])
    assert denied.value.code == 401

    # the listing a script reads
    listed = json.loads(f.cli("deployments", "-o", "json").stdout)
    assert [(d["name"], d["model"], d["quant"], d["engine"]) for d in listed] == \
        [(dep["name"], "smollm2-135m", "q4_1", "llama.cpp")]
    assert set(listed[0]["replicas"][0]) >= {"node", "gpus", "state", "endpoint", "api_key"}

    # logs through the controller
    logs = f.cli("logs", dep["name"], "--lines", "50")
    assert logs.returncode == 0 and "llama" in logs.stdout.lower()

    # kill -9 the engine: the agent restarts it and it serves again
    port = int(replica["endpoint"].rsplit(":", 1)[1])
    engine = next(p for p in psutil.process_iter(["cmdline"]) if "llama-server" in " ".join(p.info["cmdline"] or [])
                  and f"--port {port}" in " ".join(p.info["cmdline"] or []))
    engine.kill()
    wait_for(lambda: deployment(f, dep["name"])["replicas"][0]["restarts"] == 1
             and deployment(f, dep["name"])["replicas"][0]["state"] == "healthy", 60, "engine restarted")
    again = deployment(f, dep["name"])["replicas"][0]
    assert chat(again["endpoint"], again["api_key"], dep["name"]).strip()

    # kill -9 the agent and start it again: the engine is the same process and still serving
    pid = next(p.pid for p in psutil.process_iter(["cmdline"]) if "llama-server" in " ".join(p.info["cmdline"] or []))
    f.kill_agent("cpu")
    assert chat(again["endpoint"], again["api_key"], dep["name"]).strip()
    f.start_agent("cpu", extra=("--models-dir", str(f.root / "agent-cpu" / "models")))
    wait_for(lambda: f.states() == {"cpu": "ready"}, 30, "agent back")
    wait_for(lambda: deployment(f, dep["name"])["replicas"][0]["state"] == "healthy", 30, "adopted healthy")
    assert psutil.pid_exists(pid) and "adopted replica" in f.log("agent-cpu")
    assert chat(again["endpoint"], again["api_key"], dep["name"]).strip()

    # remove: the process stops, the port is free, the reservation is gone
    assert f.cli("remove", dep["name"]).returncode == 0
    wait_for(lambda: json.loads(f.cli("deployments", "-o", "json").stdout) == [], 60, "deployment removed")
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 20,
             "engine stopped")
    assert not port_open(port)


def test_failed_start_reports_reason_and_wait_exits_nonzero(cpu_fleet: Fleet) -> None:
    # weights for this variant are not on the node and downloads are off: failed with the reason, exit 1
    r = cpu_fleet.cli("place", "smollm2-135m", "--quant", "q8_0", "--device", "cpu", "--context", "512",
                      "--wait", "--timeout", "60", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed" in r.stderr and "SmolLM2-135M-Instruct.Q8_0.gguf" in r.stderr
    # Not retried forever: it stays failed with no restart for longer than the agent's first backoff.
    stop = time.monotonic() + 3
    while time.monotonic() < stop:
        d = deployment(cpu_fleet, "smollm2-135m-q8-0")
        assert d["replicas"][0]["state"] == "failed" and d["replicas"][0]["restarts"] == 0
