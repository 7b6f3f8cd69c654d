"""The controller's HTTP app (aiohttp, on grpc.aio's loop): OpenAI gateway, and for authenticated readers
/metrics and the capacity page. API keys are managed over the Admin gRPC service, not here."""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from fleet.controller.app.controller import Controller
from fleet.controller.http import metrics, page
from fleet.controller.http.gateway import GATEWAY, Gateway
from fleet.controller.http.limits import BodyBudget, GuardedSite, HttpLimits

log = logging.getLogger("fleet.controller.gateway")

CTL = web.AppKey("fleet.ctl", Controller)
BUDGET = web.AppKey("fleet.body_budget", BodyBudget)


def make_app(ctl: Controller, connect_timeout: float = 5.0, limits: HttpLimits = HttpLimits()) -> web.Application:
    """The controller's HTTP app: OpenAI gateway, /metrics and the capacity page."""
    # Bodies are read by BodyBudget.read (size, total and time limits); aiohttp's own cap backs it up.
    app = web.Application(client_max_size=limits.max_body)
    app[CTL] = ctl
    budget = BodyBudget(limits)
    app[BUDGET] = budget
    gw = Gateway(ctl, budget, connect_timeout=connect_timeout)
    app[GATEWAY] = gw
    app.on_startup.append(gw.start)
    app.on_cleanup.append(gw.close)
    gw.setup(app)
    metrics.setup(app, ctl)
    page.setup(app, ctl)
    return app


def split_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080", "[::1]:8080", ":8080" (every interface) -> host, port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--http-listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_http(ctl: Controller, listen: str, ssl_context: ssl.SSLContext | None = None,
                     limits: HttpLimits = HttpLimits()) -> web.AppRunner:
    """Serve `make_app(ctl)` on `listen` in the running loop; the caller awaits `runner.cleanup()` on stop.

    `ssl_context` (e.g. from the controller's TLS certificate) makes it HTTPS; None serves plain HTTP.
    """
    try:
        host, port = split_listen(listen)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    # lingering_time: after answering a body it refused, aiohttp reads on for this long before it closes
    # (so the client sees the answer); its default of 10 s would let a slow client hold the connection.
    runner = web.AppRunner(make_app(ctl, limits=limits), keepalive_timeout=limits.idle_timeout,
                           lingering_time=min(2.0, limits.body_timeout))
    await runner.setup()
    site = GuardedSite(runner, host, port, limits, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise SystemExit(f"error: cannot listen on {listen} for HTTP: {e.strerror or e}; choose another address "
                         "with --http-listen HOST:PORT, or '' to turn HTTP off") from None
    assert site.guard is not None
    log.info("HTTP (OpenAI gateway, /metrics, capacity page) on %s://%s: at most %d connections, %d MiB per "
             "body, %d MiB of bodies at once", "https" if ssl_context else "http", listen, site.guard.cap,
             limits.max_body >> 20, limits.body_budget >> 20)
    return runner
