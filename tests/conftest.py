"""Fixtures every layer of tests shares: a throwaway PostgreSQL server, and the databases the store runs on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import Postgres, binaries_present


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the whole test session (`initdb` + `pg_ctl`, a free port, a temp folder)."""
    if not binaries_present():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are missing; .ci/run installs them")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = Postgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's database, once as the embedded SQLite file and once as a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.new_database()
