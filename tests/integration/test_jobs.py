"""The controller's scheduled jobs run on the event loop, never in APScheduler's thread pool.

Plain functions would run in worker threads beside the RPC handlers: a drain driven by the Drain RPC and
by the reconcile job at the same moment placed two replacements, and asyncio queues were fed from the
wrong thread. Every job is a coroutine, so the loop runs them one at a time between RPCs.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path

from fleet.controller.app.controller import Controller, Settings
from fleet.controller.app.credentials import Credentials
from fleet.controller.main import on_loop, schedule_jobs
from fleet.controller.store.db import sqlite_url
from fleet.controller.store.repository import Store


def test_every_job_is_a_coroutine(tmp_path: Path) -> None:
    ctl = Controller(Store(sqlite_url(tmp_path)), Settings(), Credentials())
    jobs = schedule_jobs(ctl, Settings()).get_jobs()
    assert {j.id for j in jobs} == {"flush-heartbeats", "offline-nodes", "reconcile", "change-feed", "duties-lease",
                                      "credentials"}
    assert all(inspect.iscoroutinefunction(j.func) for j in jobs)


def test_the_scheduler_runs_a_wrapped_job_on_the_loop_thread_and_a_plain_one_elsewhere() -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    seen: dict[str, int] = {}

    async def main() -> int:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def record(name: str) -> None:
            seen[name] = threading.get_ident()
            if len(seen) == 2:
                loop.call_soon_threadsafe(done.set)

        scheduler = AsyncIOScheduler()
        scheduler.add_job(on_loop(lambda: record("wrapped")))
        scheduler.add_job(lambda: record("plain"))
        scheduler.start()
        await asyncio.wait_for(done.wait(), 30)
        scheduler.shutdown(wait=False)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert seen["wrapped"] == loop_thread
    assert seen["plain"] != loop_thread  # why every job is wrapped
