"""A Controller over a real SQLite file, with nodes joined the way Register and Session leave them.

For table tests of the use cases (place, drain, reconcile) and the desired-set conversion: no processes,
no network, the real store and the real app code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.common.gpus import gpu_type
from fleet.controller.app import nodes
from fleet.controller.app.controller import Controller, Settings
from fleet.controller.app.credentials import Credentials
from fleet.controller.rpc import convert
from fleet.controller.store.db import sqlite_url
from fleet.controller.store.repository import Store
from fleet.proto import fleet_pb2 as pb

GIB = 1024**3


def controller(tmp_path: Path, url: str | None = None, **settings: Any) -> Controller:
    """A Controller on `url` (default: a SQLite file in tmp_path), holding the duties lease as a lone one does."""
    ctl = Controller(Store(url or sqlite_url(tmp_path)), Settings(**settings), Credentials(), tmp_path)
    ctl.renew_lease()
    return ctl


def join(ctl: Controller, name: str, gpus: list[tuple[int, str]] | str = (), *,  # type: ignore[assignment]
         engines: tuple[str, ...] = ("vllm", "llama.cpp"), ram_gib: float = 512, disk_gib: float = 2000,
         labels: dict[str, str] | None = None, used: dict[int, float] | None = None,
         advertise: str = "") -> list[str]:
    """Join and connect a node; `gpus` is [(index, type)] or "2xA100-80GB". Returns the GPU UUIDs by position.

    `advertise`: the node's advertised address; its engines can then run parts of multi-node replicas."""
    if isinstance(gpus, str):
        count, kind = gpus.split("x", 1)
        gpus = [(i, kind) for i in range(int(count))]
    inv = pb.Inventory(hostname=name, cpu_count=16, ram_total=int(ram_gib * GIB), ram_available=int(ram_gib * GIB),
                       disk_total=int(disk_gib * GIB), disk_free=int(disk_gib * GIB), labels=labels or {},
                       engines=[pb.Engine(name=e, version="1", multinode=bool(advertise)) for e in engines],
                       gpu_probe="declared", advertise_address=advertise)
    for index, kind in gpus:
        t = gpu_type(kind)
        inv.gpus.append(pb.Gpu(uuid=f"GPU-{name}-{index}", index=index, name=t.name, memory_total=t.memory_bytes,
                               memory_used=int((used or {}).get(index, 0) * GIB),
                               compute_capability=t.compute_capability, declared=True))
    nodes.join(ctl, name, convert.inventory_json(inv), convert.gpu_rows(name, inv))
    nodes.connect(ctl, name, convert.inventory_json(inv), convert.gpu_rows(name, inv))
    return [g.uuid for g in inv.gpus]


def go_offline(ctl: Controller, name: str, since: float) -> None:
    """What the liveness job does when a node's heartbeats stop."""
    ctl.liveness.last_seen.pop(name, None)
    ctl.store.set_alive(name, False, since, last_heartbeat=since)


def report(ctl: Controller, node: str, state: str = "healthy", **only: str) -> None:
    """The node's agent reports every replica it runs in `state` (or per id in `only`)."""
    rows = [r for r in ctl.store.replicas(node=node) if r.desired == "run"]
    nodes.report(ctl, node, [nodes.ReplicaStatus(r.id, only.get(r.id, state), f"http://{node}:1") for r in rows],
                 ctl.store.get_node(node).generation)  # type: ignore[union-attr]
