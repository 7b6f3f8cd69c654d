"""A database written before a column existed still opens: the missing columns are added with their defaults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.controller.store.db import add_missing_columns, sqlite_url
from fleet.controller.store.repository import Store


def test_an_old_replica_table_gains_the_multinode_columns(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "fleet.db")
    # the replica table as an earlier release wrote it (before replicas could span nodes)
    db.execute("CREATE TABLE replica (id VARCHAR PRIMARY KEY, deployment VARCHAR, ordinal INTEGER, node VARCHAR,"
               " desired VARCHAR, state VARCHAR)")
    db.execute("INSERT INTO replica VALUES ('r1', 'chat', 0, 'n1', 'run', 'healthy')")
    db.commit()
    db.close()
    store = Store(sqlite_url(tmp_path))
    [row] = store.replicas()
    assert (row.id, row.nodes, row.epoch, row.address, row.gpu_layers) == ("r1", 1, 0, "", 0)
    assert store.parts() == []
    assert add_missing_columns(store.engine) == []  # idempotent: a second open adds nothing
