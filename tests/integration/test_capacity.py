"""One definition of free memory: `fleet capacity -o json`, `/api/capacity` and `/metrics` agree per GPU.

Free = total - reserved - memory used by processes fleet does not own (fleet.controller.core.snapshot
.free_memory, which placement uses too). gpu-01's GPU 0 has 20 GiB reserved and 30 GiB in use, so
10 GiB belong to someone else and 50 GiB are free, not 60.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.http_harness import ADMIN_TOKEN, DECLARED, GIB, HttpFleet, declared_fleet


@pytest.fixture
def hf(tmp_path: Path) -> Iterator[HttpFleet]:
    f = HttpFleet(tmp_path / "ctl")
    declared_fleet(f)
    try:
        yield f
    finally:
        f.close()


def http_json(hf: HttpFleet, path: str) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(hf.base + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def metrics_free(hf: HttpFleet) -> dict[str, int]:
    req = urllib.request.Request(hf.base + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    return {s.labels["gpu"]: int(s.value) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "fleet_gpu_memory_free_bytes"}


def test_cli_page_and_metrics_give_the_same_free_bytes(hf: HttpFleet) -> None:
    address = hf.start_grpc()
    out = subprocess.run([sys.executable, "-m", "fleet.cli", "capacity", "-o", "json"], capture_output=True,
                         text=True, env=hf.cli_env(address), timeout=60)
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    cli_free = {g["uuid"]: g["memory_free"] for n in cli["nodes"] for g in n["gpus"]}
    page = http_json(hf, "/api/capacity")
    page_free = {g["uuid"]: g["memory_free"] for n in page["nodes"] for g in n["gpus"]}

    every_gpu = {uuid for gpus in DECLARED.values() for uuid, _, _ in gpus}
    assert set(cli_free) == every_gpu
    assert cli_free == page_free == metrics_free(hf)
    a0 = DECLARED["gpu-01"][0][0]
    assert cli_free[a0] == 50 * GIB  # 80 total - 20 reserved - 10 used by others
    assert cli["totals"]["vram_free"] == sum(cli_free.values()) == page["totals"]["memory_free"]
