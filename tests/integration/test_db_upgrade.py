"""Upgrades in place: a database written by release 0.1 opens, is migrated once, and keeps everything;
controllers starting together on one PostgreSQL database migrate it once between them."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from fleet.controller.store.db import VERSION
from fleet.controller.store.repository import Store
from tests.pg import Postgres

RELEASE_0_1 = Path(__file__).parent / "data" / "release-0.1.sql"  # `sqlite3 fleet.db .dump` of a 0.1 controller


def old_database(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.db"
    with sqlite3.connect(path) as db:
        db.executescript(RELEASE_0_1.read_text())
    return path


def version(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT version FROM schema_version")).scalar_one())


def test_a_release_0_1_database_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    path = old_database(tmp_path)
    store = Store(f"sqlite:///{path}")
    assert version(store) == VERSION
    node = store.get_node("gpu-01")
    assert node is not None and node.admin_state == "cordoned" and node.cordon_reason == "test"
    assert len(store.gpus("gpu-01")) == 2
    dep = store.get_deployment("chat")
    assert dep is not None and dep.launch == "{}" and dep.model == "llama3.1-8b"
    (replica,) = store.replicas(deployment="chat")
    assert [x.replica for x in store.reservations([replica.id])] == [replica.id]
    assert store.nodes()[0].credential_hash  # the agent's credential still opens its session
    assert [(e.kind, e.deployment) for e in store.events()][:2] == [("node.registered", ""), ("deployment.placed", "")]
    again = Store(f"sqlite:///{path}")  # a second start changes nothing
    assert version(again) == VERSION
    with sqlite3.connect(path) as db:
        assert [c[1] for c in db.execute("PRAGMA table_info(deployment)")].count("launch") == 1


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    Store(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer than this fleet"):
        Store(f"sqlite:///{path}")


def test_controllers_starting_together_migrate_once(postgres: Postgres) -> None:
    url = postgres.new_database()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Store(url)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert version(Store(url)) == VERSION
