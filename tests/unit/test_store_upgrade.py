"""A database written before replicas could span nodes opens: the upgrade step adds the replica's multi-node
columns with their defaults (and the part table), once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.controller.store.repository import Store
from tests.integration.test_db_upgrade import RELEASE_0_1


def test_a_release_0_1_database_gains_the_multinode_columns(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    with sqlite3.connect(path) as db:
        db.executescript(RELEASE_0_1.read_text())
    store = Store(f"sqlite:///{path}")
    (replica,) = store.replicas(deployment="chat")
    assert (replica.nodes, replica.epoch, replica.reported_epoch, replica.address, replica.gpu_layers) == (1, 0, 0, "",
                                                                                                           0)
    assert store.parts() == [] and store.replicas_on(replica.node) == [replica]
    Store(f"sqlite:///{path}")  # a second start adds nothing
    with sqlite3.connect(path) as db:
        assert [c[1] for c in db.execute("PRAGMA table_info(replica)")].count("epoch") == 1
