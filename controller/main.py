"""`fleet controller run`: the grpc.aio server, the store, the tokens and the scheduled jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from pathlib import Path

import grpc
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fleet.controller.auth import AuthInterceptor, Credentials
from fleet.controller.service import AgentService, Controller, FleetService, Settings
from fleet.controller.store import Store, sqlite_url, token_hash
from fleet.proto import fleet_pb2_grpc as pbg

log = logging.getLogger("fleet.controller")

MAX_MESSAGE = 4 * 1024 * 1024


def write_secret(path: Path, value: str) -> None:
    """Create a 0600 file atomically; never widen permissions on the way."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)


def ensure_token(store: Store, data_dir: Path, kind: str) -> str:
    """The token in DATA_DIR/<kind>-token, created on first start and known (hashed) to the store."""
    path = data_dir / f"{kind}-token"
    if path.exists():
        token = path.read_text().strip()
    else:
        token = secrets.token_urlsafe(32)
        write_secret(path, token)
        log.info("wrote a new %s token to %s", kind, path)
    if not store.token_valid(kind, token):
        store.add_token(kind, token)
    return token


async def serve(data_dir: Path, listen: str, db_url: str | None, settings: Settings,
                ready: asyncio.Event | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store(db_url or sqlite_url(data_dir))
    ensure_token(store, data_dir, "join")
    admin = ensure_token(store, data_dir, "admin")
    creds = Credentials(admin_hashes={token_hash(admin)})
    ctl = Controller(store, settings, creds)

    server = grpc.aio.server(
        interceptors=[AuthInterceptor(creds)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE)],
    )
    pbg.add_AgentServicer_to_server(AgentService(ctl), server)
    pbg.add_FleetServicer_to_server(FleetService(ctl), server)
    try:
        server.add_insecure_port(listen)
    except RuntimeError as e:
        raise SystemExit(
            f"error: cannot listen on {listen}: {e} (is another controller running? use --listen)") from None
    await server.start()

    scheduler = AsyncIOScheduler()
    scheduler.add_job(ctl.flush, "interval", seconds=settings.flush_interval, id="flush-heartbeats",
                      max_instances=1, coalesce=True)
    scheduler.add_job(ctl.check_liveness, "interval", seconds=min(1.0, settings.heartbeat_interval),
                      id="offline-nodes", max_instances=1, coalesce=True)
    scheduler.start()
    log.info("controller listening on %s, data in %s, heartbeat %.1fs, offline after %.1fs",
             listen, data_dir, settings.heartbeat_interval, settings.offline_after)
    print(f"fleet controller listening on {listen} (data dir {data_dir})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping")
    scheduler.shutdown(wait=False)
    await server.stop(grace=2)
    ctl.flush()


def run(data_dir: Path, listen: str, db_url: str | None, settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    asyncio.run(serve(data_dir, listen, db_url, settings))
