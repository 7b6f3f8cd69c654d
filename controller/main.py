"""`fleet controller run`: the grpc.aio server, the store, the tokens and the scheduled jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fleet.agent.trust import split_token
from fleet.cli import systemd_notify
from fleet.controller.admin_service import AdminService
from fleet.controller.auth import AuthInterceptor, Credentials
from fleet.controller.gateway import start_http
from fleet.controller.service import AgentService, Controller, FleetService, Settings
from fleet.controller.store import Store, sqlite_url, token_hash
from fleet.controller.tls import is_loopback, load_or_create
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


def ensure_token(store: Store, data_dir: Path, kind: str, fingerprint: str = "") -> str:
    """The token in DATA_DIR/<kind>-token, created on first start and known (hashed) to the store.

    A join token is written as `<secret>.<CA fingerprint>` so agents can verify this controller.
    """
    path = data_dir / f"{kind}-token"
    secret = split_token(path.read_text())[0] if path.exists() else secrets.token_urlsafe(32)
    text = f"{secret}.{fingerprint}" if fingerprint else secret
    if not path.exists() or path.read_text().strip() != text:
        write_secret(path, text)
        log.info("wrote the %s token to %s", kind, path)
    if not store.has_token(kind, secret):  # known but expired or revoked stays refused
        store.add_token(kind, secret)
    return secret


@dataclass(frozen=True)
class TLSOptions:
    insecure: bool = False  # plaintext: only on a loopback address
    sans: tuple[str, ...] = ()
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


def server_credentials(data_dir: Path, listen: str, opts: TLSOptions) -> tuple[grpc.ServerCredentials | None, str]:
    if opts.insecure:
        if not is_loopback(listen):
            raise SystemExit(f"error: --insecure (plaintext) is allowed only on a loopback address, not {listen}")
        return None, ""
    host = listen.rsplit(":", 1)[0].strip("[]")
    try:
        tls = load_or_create(data_dir / "tls", [host, *opts.sans], opts.cert, opts.key, opts.ca)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: TLS: {e}") from None
    return grpc.ssl_server_credentials([(tls.key_pem, tls.cert_chain_pem)]), tls.fingerprint


async def serve(data_dir: Path, listen: str, db_url: str | None, settings: Settings,
                ready: asyncio.Event | None = None, tls: TLSOptions = TLSOptions(),
                http_listen: str = "127.0.0.1:8080") -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds_tls, fingerprint = server_credentials(data_dir, listen, tls)
    store = Store(db_url or sqlite_url(data_dir))
    ensure_token(store, data_dir, "join", fingerprint)
    admin = ensure_token(store, data_dir, "admin")
    creds = Credentials(admin_hashes={token_hash(admin)})
    ctl = Controller(store, settings, creds)
    ctl.data_dir = data_dir

    server = grpc.aio.server(
        interceptors=[AuthInterceptor(creds)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE),
                 # agents ping every 10 s to notice a dead controller; do not punish them for it
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
                 ("grpc.http2.max_ping_strikes", 0)],
    )
    pbg.add_AgentServicer_to_server(AgentService(ctl), server)
    pbg.add_FleetServicer_to_server(FleetService(ctl), server)
    pbg.add_AdminServicer_to_server(AdminService(ctl), server)
    try:
        if creds_tls is None:
            server.add_insecure_port(listen)
        else:
            server.add_secure_port(listen, creds_tls)
    except RuntimeError as e:
        raise SystemExit(
            f"error: cannot listen on {listen}: {e} (is another controller running? use --listen)") from None
    await server.start()
    try:
        http = await start_http(ctl, http_listen) if http_listen else None
    except OSError as e:
        await server.stop(grace=0)
        raise SystemExit(f"error: cannot serve HTTP on {http_listen}: {e} (use --http-listen, or '' for off)") from None

    scheduler = AsyncIOScheduler()
    scheduler.add_job(ctl.flush, "interval", seconds=settings.flush_interval, id="flush-heartbeats",
                      max_instances=1, coalesce=True)
    scheduler.add_job(ctl.check_liveness, "interval", seconds=min(1.0, settings.heartbeat_interval),
                      id="offline-nodes", max_instances=1, coalesce=True)
    scheduler.add_job(ctl.reconciler.tick, "interval", seconds=1.0, id="reconcile", max_instances=1, coalesce=True)
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
    systemd_notify.ready(f"listening on {listen}")
    watchdog = asyncio.create_task(systemd_notify.watchdog_loop())
    await stop.wait()
    log.info("stopping")
    systemd_notify.stopping()
    watchdog.cancel()
    if http is not None:
        await http.cleanup()
    scheduler.shutdown(wait=False)
    await server.stop(grace=2)
    ctl.flush()


def run(data_dir: Path, listen: str, db_url: str | None, settings: Settings, tls: TLSOptions = TLSOptions(),
        http_listen: str = "127.0.0.1:8080") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    asyncio.run(serve(data_dir, listen, db_url, settings, tls=tls, http_listen=http_listen))
