"""A database written before a column existed still opens: the store adds it (idempotently) at start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.controller.store.repository import Store
from fleet.controller.store.schema import DeploymentRow


def test_an_older_deployment_table_gains_the_launch_column(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    Store(f"sqlite:///{path}")  # today's schema, then made old: drop the column as an older release had it
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE deployment DROP COLUMN launch")
        db.execute("INSERT INTO deployment (name, model, quant, engine, context, replicas_wanted, device, strategy,"
                   " tp, source, file, why, state, created_at, estimate, request, max_moves) VALUES "
                   "('old', 'm', 'q', 'vllm', 4096, 1, 'gpu', 'pack', 1, '', '', '', 'active', 0, '{}', '{}', 1)")
    store = Store(f"sqlite:///{path}")
    assert store.get_deployment("old") == DeploymentRow(
        name="old", model="m", quant="q", engine="vllm", context=4096, replicas_wanted=1, launch="{}")
    Store(f"sqlite:///{path}")  # a second start changes nothing
    with sqlite3.connect(path) as db:
        assert [c[1] for c in db.execute("PRAGMA table_info(deployment)")].count("launch") == 1
