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
from fleet.common.private import private_dir, private_file
from fleet.controller.app import reconcile
from fleet.controller.app.access import ensure_token
from fleet.controller.app.controller import Controller, Settings
from fleet.controller.app.credentials import Credentials
from fleet.controller.http.app import start_http
from fleet.controller.http.limits import HttpLimits, raise_file_limit
from fleet.controller.listen import listen_problem
from fleet.controller.log_repeats import quiet_repeats
from fleet.controller.rpc.server import build_server, check_plaintext, server_credentials
from fleet.controller.store.db import sqlite_url
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.repository import Store
from fleet.controller.store.vault import DatabaseCA
from fleet.controller.tls import TLSOptions

log = logging.getLogger("fleet.controller")

__all__ = ["HttpLimits", "Settings", "TLSOptions", "run", "serve"]  # what `fleet controller run` needs

# What the data dir holds that nobody else may read: the database (engine API keys, hashes), its WAL and
# shared memory, the token files, TLS private keys.
SECRET_FILES = ("fleet.db", "fleet.db-wal", "fleet.db-shm", "fleet.db-journal", "join-token", "admin-token",
                "tls/ca.key", "tls/server.key", "tls/ca.crt", "tls/server.crt")


def secure_data_dir(data_dir: Path, sqlite: bool) -> None:
    """0700 on the data dir and its tls/, 0600 on every secret in them, at every start (not only the first)."""
    private_dir(data_dir)
    if (data_dir / "tls").is_dir():
        private_dir(data_dir / "tls")
    if sqlite:
        # SQLite gives the WAL and shared-memory files the database file's mode: create it 0600 first.
        private_file(data_dir / "fleet.db", create=True)
    for name in SECRET_FILES:
        private_file(data_dir / name)


def on_loop(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """The job as a coroutine: APScheduler runs plain functions in a thread pool, beside the RPC handlers on
    the event loop, and two threads driving one drain placed two replacements. Every job touches the same
    Controller state (its asyncio queues included), so every job runs on the loop, one at a time."""

    async def job() -> None:
        fn()

    job.__name__ = getattr(fn, "__name__", "job")
    return job


async def flush_heartbeats(ctl: Controller) -> None:
    """The batch is taken on the loop; its write runs in a thread. At 10,000 nodes it is ~2,000 rows a second,
    and the UPDATE needs no controller state, only the database (which serialises writers itself)."""
    beats, usage = ctl.liveness.take_dirty()
    if beats or usage:
        await asyncio.to_thread(ctl.store.flush_heartbeats, beats, usage)


def schedule_jobs(ctl: Controller, settings: Settings) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    # other controllers' writes (and nothing at all when this one is alone: one indexed read)
    scheduler.add_job(on_loop(ctl.store.sync), "interval", seconds=settings.sync_interval, id="change-feed",
                      max_instances=1, coalesce=True)
    scheduler.add_job(on_loop(ctl.renew_lease), "interval", seconds=max(0.5, settings.lease_ttl / 5),
                      id="duties-lease", max_instances=1, coalesce=True)
    scheduler.add_job(on_loop(ctl.refresh_credentials), "interval", seconds=2.0, id="credentials",
                      max_instances=1, coalesce=True)
    scheduler.add_job(partial(flush_heartbeats, ctl), "interval", seconds=settings.flush_interval,
                      id="flush-heartbeats", max_instances=1, coalesce=True)
    scheduler.add_job(on_loop(ctl.check_liveness), "interval", seconds=min(1.0, settings.heartbeat_interval),
                      id="offline-nodes", max_instances=1, coalesce=True)
    scheduler.add_job(on_loop(partial(reconcile.tick, ctl)), "interval", seconds=1.0, id="reconcile",
                      max_instances=1, coalesce=True)
    return scheduler


async def serve(data_dir: Path, listen: str, db_url: str | None, settings: Settings,
                ready: asyncio.Event | None = None, tls: TLSOptions = TLSOptions(),
                http_listen: str = "127.0.0.1:8080", http_limits: HttpLimits = HttpLimits()) -> None:
    check_plaintext(listen, tls)  # bad flags first, then ports, then anything written
    check_ports(listen, http_listen)
    secure_data_dir(data_dir, sqlite=db_url is None)
    store = Store(db_url or sqlite_url(data_dir))
    # The CA lives in the database, so every controller on it is one control plane to agents and the CLI.
    creds_tls, fingerprint = server_credentials(data_dir, listen, tls, DatabaseCA(store))
    secure_data_dir(data_dir, sqlite=db_url is None)  # a TLS dir created just now
    ensure_token(store, data_dir, "join", fingerprint)
    admin = ensure_token(store, data_dir, "admin")
    ctl = Controller(store, settings, Credentials(admin_hashes={token_hash(admin)}), data_dir)
    ctl.refresh_credentials()  # every admin token in the store, this controller's own file included
    ctl.renew_lease()  # alone on its database, a controller holds the duties from its first second
    warm = ctl.snapshot()  # built before serving: at 10,000 nodes the first build takes seconds, not the first place
    warm.index  # noqa: B018 - placement's groups and free-memory index, built now too

    # HTTP first: if its port was taken meanwhile, no gRPC server exists yet to be torn down (a grpc.aio
    # server collected after the loop closed prints a traceback from its __del__).
    http = None
    try:
        http = await start_http(ctl, http_listen, limits=http_limits) if http_listen else None
        server = build_server(ctl, listen, creds_tls)
    except SystemExit:
        if http is not None:
            await http.cleanup()
        ctl.lease.release()  # the duties go to another controller at once, not after the lease's TTL
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
    ctl.lease.release()  # a clean stop hands the duties over at once


def check_ports(listen: str, http_listen: str) -> None:
    """One clear line, before anything is written or started, when a port is not ours to take."""
    for address, what, flag in ((listen, "gRPC", "--listen"), (http_listen, "HTTP", "--http-listen")):
        problem = listen_problem(address) if address else None
        if problem:
            off = ", or '' to turn HTTP off" if what == "HTTP" else ""
            raise SystemExit(f"error: cannot listen on {address} for {what}: {problem}; "
                             f"choose another address with {flag} HOST:PORT{off}")


def run(data_dir: Path, listen: str, db_url: str | None, settings: Settings, tls: TLSOptions = TLSOptions(),
        http_listen: str = "127.0.0.1:8080", http_limits: HttpLimits = HttpLimits()) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    # Errors a client can cause over and over (failed accepts at the file limit, broken requests, refused
    # joins): the first of each kind per 10 s is logged, with a count of the rest.
    quiet_repeats("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access", "fleet.controller.refusals")
    raise_file_limit()
    asyncio.run(serve(data_dir, listen, db_url, settings, tls=tls, http_listen=http_listen, http_limits=http_limits))
