"""Issue 2 acceptance: real controller + agent subprocesses over 127.0.0.1, a real SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess

from tests.integration.harness import Fleet, wait_for


def test_three_agents_offline_and_controller_restart(fleet: Fleet) -> None:
    specs = {"gpu-a": "8xA100-80GB", "gpu-b": "2xRTX4090,1xL40S", "gpu-c": "4xL4"}
    for name, spec in specs.items():
        fleet.start_agent(name, spec)
    wait_for(lambda: fleet.states() == dict.fromkeys(specs, "ready"), 20, "3 ready nodes")

    nodes = {n["name"]: n for n in fleet.nodes()}
    assert [g["name"] for g in nodes["gpu-a"]["gpus"]] == ["A100-80GB"] * 8
    assert [g["name"] for g in nodes["gpu-b"]["gpus"]] == ["RTX4090", "RTX4090", "L40S"]
    assert nodes["gpu-a"]["gpus"][0]["memory_total"] == 81920 * 2**20
    assert len({g["uuid"] for n in nodes.values() for g in n["gpus"]}) == 8 + 3 + 4
    for n in nodes.values():
        assert n["ram_total"] > 0 and n["disk_free"] > 0 and n["gpu_probe"] == "declared"

    # kill -9 one agent: offline within 20 s (here the controller runs with a 3 s timeout)
    fleet.kill_agent("gpu-b")
    wait_for(lambda: fleet.states()["gpu-b"] == "offline", 20, "gpu-b offline")
    assert fleet.states()["gpu-a"] == "ready"

    # restart the controller: the same nodes come back without re-joining (same credential files)
    creds = {n: (fleet.root / f"agent-{n}" / "node-credential.json").read_text() for n in ("gpu-a", "gpu-c")}
    fleet.stop_controller()
    fleet.start_controller()
    wait_for(lambda: fleet.states() == {"gpu-a": "ready", "gpu-b": "offline", "gpu-c": "ready"}, 30,
             "nodes back after controller restart")
    for n, before in creds.items():
        assert (fleet.root / f"agent-{n}" / "node-credential.json").read_text() == before
    assert "joined the fleet" in fleet.log("agent-gpu-a") and fleet.log("agent-gpu-a").count("joined the fleet") == 1

    # the agent that was killed comes back by itself when restarted, with the same identity
    fleet.start_agent("gpu-b", specs["gpu-b"])
    wait_for(lambda: fleet.states()["gpu-b"] == "ready", 20, "gpu-b ready again")
    assert {g["uuid"] for g in next(n for n in fleet.nodes() if n["name"] == "gpu-b")["gpus"]} == \
        {g["uuid"] for g in nodes["gpu-b"]["gpus"]}

    # durable truth is a real SQLite file in WAL mode
    db = sqlite3.connect(fleet.data_dir / "fleet.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM node").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM gpu").fetchone()[0] == 15


def test_tokens_are_private_files(fleet: Fleet) -> None:
    for name in ("join-token", "admin-token"):
        mode = stat.S_IMODE(os.stat(fleet.data_dir / name).st_mode)
        assert mode == 0o600, oct(mode)


def test_wrong_join_token_exits_nonzero_and_creates_nothing(fleet: Fleet) -> None:
    fingerprint = fleet.join_token.rpartition(".")[2]
    proc = fleet.start_agent("intruder", "1xT4", join_token=f"not-the-secret.{fingerprint}")
    assert proc.wait(30) == 3
    assert "refused to join" in fleet.log("agent-intruder")
    assert fleet.nodes() == []
    db = sqlite3.connect(fleet.data_dir / "fleet.db")
    assert db.execute("SELECT count(*) FROM node").fetchone()[0] == 0


def test_cli_without_or_with_wrong_admin_token_is_refused(fleet: Fleet) -> None:
    env_dir = fleet.root / "elsewhere"
    ca = str(fleet.data_dir / "tls" / "ca.crt")
    r = fleet.cli("--ca-file", ca, "nodes", "--data-dir", str(env_dir))
    assert r.returncode == 3 and "no admin token" in r.stderr
    r = fleet.cli("nodes", "--data-dir", str(env_dir))
    assert r.returncode == 2 and "no CA to verify the controller" in r.stderr
    r = fleet.cli("capacity", "--token", "guess")
    assert r.returncode == 3 and "admin token rejected" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_controller_is_one_line_exit_2(fleet: Fleet) -> None:
    r = fleet.cli("nodes", "--controller", "127.0.0.1:1")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "cannot reach the controller" in r.stderr


def test_capacity_and_describe(fleet: Fleet) -> None:
    fleet.start_agent("gpu-a", "2xA100-80GB")
    fleet.start_agent("cpu-a")
    wait_for(lambda: len(fleet.states()) == 2, 20, "2 nodes")
    r = fleet.cli("capacity", "-o", "json")
    assert r.returncode == 0, r.stderr
    cap = json.loads(r.stdout)
    assert cap["totals"]["gpu_count"] == 2
    assert cap["totals"]["vram_total"] == 2 * 81920 * 2**20
    assert cap["totals"]["vram_reserved"] == 0 and cap["totals"]["vram_free"] == cap["totals"]["vram_total"]
    table = fleet.cli("capacity")
    assert table.returncode == 0 and "gpu-a" in table.stdout and "cluster:" in table.stdout
    d = json.loads(fleet.cli("node", "describe", "gpu-a", "-o", "json").stdout)
    assert d["name"] == "gpu-a" and len(d["gpus"]) == 2
    missing = fleet.cli("node", "describe", "nope")
    assert missing.returncode == 2 and "no node named 'nope'" in missing.stderr


def test_bad_simulate_spec_is_a_clear_error(fleet: Fleet) -> None:
    r = fleet.cli("agent", "run", "--simulate-gpus", "3xB9000", "--join-token", "x")
    assert r.returncode == 2 and "unknown GPU type 'B9000'" in r.stderr


def test_join_token_pins_the_controller_ca(fleet: Fleet) -> None:
    secret = fleet.join_token.rpartition(".")[0]
    proc = fleet.start_agent("spoofed", "1xT4", join_token=f"{secret}.{'ab' * 32}")
    assert proc.wait(30) == 3
    assert "is not the one this join token names" in fleet.log("agent-spoofed")
    bare = fleet.start_agent("bare", "1xT4", join_token=secret)
    assert bare.wait(30) == 2 and "no CA to verify the controller" in fleet.log("agent-bare")
    assert fleet.nodes() == []
    # the right token: the agent learns and stores the CA, then joins over verified TLS
    fleet.start_agent("good", "1xT4")
    wait_for(lambda: fleet.states() == {"good": "ready"}, 20, "good joined")
    assert (fleet.root / "agent-good" / "controller-ca.crt").read_bytes() == \
        (fleet.data_dir / "tls" / "ca.crt").read_bytes()


def test_plaintext_only_on_loopback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.harness import FLEET

    r = subprocess.run([*FLEET, "controller", "run", "--data-dir", str(tmp_path), "--listen", "0.0.0.0:0",
                        "--http-listen", "", "--insecure"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "only on a loopback address" in (r.stderr + r.stdout)
