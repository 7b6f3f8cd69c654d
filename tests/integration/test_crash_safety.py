"""Issue 6 acceptance 4: kill -9 the controller at random points during 100 concurrent places/removals.

After a restart the store must be consistent: no GPU over-reserved, every acknowledged placement
present (unless its removal was acknowledged too), every replica accounted for.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.harness import FLEET, Fleet, wait_for

ENGINES = ("--declare-engines", "vllm,llama.cpp")


@pytest.mark.slow  # ~40 s of kill -9 cycles: with the e2e tests in CI, out of the default run
def test_kill_9_during_concurrent_places_and_removes(fleet: Fleet) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    print(f"fault-injection seed {seed}")
    nodes = {"n1": "4xA100-80GB", "n2": "4xA100-80GB", "n3": "2xL40S"}
    for name, spec in nodes.items():
        fleet.start_agent(name, spec, extra=ENGINES)
    wait_for(lambda: fleet.states() == dict.fromkeys(nodes, "ready"), 30, "nodes ready")

    placed_ack: set[str] = set()
    removed_ack: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FLEET, *args], capture_output=True, text=True, env=fleet.env, timeout=120)

    def op(i: int) -> None:
        name = f"d{i}"
        for _ in range(20):  # retry while the controller is down, like an operator would
            r = run(["place", "smollm2-135m", "--quant", "bf16", "--name", name, "-o", "json"])
            if r.returncode == 0:
                with lock:
                    placed_ack.add(name)
                break
            if "exists" in r.stderr:  # an earlier attempt committed before the controller died
                with lock:
                    placed_ack.add(name)
                break
            time.sleep(0.3)
        if name in placed_ack and i % 3 == 0:
            for _ in range(20):
                r = run(["remove", name])
                if r.returncode == 0 or "no deployment named" in r.stderr:
                    with lock:
                        removed_ack.add(name)
                    break
                time.sleep(0.3)

    def killer() -> None:
        kills = 0
        while not done.is_set() and kills < 4:
            time.sleep(rng.uniform(0.5, 2.5))
            if done.is_set():
                break
            fleet.stop_controller(signal.SIGKILL)
            kills += 1
            fleet.start_controller()
        print(f"controller killed {kills} times")

    k = threading.Thread(target=killer)
    k.start()
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(op, range(100)))
    done.set()
    k.join()

    wait_for(lambda: fleet.states() == dict.fromkeys(nodes, "ready"), 30, "nodes back")
    db = sqlite3.connect(fleet.data_dir / "fleet.db")
    over = db.execute("SELECT g.uuid, g.memory_total, SUM(r.bytes) FROM gpu g "
                      "JOIN reservation r ON r.gpu_uuid = g.uuid "
                      "GROUP BY g.uuid HAVING SUM(r.bytes) > g.memory_total").fetchall()
    assert over == [], f"over-reserved GPUs: {over}"
    deployments = {n for (n,) in db.execute("SELECT name FROM deployment")}
    missing = placed_ack - removed_ack - deployments
    assert not missing, f"acknowledged placements lost: {sorted(missing)}"
    orphans = db.execute("SELECT r.id FROM replica r LEFT JOIN deployment d ON d.name = r.deployment "
                         "WHERE d.name IS NULL").fetchall()
    assert orphans == []
    stray = db.execute("SELECT x.id FROM reservation x LEFT JOIN replica r ON r.id = x.replica "
                       "WHERE r.id IS NULL").fetchall()
    assert stray == []
    for (name, wanted) in db.execute("SELECT name, replicas_wanted FROM deployment WHERE state = 'active'"):
        live = db.execute("SELECT count(*) FROM replica WHERE deployment = ? AND desired = 'run'",
                          (name,)).fetchone()[0]
        assert live <= wanted, f"{name} has {live} live replicas for {wanted} wanted"
    for (rid, tp, node) in db.execute("SELECT id, tp, node FROM replica"):
        held = db.execute("SELECT count(*) FROM reservation WHERE replica = ?", (rid,)).fetchone()[0]
        assert held in (0, tp), f"replica {rid} holds {held} GPUs for TP {tp}"
        assert db.execute("SELECT 1 FROM node WHERE name = ?", (node,)).fetchone()
    listed = json.loads(fleet.cli("deployments", "-o", "json").stdout)
    assert {d["name"] for d in listed} == deployments
    print(f"placed {len(placed_ack)}, removed {len(removed_ack)}, deployments left {len(deployments)}")
