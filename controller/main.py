"""`fleet controller run`: wires the store, the Controller, the gRPC server, the HTTP app and the jobs.

The composition root: the only module that knows every layer (core <- store <- app <- rpc/http).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fleet.common import sdnotify
from fleet.controller.app import reconcile
from fleet.controller.app.access import ensure_token
from fleet.controller.app.controller import Controller, Settings
from fleet.controller.app.credentials import Credentials
from fleet.controller.http.app import start_http
from fleet.controller.listen import listen_problem
from fleet.controller.rpc.server import build_server, check_plaintext, server_credentials
from fleet.controller.store.db import sqlite_url
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.repository import Store
from fleet.controller.tls import TLSOptions

log = logging.getLogger("fleet.controller")

__all__ = ["Settings", "TLSOptions", "run", "serve"]  # what `fleet controller run` needs


def on_loop(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """The job as a coroutine: APScheduler runs plain functions in a thread pool, beside the RPC handlers on
    the event loop, and two threads driving one drain placed two replacements. Every job touches the same
    Controller state (its asyncio queues included), so every job runs on the loop, one at a time."""

    async def job() -> None:
        fn()

    job.__name__ = getattr(fn, "__name__", "job")
    return job


def schedule_jobs(ctl: Controller, settings: Settings) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    scheduler.add_job(on_loop(ctl.flush), "interval", seconds=settings.flush_interval, id="flush-heartbeats",
                      max_instances=1, coalesce=True)
    scheduler.add_job(on_loop(ctl.check_liveness), "interval", seconds=min(1.0, settings.heartbeat_interval),
                      id="offline-nodes", max_instances=1, coalesce=True)
    scheduler.add_job(on_loop(partial(reconcile.tick, ctl)), "interval", seconds=1.0, id="reconcile",
                      max_instances=1, coalesce=True)
    return scheduler


async def serve(data_dir: Path, listen: str, db_url: str | None, settings: Settings,
                ready: asyncio.Event | None = None, tls: TLSOptions = TLSOptions(),
                http_listen: str = "127.0.0.1:8080") -> None:
    check_plaintext(listen, tls)  # bad flags first, then ports, then anything written
    check_ports(listen, http_listen)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds_tls, fingerprint = server_credentials(data_dir, listen, tls)
    store = Store(db_url or sqlite_url(data_dir))
    ensure_token(store, data_dir, "join", fingerprint)
    admin = ensure_token(store, data_dir, "admin")
    ctl = Controller(store, settings, Credentials(admin_hashes={token_hash(admin)}), data_dir)

    # HTTP first: if its port was taken meanwhile, no gRPC server exists yet to be torn down (a grpc.aio
    # server collected after the loop closed prints a traceback from its __del__).
    http = await start_http(ctl, http_listen) if http_listen else None
    try:
        server = build_server(ctl, listen, creds_tls)
    except SystemExit:
        if http is not None:
            await http.cleanup()
        raise
    await server.start()

    scheduler = schedule_jobs(ctl, settings)
    scheduler.start()
    log.info("controller listening on %s (%s), data in %s, heartbeat %.1fs, offline after %.1fs", listen,
             "plaintext" if creds_tls is None else f"TLS, CA {fingerprint[:16]}…", data_dir,
             settings.heartbeat_interval, settings.offline_after)
    print(f"fleet controller listening on {listen}" + (f", HTTP on {http_listen}" if http_listen else "")
          + f" (data dir {data_dir})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    sdnotify.ready(f"listening on {listen}")
    watchdog = asyncio.create_task(sdnotify.watchdog_loop())
    await stop.wait()
    log.info("stopping")
    sdnotify.stopping()
    watchdog.cancel()
    if http is not None:
        await http.cleanup()
    scheduler.shutdown(wait=False)
    await server.stop(grace=2)
    ctl.flush()


def check_ports(listen: str, http_listen: str) -> None:
    """One clear line, before anything is written or started, when a port is not ours to take."""
    for address, what, flag in ((listen, "gRPC", "--listen"), (http_listen, "HTTP", "--http-listen")):
        problem = listen_problem(address) if address else None
        if problem:
            off = ", or '' to turn HTTP off" if what == "HTTP" else ""
            raise SystemExit(f"error: cannot listen on {address} for {what}: {problem}; "
                             f"choose another address with {flag} HOST:PORT{off}")


def run(data_dir: Path, listen: str, db_url: str | None, settings: Settings, tls: TLSOptions = TLSOptions(),
        http_listen: str = "127.0.0.1:8080") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    asyncio.run(serve(data_dir, listen, db_url, settings, tls=tls, http_listen=http_listen))
