"""The gRPC server: TLS, the auth interceptor, the three services, message, connection and time limits."""

from __future__ import annotations

import resource
from pathlib import Path

import grpc

from fleet.controller.app.controller import Controller
from fleet.controller.rpc.admin import AdminService
from fleet.controller.rpc.agent import AgentService
from fleet.controller.rpc.auth import AuthInterceptor
from fleet.controller.rpc.fleet import FleetService
from fleet.controller.tls import SharedCA, TLSOptions, is_loopback, load_or_create
from fleet.proto import fleet_pb2_grpc as pbg

MAX_MESSAGE = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT_MS = 10_000  # a connection that has not finished TLS by then is dropped (default 120 s)


def max_connections() -> int:
    """gRPC connections allowed at once: half the open-file limit, so a flood of connections to this port
    can never take the descriptors the database, the HTTP port and the engines' health checks need."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1_000_000 if soft == resource.RLIM_INFINITY else max(16, soft // 2)


def check_plaintext(listen: str, opts: TLSOptions) -> None:
    """Plaintext only on loopback: refused before anything else is looked at (pure)."""
    if opts.insecure and not is_loopback(listen):
        raise SystemExit(f"error: --insecure (plaintext) is allowed only on a loopback address, not {listen}")


def server_credentials(data_dir: Path, listen: str, opts: TLSOptions,
                       shared: SharedCA | None = None) -> tuple[grpc.ServerCredentials | None, str]:
    """The server's TLS credentials and CA fingerprint; (None, "") for plaintext, allowed only on loopback."""
    check_plaintext(listen, opts)
    if opts.insecure:
        return None, ""
    host = listen.rsplit(":", 1)[0].strip("[]")
    try:
        tls = load_or_create(data_dir / "tls", [host, *opts.sans], opts.cert, opts.key, opts.ca, shared)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: TLS: {e}") from None
    return grpc.ssl_server_credentials([(tls.key_pem, tls.cert_chain_pem)]), tls.fingerprint


def build_server(ctl: Controller, listen: str, creds_tls: grpc.ServerCredentials | None) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(ctl.creds)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 # gRPC sets SO_REUSEPORT by default: a second controller on the same port would then start
                 # and share it with the first one instead of being refused.
                 ("grpc.so_reuseport", 0),
                 ("grpc.max_send_message_length", MAX_MESSAGE),
                 # agents ping every 10 s to notice a dead controller; do not punish them for it
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
                 ("grpc.http2.max_ping_strikes", 0),
                 ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
                 ("grpc.max_allowed_incoming_connections", max_connections())],
    )
    pbg.add_AgentServicer_to_server(AgentService(ctl), server)
    pbg.add_FleetServicer_to_server(FleetService(ctl), server)
    pbg.add_AdminServicer_to_server(AdminService(ctl), server)
    try:
        if creds_tls is None:
            server.add_insecure_port(listen)
        else:
            server.add_secure_port(listen, creds_tls)
    except RuntimeError:
        # gRPC's own text only says to set GRPC_VERBOSITY; main checks the port first, so this is a race.
        raise SystemExit(f"error: cannot listen on {listen} for gRPC: the address is in use or not on this "
                         "machine; choose another address with --listen HOST:PORT") from None
    return server
