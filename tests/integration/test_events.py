"""`fleet events` (filters, --since, --follow, -o json) and `fleet status` against a real controller and agents;
and an older database (event table without `deployment`) still opens."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.controller.store.db import VERSION, sqlite_url
from fleet.controller.store.repository import Store
from tests.integration.harness import FLEET, Fleet, wait_for

ENGINES = ("--declare-engines", "vllm,llama.cpp")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("events"), heartbeat=0.3, offline_after=2.0)
    try:
        f.start_controller()
        for name, spec in (("a", "2xA100-80GB"), ("b", "1xL4")):
            f.start_agent(name, spec, extra=ENGINES)
        wait_for(lambda: f.states() == {"a": "ready", "b": "ready"}, 30, "nodes ready")
        assert f.cli("place", "llama3.1-8b", "--quant", "bf16", "--node", "a", "--name", "chat").returncode == 0
        assert f.cli("cordon", "b", "--reason", "bad fan").returncode == 0
        yield f
    finally:
        f.close()


def events(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    r = fleet.cli("events", "-o", "json", *args)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def test_events_with_reasons_and_filters(fleet: Fleet) -> None:
    every = events(fleet)
    kinds = [e["kind"] for e in every]
    assert kinds.count("node.registered") == 2 and "deployment.placed" in kinds and "node.cordoned" in kinds
    assert [e["id"] for e in every] == sorted(e["id"] for e in every), "oldest first"
    cordon = next(e for e in every if e["kind"] == "node.cordoned")
    assert cordon["node"] == "b" and "bad fan" in cordon["message"] and cordon["type"] == "Normal"
    placed = next(e for e in every if e["kind"] == "deployment.placed")
    assert placed["deployment"] == "chat" and "on a" in placed["message"]

    assert {e["node"] for e in events(fleet, "--node", "b")} == {"b"}
    assert {e["deployment"] for e in events(fleet, "--deployment", "chat")} == {"chat"}
    assert events(fleet, "--since", "1h") == every
    before = time.time()
    assert all(e["at"] >= before - 1 for e in events(fleet, "--since", "1s"))
    table = fleet.cli("events", "--node", "b")
    assert table.returncode == 0 and "node.cordoned" in table.stdout and "bad fan" in table.stdout
    assert fleet.cli("events", "--since", "soon").returncode == 2


def test_follow_prints_new_events_and_status_shows_warnings(fleet: Fleet) -> None:
    follow = subprocess.Popen([*FLEET, "events", "--follow", "-o", "json", "--node", "b"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=fleet.env)
    try:
        fleet.kill_agent("b")  # goes offline: a Warning
        wait_for(lambda: fleet.states()["b"] == "offline", 30, "b offline")
        text = ""
        deadline = time.monotonic() + 60
        while "node.offline" not in text and time.monotonic() < deadline:
            line = follow.stdout.readline() if follow.stdout else ""
            text += line
        assert '"kind": "node.offline"' in text and '"type": "Warning"' in text
    finally:
        follow.kill()
        follow.wait(10)

    s = fleet.cli("status", "-o", "json")
    assert s.returncode == 0, s.stderr
    status = json.loads(s.stdout)
    assert status["nodes"] == {"ready": 1, "offline": 1} and status["nodes_declared"] == 2
    assert status["gpus"] == {"count": 3, "free": 2}
    assert status["deployments"]["total"] == 1 and status["deployments"]["declared"] == 1
    assert [w["kind"] for w in status["warnings"]] == ["node.offline"]
    table = fleet.cli("status")
    for text in ("nodes        2: 1 ready, 1 offline", "deployments  1:", "drains       none in progress",
                 "node.offline"):
        assert text in table.stdout, (text, table.stdout)


def test_a_database_from_before_the_deployment_column_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, at FLOAT NOT NULL, kind VARCHAR NOT NULL, "
                "node VARCHAR NOT NULL, message VARCHAR NOT NULL)")
    old.execute("INSERT INTO event (at, kind, node, message) VALUES (1.0, 'node.registered', 'n1', '')")
    old.commit()
    old.close()
    store = Store(sqlite_url(tmp_path))
    rows = store.events()
    assert [(e.kind, e.node, e.deployment) for e in rows] == [("node.registered", "n1", "")]
    Store(sqlite_url(tmp_path))  # a second open changes nothing (the upgrade is idempotent)


def test_a_database_at_schema_version_3_gets_the_column_in_step_4(tmp_path: Path) -> None:
    """A database the release before `fleet events` wrote (schema version 3, event rows without deployment)."""
    Store(sqlite_url(tmp_path))
    path = tmp_path / "fleet.db"
    with sqlite3.connect(path) as old:
        old.execute("ALTER TABLE event DROP COLUMN deployment")
        old.execute("INSERT INTO event (at, kind, node, message) VALUES (2.0, 'node.offline', 'n2', '')")
        old.execute("UPDATE schema_version SET version = 3")
    store = Store(sqlite_url(tmp_path))
    assert [(e.kind, e.node, e.deployment) for e in store.events(node="n2")] == [("node.offline", "n2", "")]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (VERSION,)
        assert [c[1] for c in db.execute("PRAGMA table_info(event)")].count("deployment") == 1
