"""Issue 6 acceptance 1 with real llama-server replicas: drain A, service never drops."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cpu_fleet import chat, deployment, start_cpu_fleet, stop_cpu_fleet
from tests.integration.harness import Fleet, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_agents(tmp_path: Path, llama_server_path: Path, smollm2_gguf: Path) -> Iterator[Fleet]:
    f = start_cpu_fleet(tmp_path, smollm2_gguf, ["a", "b"], controller_args=("--drain-min-healthy", "2"))
    try:
        yield f
    finally:
        stop_cpu_fleet(f)


def test_drain_is_make_before_break(two_agents: Fleet) -> None:
    f = two_agents
    r = f.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--node", "a",
              "--name", "chat", "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stderr
    assert [x["node"] for x in deployment(f, "chat")["replicas"]] == ["a"]

    assert f.cli("drain", "a", "--detach", "--reason", "bios").returncode == 0
    polls, served_by = 0, set()
    deadline = time.monotonic() + 180
    while f.states()["a"] != "drained":
        assert time.monotonic() < deadline, "drain did not finish"
        answers, errors = [], []
        # At every poll some healthy replica answers a completion. A list read before the old copy was told to
        # stop can be stale by the time a loaded machine sends the request: then the poll reads it again once.
        for _attempt in range(2):
            healthy = [x for x in deployment(f, "chat")["replicas"] if x["state"] == "healthy"]
            assert healthy, "no healthy replica during the drain"
            for rep in healthy:
                try:
                    answers.append(chat(rep["endpoint"], rep["api_key"], "chat"))
                    served_by.add(rep["node"])
                except OSError as e:
                    errors.append(f"{rep['node']} {rep['endpoint']}: {e}")  # the old copy may be stopping now
            if answers:
                break
        assert answers, f"no replica answered at poll {polls}: {errors}"
        polls += 1
        time.sleep(0.5)
    final = deployment(f, "chat")["replicas"]
    assert [(x["node"], x["state"]) for x in final] == [("b", "healthy")]
    assert chat(final[0]["endpoint"], final[0]["api_key"], "chat").strip()
    assert polls >= 1 and served_by  # observed while the drain ran; the drain itself takes a few seconds
    assert f.cli("uncordon", "a").returncode == 0
    wait_for(lambda: f.states()["a"] == "ready", 10, "a eligible again")
    r = f.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--node", "a",
              "--name", "again", "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def two_agents_fast_grace(tmp_path: Path, llama_server_path: Path, smollm2_gguf: Path) -> Iterator[Fleet]:
    f = start_cpu_fleet(tmp_path, smollm2_gguf, ["a", "b"], controller_args=("--reschedule-after", "5"))
    try:
        yield f
    finally:
        stop_cpu_fleet(f)


def test_frozen_agent_is_fenced_exactly_one_copy_serves(two_agents_fast_grace: Fleet) -> None:
    import os
    import signal

    import psutil

    f = two_agents_fast_grace
    r = f.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512", "--node", "a",
              "--name", "svc", "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stderr
    old = deployment(f, "svc")["replicas"][0]
    old_port = int(old["endpoint"].rsplit(":", 1)[1])
    agent = f.agents["a"].pid
    os.kill(agent, signal.SIGSTOP)  # longer than timeout (5 s) + grace (5 s)
    try:
        wait_for(lambda: any(x["node"] == "b" and x["state"] == "healthy"
                             for x in deployment(f, "svc")["replicas"]), 90, "rescheduled on b")
    finally:
        os.kill(agent, signal.SIGCONT)
    # back online, node a receives a desired set without the old replica: its engine is stopped
    wait_for(lambda: f.states()["a"] == "ready", 30, "a back")
    wait_for(lambda: [(x["node"], x["state"]) for x in deployment(f, "svc")["replicas"]] == [("b", "healthy")],
             60, "only b's copy left")

    def serving_on(port: int) -> bool:
        return any(f"--port {port}" in " ".join(p.info["cmdline"] or []) and "llama-server" in
                   " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))

    wait_for(lambda: not serving_on(old_port), 30, "stale engine stopped")
    new = deployment(f, "svc")["replicas"][0]
    assert chat(new["endpoint"], new["api_key"], "svc").strip()
