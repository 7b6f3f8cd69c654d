"""`fleet controller migrate`: a stopped SQLite controller's whole state moves to PostgreSQL; the result opens
as the same fleet (nodes, placements, tokens, CA), and a running or already-used database is refused."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from fleet.controller.app.place import PlaceArgs, place_deployment
from fleet.controller.store.db import sqlite_url
from fleet.controller.store.repository import Store
from fleet.controller.store.vault import DatabaseCA
from tests.integration.fleet_state import controller, join
from tests.pg import Postgres

FLEET = [sys.executable, "-m", "fleet.cli"]


def stopped_sqlite_fleet(tmp_path: Path) -> str:
    ctl = controller(tmp_path)
    join(ctl, "a", "2xA100-80GB")
    join(ctl, "b", "1xL40S")
    assert place_deployment(ctl, PlaceArgs("llama3.1-8b", quant="bf16", name="chat", replicas=2), time.time()).placed
    ctl.store.add_token("join", "a-join-secret")
    DatabaseCA(ctl.store).put_once(b"-----CA-----", b"-----KEY-----")
    ctl.lease.release()
    with ctl.store.engine.begin() as conn:  # a controller stopped a while ago: no recent heartbeat
        conn.execute(text("UPDATE node SET last_heartbeat = last_heartbeat - 3600"))
    return sqlite_url(tmp_path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLEET, "controller", "migrate", *args], capture_output=True, text=True, timeout=300)


def test_a_stopped_controller_moves_to_postgresql(tmp_path: Path, postgres: Postgres) -> None:
    source, target = stopped_sqlite_fleet(tmp_path), postgres.new_database()
    before = Store(source)
    out = run("--from", source, "--to", target)
    assert out.returncode == 0, out.stderr
    assert "done:" in out.stdout
    after = Store(target)
    assert [n.name for n in after.nodes()] == [n.name for n in before.nodes()] == ["a", "b"]
    assert {g.uuid for g in after.gpus()} == {g.uuid for g in before.gpus()}
    assert [(r.id, r.node) for r in after.replicas()] == [(r.id, r.node) for r in before.replicas()]
    assert sorted((x.gpu_uuid, x.bytes) for x in after.reservations()) == \
        sorted((x.gpu_uuid, x.bytes) for x in before.reservations())
    assert after.token_valid("join", "a-join-secret")
    assert DatabaseCA(after).get() == (b"-----CA-----", b"-----KEY-----")
    after.add_token("join", "made-after-the-move")  # ids continue past the copied rows
    assert after.token_valid("join", "made-after-the-move")

    again = run("--from", source, "--to", target)
    assert again.returncode == 2 and "already holds a fleet" in again.stderr


def test_a_running_controller_is_refused(tmp_path: Path, postgres: Postgres) -> None:
    ctl = controller(tmp_path)  # holds its duties lease, as a running controller does
    join(ctl, "a", "1xA100-80GB")
    out = run("--from", sqlite_url(tmp_path), "--to", postgres.new_database())
    assert out.returncode == 2 and "stop it first" in out.stderr
