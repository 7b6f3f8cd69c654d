"""3,000 nodes joined over the real Agent service: `fleet nodes -o json` and `fleet capacity -o json` return
every one of them (in pages: one answer would pass gRPC's 4 MB cap at about 2,400 nodes of 8 GPUs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_sim import SimAgent, channel, inventory, register_all
from tests.integration.harness import Fleet

NODES = 3000


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        f.start_controller()
        yield f
    finally:
        f.close()


def join_many(fleet: Fleet, n: int) -> list[str]:
    names = [f"sim-{i:05d}" for i in range(n)]

    async def main() -> None:
        ca = (fleet.data_dir / "tls" / "ca.crt").read_bytes()
        channels = [channel(fleet.address, ca) for _ in range(4)]
        try:
            await register_all([SimAgent(name, inventory(name)) for name in names], channels, fleet.join_token)
        finally:
            for ch in channels:
                await ch.close()

    asyncio.run(main())
    return names


def test_every_node_comes_back_from_the_cli(fleet: Fleet) -> None:
    names = join_many(fleet, NODES)
    listed = fleet.cli("nodes", "-o", "json", timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    nodes = json.loads(listed.stdout)
    assert [n["name"] for n in nodes] == names  # all of them, once each, in name order
    assert all(len(n["gpus"]) == 8 for n in nodes)

    cap = fleet.cli("capacity", "-o", "json", timeout=300)
    assert cap.returncode == 0, cap.stderr[-2000:]
    data = json.loads(cap.stdout)
    assert len(data["nodes"]) == NODES and data["totals"]["nodes"] == NODES
    assert data["totals"]["gpu_count"] == 8 * NODES
    assert data["totals"]["vram_free"] == sum(g["memory_free"] for n in data["nodes"] for g in n["gpus"])
