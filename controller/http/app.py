"""The controller's HTTP app (aiohttp, on grpc.aio's loop): OpenAI gateway, /metrics, capacity page, admin API."""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from fleet.controller.app.controller import Controller
from fleet.controller.http import admin, metrics, page
from fleet.controller.http.gateway import GATEWAY, MAX_BODY, ROUTES, Gateway

log = logging.getLogger("fleet.controller.gateway")

CTL = web.AppKey("fleet.ctl", Controller)


def make_app(ctl: Controller, connect_timeout: float = 5.0) -> web.Application:
    """The controller's HTTP app: OpenAI gateway, /metrics, the capacity page and the admin API."""
    app = web.Application(client_max_size=MAX_BODY)
    app[CTL] = ctl
    gw = Gateway(ctl, connect_timeout=connect_timeout)
    app[GATEWAY] = gw
    app.on_startup.append(gw.start)
    app.on_cleanup.append(gw.close)
    app.router.add_get("/v1/models", gw.models)
    app.router.add_get("/v1/models/{model}", gw.model)
    for path in ROUTES:
        app.router.add_post(path, gw.proxy)
    metrics.setup(app, ctl)
    page.setup(app, ctl)
    admin.setup(app, ctl)
    return app


def split_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080", "[::1]:8080", ":8080" (every interface) -> host, port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--http-listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_http(ctl: Controller, listen: str, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve `make_app(ctl)` on `listen` in the running loop; the caller awaits `runner.cleanup()` on stop.

    `ssl_context` (e.g. from the controller's TLS certificate) makes it HTTPS; None serves plain HTTP.
    """
    try:
        host, port = split_listen(listen)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    runner = web.AppRunner(make_app(ctl))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError as e:
        await runner.cleanup()
        raise SystemExit(f"error: cannot listen on {listen} for HTTP: {e.strerror or e}; choose another address "
                         "with --http-listen HOST:PORT, or '' to turn HTTP off") from None
    log.info("HTTP (OpenAI gateway, /metrics, capacity page) on %s://%s", "https" if ssl_context else "http", listen)
    return runner
