"""Concurrent placements from two controllers on one database never double-book a GPU (SQLite and PostgreSQL).

Each thread is a controller of its own (its own Store, its own connections) placing as fast as it can on
a small fleet until nothing fits; the placement commit re-checks GPU totals under row locks (PostgreSQL)
or the single write lock (SQLite). Afterwards, per GPU, the reservations in the database sum to at most
its memory, and every acknowledged deployment is there.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlmodel import func, select

from fleet.controller.app.controller import Controller, Settings
from fleet.controller.app.credentials import Credentials
from fleet.controller.app.place import PlaceArgs, place_deployment
from fleet.controller.core.errors import FleetError
from fleet.controller.store.repository import Store
from fleet.controller.store.schema import DeploymentRow, GpuRow, ReservationRow
from tests.integration.fleet_state import join

THREADS = 8
PER_THREAD = 12


def test_no_gpu_is_over_reserved(tmp_path: Path, store_url: str) -> None:
    first = Controller(Store(store_url), Settings(), Credentials(), tmp_path)
    for i in range(3):
        join(first, f"n{i}", "2xL40S")  # 6 GPUs of 48 GiB: room for ~12 of these, not 96
    acknowledged: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def controller_thread(k: int) -> None:
        ctl = Controller(Store(store_url), Settings(), Credentials(), tmp_path)  # a controller of its own
        for j in range(PER_THREAD):
            name = f"t{k}-{j}"
            try:
                ctl.store.sync()
                out = place_deployment(ctl, PlaceArgs("qwen2.5-7b", quant="awq", name=name, context=4096), time.time())
            except FleetError as e:  # a concurrent commit won the GPU: refused, never double-booked
                with lock:
                    refused.append(f"{name}: {e.message}")
                continue
            with lock:
                (acknowledged if out.placed else refused).append(name)

    threads = [threading.Thread(target=controller_thread, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)

    check = Store(store_url)
    with check.read() as s:
        totals = {g.uuid: g.memory_total for g in s.exec(select(GpuRow)).all()}
        held = dict(s.exec(select(ReservationRow.gpu_uuid, func.sum(ReservationRow.bytes))
                           .group_by(ReservationRow.gpu_uuid)).all())
        names = {d.name for d in s.exec(select(DeploymentRow)).all()}
    assert acknowledged, refused[:5]
    assert all(int(held.get(u, 0)) <= total for u, total in totals.items()), (held, totals)
    assert names == set(acknowledged)  # every acknowledged placement is there, nothing else
    assert len(acknowledged) + len(refused) == THREADS * PER_THREAD
