"""The CLI's way to the controller: find it, authenticate, make one call, turn failures into exit codes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from fleet.cli.output import EXIT_AUTH, EXIT_ERROR, EXIT_USAGE, fail

DEFAULT_CONTROLLER = "127.0.0.1:50051"
PAGE_SIZE = 200  # nodes or deployments per answer: a page is built in tens of milliseconds, beside other RPCs


def default_data_dir() -> Path:
    return Path(os.environ.get("FLEET_DATA_DIR") or Path.home() / ".local/share/fleet/controller")


def resolve_token(token: str | None, data_dir: Path | None) -> str:
    """--token, then FLEET_TOKEN, then DATA_DIR/admin-token (on the controller host)."""
    if token:
        return token
    if os.environ.get("FLEET_TOKEN"):
        return os.environ["FLEET_TOKEN"]
    path = (data_dir or default_data_dir()) / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        return ""


EXIT_FOR = {
    grpc.StatusCode.UNAVAILABLE: EXIT_USAGE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_USAGE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_USAGE,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_USAGE,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_USAGE,
}


def open_channel(address: str, data_dir: Path | None) -> grpc.Channel:
    """TLS verified against the controller's CA (FLEET_CA, or DATA_DIR/tls/ca.crt); plaintext if FLEET_INSECURE."""
    from fleet.common.trust import channel_options

    if os.environ.get("FLEET_INSECURE", "").lower() in ("1", "true", "yes"):
        return grpc.insecure_channel(address)
    default = (data_dir or default_data_dir()) / "tls" / "ca.crt"
    ca = Path(os.environ["FLEET_CA"]) if os.environ.get("FLEET_CA") else default
    try:
        root = ca.read_bytes()
    except OSError:
        fail(f"no CA to verify the controller ({ca} not found): pass --ca-file (the controller's DATA_DIR/tls/ca.crt), "
             "--data-dir on the controller host, or --insecure for a plaintext controller", EXIT_USAGE)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root), options=channel_options(True))


def _user() -> str:
    """Who is at the keyboard, recorded with cordons and drains."""
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return "unknown"


class Client:
    def __init__(self, controller: str | None = None, token: str | None = None, data_dir: Path | None = None,
                 timeout: float = 30.0) -> None:
        from fleet.proto import fleet_pb2_grpc as pbg

        raw = controller or os.environ.get("FLEET_CONTROLLER") or DEFAULT_CONTROLLER
        # several controllers on one database: any of them answers; the next is tried when one cannot be reached
        self.addresses = [a.strip() for a in raw.split(",") if a.strip()] or [DEFAULT_CONTROLLER]
        self._at = 0
        self.data_dir = data_dir
        self.token = resolve_token(token, data_dir)
        self.timeout = timeout
        self.channel = open_channel(self.address, data_dir)
        self.fleet = pbg.FleetStub(self.channel)

    @property
    def address(self) -> str:
        return self.addresses[self._at]

    def _next(self) -> None:
        from fleet.proto import fleet_pb2_grpc as pbg

        self.channel.close()
        self._at = (self._at + 1) % len(self.addresses)
        self.channel = open_channel(self.address, self.data_dir)
        self.fleet = pbg.FleetStub(self.channel)

    def pages(self, method: str, request: Any, page_size: int = PAGE_SIZE) -> Iterator[Any]:
        """Every page of a list RPC, in order (the controller answers in pages of at most 500)."""
        request.page_size = page_size
        while True:
            resp = self.call(method, request)
            yield resp
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    def call(self, method: str, request: Any, timeout: float | None = None, stub: Any = None) -> Any:
        """One RPC on the Fleet service, or on `stub` (e.g. pbg.AdminStub(self.channel)), with our metadata."""
        md: tuple[tuple[str, str], ...] = (("x-fleet-user", _user()),)
        if self.token:
            md += (("authorization", f"Bearer {self.token}"),)
        for attempt in range(len(self.addresses)):
            # a stub made on an earlier channel is made again on the current one
            target = self.fleet if stub is None else (stub if attempt == 0 else type(stub)(self.channel))
            try:
                return getattr(target, method)(request, metadata=md, timeout=timeout or self.timeout)
            except grpc.RpcError as e:
                code = e.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.UNAVAILABLE and attempt + 1 < len(self.addresses):
                    self._next()  # nothing reached that controller: the next one may answer
                    continue
                if code == grpc.StatusCode.UNAVAILABLE:
                    tried = ", ".join(self.addresses)
                    fail(f"cannot reach the controller at {tried}: is `fleet controller run` running there? "
                         "(set --controller or FLEET_CONTROLLER)", EXIT_USAGE)
                fail(e.details() or code.name, EXIT_FOR.get(code, EXIT_ERROR))  # type: ignore[attr-defined]
        raise AssertionError("unreachable")
