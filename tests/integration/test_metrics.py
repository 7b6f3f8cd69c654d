"""`/metrics` and `/api/capacity` over HTTP against a declared-GPU fleet: every value as inserted."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.controller.app.place import PLACEMENT_SECONDS
from tests.integration.http_harness import DECLARED, GIB, HttpFleet, declared_fleet


@pytest.fixture
def hf(tmp_path: Path) -> Iterator[HttpFleet]:
    f = HttpFleet(tmp_path / "ctl")
    declared_fleet(f)
    try:
        yield f
    finally:
        f.close()


def scrape(hf: HttpFleet) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    # As Prometheus scrapes: `authorization: {type: Bearer, credentials_file: ...}` holding a viewer key
    status, headers, body = hf.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by(series: dict[tuple[tuple[str, str], ...], float], *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(dict(labels)[k] for k in keys): v for labels, v in series.items()}


def test_gpu_memory_gauges(hf: HttpFleet) -> None:
    m = scrape(hf)
    total = by(m["fleet_gpu_memory_total_bytes"], "node", "gpu", "index", "name")
    assert total == {(node, uuid, str(i), name): float(mem)
                     for node, gpus in DECLARED.items() for i, (uuid, name, mem) in enumerate(gpus)}
    reserved = by(m["fleet_gpu_memory_reserved_bytes"], "gpu")
    used = by(m["fleet_gpu_memory_used_bytes"], "gpu")
    a0, a1 = (u for u, _, _ in DECLARED["gpu-01"])
    l4, h100 = DECLARED["gpu-02"][0][0], DECLARED["gpu-03"][0][0]
    assert reserved == {(a0,): 20 * GIB, (a1,): 20 * GIB, (l4,): 4 * GIB, (h100,): 10 * GIB}
    assert used == {(a0,): 30 * GIB, (a1,): 20 * GIB, (l4,): 0, (h100,): 0}


def test_node_state_and_heartbeat_age(hf: HttpFleet) -> None:
    m = scrape(hf)
    current = {node: state for (node, state), v in by(m["fleet_node_state"], "node", "state").items() if v == 1}
    assert current == {"gpu-01": "ready", "gpu-02": "cordoned", "gpu-03": "offline", "cpu-01": "ready"}
    assert len(m["fleet_node_state"]) == 4 * 5  # every state per node, 0 or 1
    age = by(m["fleet_node_heartbeat_age_seconds"], "node")
    assert 6.5 < age[("gpu-01",)] < 15 and 600 < age[("gpu-03",)] < 615


def test_replica_states(hf: HttpFleet) -> None:
    m = scrape(hf)
    counts = {k: v for k, v in by(m["fleet_replicas"], "deployment", "state").items() if v}
    assert counts == {("chat", "healthy"): 1, ("chat", "starting"): 1, ("emb", "failed"): 1, ("emb", "healthy"): 1}
    assert by(m["fleet_replicas"], "deployment", "state")[("chat", "failed")] == 0  # zeros are series too


def test_placement_and_gateway_series(hf: HttpFleet) -> None:
    before = scrape(hf)["fleet_placement_seconds_count"][()]
    PLACEMENT_SECONDS.observe(0.02)
    req = urllib.request.Request(hf.base + "/v1/chat/completions", data=b'{"model": "emb", "messages": []}')
    req.add_header("Authorization", f"Bearer {hf.client_key}")
    with pytest.raises(urllib.error.HTTPError) as e:  # emb's healthy replica is on an offline node
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 503
    m = scrape(hf)
    assert m["fleet_placement_seconds_count"][()] == before + 1
    assert by(m["fleet_gateway_requests_total"], "deployment", "code")[("emb", "503")] >= 1
    assert by(m["fleet_gateway_errors_total"], "deployment", "reason")[("emb", "no_replica")] >= 1
    assert by(m["fleet_gateway_request_seconds_count"], "deployment")[("emb",)] >= 1


def test_capacity_json(hf: HttpFleet) -> None:
    status, _, body = hf.get("/api/capacity")
    assert status == 200
    data = json.loads(body)
    nodes = {n["name"]: n for n in data["nodes"]}
    assert {k: v["badges"] for k, v in nodes.items()} == {
        "cpu-01": [], "gpu-01": [], "gpu-02": ["cordoned"], "gpu-03": ["offline", "draining"]}
    assert nodes["gpu-02"]["reason"] == "bad fan"
    g0 = nodes["gpu-01"]["gpus"][0]
    assert (g0["memory_total"], g0["memory_reserved"], g0["used_by_others"], g0["memory_free"]) == (
        80 * GIB, 20 * GIB, 10 * GIB, 50 * GIB)
    deps = {d["name"]: d for d in data["deployments"]}
    assert [(r["node"], r["state"]) for r in deps["chat"]["replicas"]] == [("gpu-01", "healthy"),
                                                                          ("gpu-01", "starting")]
    assert "api_key" not in json.dumps(data)  # engine keys never leave through the page
    assert data["totals"]["gpus"] == 4 and data["totals"]["memory_total"] == 264 * GIB
    assert abs(data["generated_at"] - time.time()) < 5
