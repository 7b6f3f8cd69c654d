"""What one HTTP client may cost the controller: connections, time, body bytes, log lines.

- Connections: at most `max_connections` open at once (never more than the process's file limit
  allows); one more is closed as soon as it is accepted.
- Time: a request's head must arrive within `header_timeout` of the connection opening (slow or
  silent clients), an idle keep-alive connection closes after `idle_timeout`, and a body must arrive
  within `body_timeout`.
- Bodies: one body at most `max_body` bytes (a declared larger one is refused before any byte is
  read), and all bodies being read or forwarded at once at most `body_budget` bytes.

aiohttp has no header timeout before 3.14 and no connection cap, so the listener is ours: a protocol
factory in front of aiohttp's, used by `GuardedSite`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("fleet.controller.http")

MIB = 1024 * 1024
RESERVED_FDS = 256  # for the database, gRPC connections, engines' sockets: HTTP never takes the last ones


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 1000
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    body_timeout: float = 60.0
    max_body: int = 64 * MIB
    body_budget: int = 256 * MIB

    def connections_allowed(self) -> int:
        """max_connections, lowered to what the open-file limit leaves after RESERVED_FDS."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(16, min(self.max_connections, soft - RESERVED_FDS))


def raise_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (systemd units often start at 1024); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


# ---------------------------------------------------------------- connections and header time


class _Refuse(asyncio.Protocol):
    """A connection over the cap: a short 503 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed if the first request's head is not in within the timeout."""

    def __init__(self, guard: Guard, inner: Any) -> None:
        self.guard, self.inner = guard, inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""
        # Counted from the moment asyncio accepted the socket (one accept burst creates many protocols before
        # any connection_made); given back when the connection ends, or when it never began (a TLS handshake
        # that failed never calls connection_made or connection_lost).
        guard.open += 1
        self.counted = [True]
        weakref.finalize(self, Guard.release, guard, self.counted)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(self.guard.limits.header_timeout, self._too_slow)
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.timer = None
        self.guard.timed_out += 1
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            # Look for the end of the first head across packet boundaries; later requests on the same
            # connection are aiohttp's keep-alive timeout's business.
            seen = self.tail + data[:65536]
            if b"\r\n\r\n" in seen:
                self.timer.cancel()
                self.timer = None
            self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        Guard.release(self.guard, self.counted)
        if self.timer is not None:
            self.timer.cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Guard:
    """The protocol factory of one listener: aiohttp's, behind the connection cap and the header timeout."""

    def __init__(self, factory: Any, limits: HttpLimits) -> None:
        self.factory, self.limits = factory, limits
        self.cap = limits.connections_allowed()
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._last_warning = 0.0

    @staticmethod
    def release(guard: Guard, counted: list[bool]) -> None:
        if counted[0]:
            counted[0] = False
            guard.open -= 1

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.cap:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_warning > 10.0:
                self._last_warning = now
                log.warning("HTTP: %d connections open, the cap (--http-max-connections); refused %d so far",
                            self.open, self.refused)
            return _Refuse()
        return _Guarded(self, self.factory())


class GuardedSite(web.BaseSite):
    """A TCP listener like web.TCPSite whose connections go through a Guard."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: HttpLimits,
                 ssl_context: Any = None) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.host, self.port, self.limits = host, port, limits
        self.guard: Guard | None = None

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.guard = Guard(server, self.limits)
        self._server = await asyncio.get_running_loop().create_server(
            self.guard, self.host, self.port, ssl=self._ssl_context, backlog=self._backlog, reuse_address=True)


# ---------------------------------------------------------------- bodies


class BodyRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyBudget:
    """Bytes of request bodies held at once, across every request of one HTTP app."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.held = 0
        self.refused = 0

    def take(self, n: int) -> None:
        if self.held + n > self.limits.body_budget:
            self.refused += 1
            raise BodyRefused(503, f"the controller is reading {self.held // MIB} MiB of other requests' bodies "
                                   f"(--http-body-budget {self.limits.body_budget // MIB} MiB); try again shortly")
        self.held += n

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)

    async def read(self, request: web.Request) -> bytes:
        """The whole body, within the size, budget and time limits; the caller `give`s len(body) back when done."""
        limit = self.limits.max_body
        if request.content_length is not None and request.content_length > limit:
            raise BodyRefused(413, f"request body of {request.content_length} bytes; at most {limit} "
                                   "(--http-max-body)")
        body = bytearray()
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while chunk := await request.content.readany():
                    if len(body) + len(chunk) > limit:
                        raise BodyRefused(413, f"request body over {limit} bytes (--http-max-body)")
                    self.take(len(chunk))
                    body += chunk
        except TimeoutError:
            self.give(len(body))
            raise BodyRefused(408, f"request body not received within {self.limits.body_timeout:.0f}s "
                                   "(--http-body-timeout)") from None
        except BaseException:
            self.give(len(body))
            raise
        return bytes(body)
