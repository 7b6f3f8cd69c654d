"""A multi-node replica under two controllers on one PostgreSQL database (issue 14 meets HA).

Its parts' nodes hold their sessions on different controllers: the placement made through one reaches both
(the change feed carries every part), the gang turns healthy, losing the controller one part's node talks to
restarts nothing (the agent moves to the other controller and gets the same desired set), and removal through
the survivor stops every part and frees both nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Cluster
from tests.integration.harness import wait_for
from tests.pg import Postgres


@pytest.fixture
def cluster(tmp_path: Path, postgres: Postgres) -> Iterator[Cluster]:
    # rescheduling well after the agents' reconnect: a slow reconnect on a busy machine must not fence the gang
    c = Cluster(tmp_path, postgres.new_database(), lease_ttl=4.0, extra=("--reschedule-after", "60"))
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def gang(c: Cluster, i: int) -> dict[str, Any]:
    [dep] = [d for d in c.json_on(i, "deployments") if d["name"] == "big"]
    [rep] = dep["replicas"]
    return dict(rep)


def running(rep: dict[str, Any]) -> bool:
    ok = ("healthy", "declared")
    return rep["state"] in ok and all(p["state"] in ok for p in rep.get("parts", []))


def test_a_gang_over_nodes_on_two_controllers_survives_losing_one(cluster: Cluster) -> None:
    c = cluster
    c.start_agent("a", "2xL4", first=0)
    c.start_agent("b", "2xL4", first=1)
    for i in (0, 1):
        wait_for(lambda i=i: c.states(i) == {"a": "ready", "b": "ready"}, 60, f"both nodes ready on controller {i}")
    assert c.stats(0)["sessions"] == 1 and c.stats(1)["sessions"] == 1

    r = c.cli_on(0, "place", "llama3.1-70b", "--quant", "awq", "--context", "8192", "--nodes", "2", "--name", "big")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: running(gang(c, 1)), 60, "every part of the gang running, seen through controller 1")
    before = gang(c, 0)
    assert sorted(before["nodes"]) == ["a", "b"] and [p["role"] for p in before["parts"]] == ["main", "follower"]

    # b's session is on controller 1: kill it; b moves to controller 0 and its part keeps running unchanged
    c.kill(1)
    wait_for(lambda: c.stats(0)["sessions"] == 2, 60, "b reconnected to controller 0")
    wait_for(lambda: c.stats(0)["duties"], 30, "controller 0 holds the duties")
    wait_for(lambda: running(gang(c, 0)), 30, "the gang running, seen through controller 0")
    after = gang(c, 0)
    assert after["nodes"] == before["nodes"] and after["id"] == before["id"]
    assert [p["restarts"] for p in after["parts"]] == [p["restarts"] for p in before["parts"]]

    assert c.cli("remove", "big").returncode == 0
    wait_for(lambda: c.json_on(0, "deployments") == [], 30, "every part stopped and the gang forgotten")
    nodes = c.json_on(0, "nodes")
    assert all(g["memory_reserved"] == 0 for n in nodes for g in n["gpus"])
