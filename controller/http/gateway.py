"""The OpenAI-compatible gateway, and the controller's HTTP app around it (aiohttp, on grpc.aio's loop).

Applications call one address with a client key and a deployment name as `model`; the gateway picks a
healthy replica (least outstanding requests), swaps the client key for the replica's engine key, and
streams the engine's answer back byte for byte (SSE included). A replica that refuses the connection is
skipped for the next one; no routable replica is a 503 the OpenAI clients understand.

Mounted by the HTTP app (fleet.controller.http.app) beside /metrics and the capacity page. Bodies are read
within the app's limits (fleet.controller.http.limits): size, total bytes held at once, time.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from fleet.controller.app import access
from fleet.controller.app.controller import Controller
from fleet.controller.core.routing import ReplicaView, Target, pick, routable
from fleet.controller.http import metrics
from fleet.controller.http.limits import BodyBudget, BodyRefused
from fleet.controller.store.schema import ReplicaRow

log = logging.getLogger("fleet.controller.http.gateway")

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
UNKNOWN = "(unknown)"
# RFC 9110 hop-by-hop headers are per connection; the rest go through unchanged.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade"}
# Authorization is replaced by the replica's key; dropping Accept-Encoding keeps engine bodies uncompressed
# so SSE events are flushed as they come instead of waiting on a compressor.
SKIP_REQUEST = HOP_BY_HOP | {"host", "authorization", "content-length", "accept-encoding"}
SKIP_RESPONSE = HOP_BY_HOP | {"content-length", "server", "date"}

def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: the official clients read `error.message` into their exception."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str, code: str, param: str | None = None) -> web.Response:
    return web.json_response(error_body(message, type_, code, param), status=status)


def bearer(request: web.Request) -> str:
    value = request.headers.get("Authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else ""


class Gateway:
    """Routing state of one controller: requests in flight and sent, per replica."""

    def __init__(self, ctl: Controller, budget: BodyBudget, connect_timeout: float = 5.0,
                 read_timeout: float = 600.0) -> None:
        self.ctl = ctl
        self.budget = budget
        self.outstanding: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self.session: aiohttp.ClientSession | None = None
        # Client keys known good, by key -> checked-at (monotonic), so the hot path reads the store once per
        # request, not twice. A revoke bumps ctl.keys_epoch and empties this at once; the TTL bounds any other path.
        self.key_ttl = 5.0
        self.good_keys: dict[str, float] = {}
        self.keys_epoch = ctl.keys_epoch

    def setup(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        for path in ROUTES:
            app.router.add_post(path, self.proxy)

    async def start(self, _app: web.Application) -> None:
        # auto_decompress off: bytes and Content-Encoding travel together, untouched
        self.session = aiohttp.ClientSession(timeout=self.timeout, auto_decompress=False,
                                             connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0))

    async def close(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def targets(self, deployment: str) -> list[Target]:
        rows = self.ctl.store.replicas(deployment=deployment)
        views = (ReplicaView(r.id, r.node, self._gang_state(r) if r.nodes > 1 else r.state, r.desired, r.endpoint,
                             r.api_key) for r in rows)
        return routable(views, self.ctl.alive)

    def _gang_state(self, r: ReplicaRow) -> str:
        """A replica over several nodes serves only while every part runs on a live node: the main alone would
        fail the request (its rpc-servers or followers hold the other layers)."""
        alive = self.ctl.alive
        for p in self.ctl.store.parts(replica=r.id):
            if p.node not in alive:
                return "unknown"
            if p.state not in ("starting", "healthy"):
                return "starting"
        return r.state

    def client_refusal(self, request: web.Request) -> web.Response | None:
        key = bearer(request)
        if not key:
            return error_response(401, "no API key: send `Authorization: Bearer <key>` "
                                  "(an operator creates one with `fleet apikey create`)",
                                  "invalid_request_error", "invalid_api_key")
        now = time.monotonic()
        if self.keys_epoch != self.ctl.keys_epoch:
            self.good_keys.clear()
            self.keys_epoch = self.ctl.keys_epoch
        if now - self.good_keys.get(key, -self.key_ttl) < self.key_ttl:
            return None
        if not access.apikey_valid(self.ctl, key):
            return error_response(401, "API key rejected (unknown or revoked)", "invalid_request_error",
                                  "invalid_api_key")
        if len(self.good_keys) > 10_000:
            self.good_keys.clear()  # bound memory; the next requests simply re-check
        self.good_keys[key] = now
        return None

    # ---- /v1/models
    def routable_models(self) -> list[dict[str, Any]]:
        return [{"id": d.name, "object": "model", "created": int(d.created_at), "owned_by": "fleet"}
                for d in self.ctl.store.deployments() if self.targets(d.name)]

    async def models(self, request: web.Request) -> web.Response:
        if (refused := self.client_refusal(request)) is not None:
            return refused
        return web.json_response({"object": "list", "data": self.routable_models()})

    async def model(self, request: web.Request) -> web.Response:
        if (refused := self.client_refusal(request)) is not None:
            return refused
        name = request.match_info["model"]
        found = [m for m in self.routable_models() if m["id"] == name]
        if not found:
            return error_response(404, f"the model {name!r} does not exist or has no healthy replica",
                                  "invalid_request_error", "model_not_found", "model")
        return web.json_response(found[0])

    # ---- completions, chat, embeddings
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        if (refused := self.client_refusal(request)) is not None:
            return refused
        try:
            body = await self.budget.read(request)
        except BodyRefused as e:
            return self._answer(UNKNOWN, started, error_response(
                e.status, e.message, "invalid_request_error", "request_too_large" if e.status == 413 else "busy"))
        try:
            return await self._route(request, body, started)
        finally:
            self.budget.give(len(body))

    async def _route(self, request: web.Request, body: bytes, started: float) -> web.StreamResponse:
        try:
            model = json.loads(body).get("model")
        except (ValueError, AttributeError, RecursionError):  # RecursionError: nested deeper than json can go
            model = None
        if not isinstance(model, str) or not model:
            return self._answer(UNKNOWN, started, error_response(
                400, "the request body must be a JSON object with a `model` (a deployment name)",
                "invalid_request_error", "invalid_request", "model"))
        targets = self.targets(model)
        # A deployment without replica rows may still exist (all removed or not yet placed): only then ask.
        if not targets and self.ctl.store.get_deployment(model) is None:
            names = ", ".join(d.name for d in self.ctl.store.deployments()) or "none"
            return self._answer(UNKNOWN, started, error_response(
                404, f"the model {model!r} does not exist; deployments: {names}", "invalid_request_error",
                "model_not_found", "model"))

        tried: set[str] = set()
        while (target := pick(targets, self.outstanding, self.sent, tried)) is not None:
            tried.add(target.id)
            self._begin(model, target)
            try:
                return await self._forward(request, body, model, target, started)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                # Nothing reached the engine: safe to send the same request to another replica.
                log.warning("replica %s of %s at %s: cannot connect (%s); trying another", target.id, model,
                            target.endpoint, e)
                metrics.GATEWAY_ERRORS.labels(model, "connect").inc()
            finally:
                self._end(model, target)
        reason = ("every healthy replica refused the connection" if tried
                  else "no healthy replica (it may be starting, stopped, draining, on an offline node, or "
                        "on a declared node, where nothing is launched)")
        metrics.GATEWAY_ERRORS.labels(model, "no_replica").inc()
        return self._answer(model, started, error_response(
            503, f"deployment {model!r} cannot take requests now: {reason}; see `fleet deployment describe {model}`",
            "service_unavailable", "no_healthy_replica"))

    def _begin(self, model: str, target: Target) -> None:
        self.outstanding[target.id] = self.outstanding.get(target.id, 0) + 1
        self.sent[target.id] = self.sent.get(target.id, 0) + 1
        metrics.GATEWAY_OUTSTANDING.labels(model).inc()

    def _end(self, model: str, target: Target) -> None:
        left = self.outstanding.get(target.id, 1) - 1
        if left > 0:
            self.outstanding[target.id] = left
        else:
            self.outstanding.pop(target.id, None)
        metrics.GATEWAY_OUTSTANDING.labels(model).dec()

    def _answer(self, deployment: str, started: float, resp: web.StreamResponse) -> web.StreamResponse:
        metrics.GATEWAY_REQUESTS.labels(deployment, str(resp.status)).inc()
        metrics.GATEWAY_SECONDS.labels(deployment).observe(time.monotonic() - started)
        return resp

    async def _forward(self, request: web.Request, body: bytes, model: str, target: Target,
                       started: float) -> web.StreamResponse:
        assert self.session is not None, "the app was not started"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in SKIP_REQUEST}
        headers["Authorization"] = f"Bearer {target.api_key}"
        url = target.endpoint.rstrip("/") + request.path_qs
        async with self.session.post(url, data=body, headers=headers) as upstream:
            if upstream.status in (401, 403):
                # The client's key was fine; the engine refused ours. That is fleet's fault, not the caller's.
                metrics.GATEWAY_ERRORS.labels(model, "upstream_auth").inc()
                log.error("replica %s of %s refused the controller's engine key (HTTP %d)", target.id, model,
                          upstream.status)
                return self._answer(model, started, error_response(
                    502, f"replica {target.id} of {model!r} refused the engine key fleet gave it",
                    "server_error", "upstream_auth"))
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in SKIP_RESPONSE:
                    resp.headers.add(k, v)
            resp.headers["X-Fleet-Replica"] = target.id
            if upstream.content_length is not None:
                resp.content_length = upstream.content_length
            await resp.prepare(request)
            try:
                # iter_any: each chunk as it arrives, so SSE events reach the client one by one
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                # The engine died mid-answer; the status line is already sent, so all we can do is cut it short.
                metrics.GATEWAY_ERRORS.labels(model, "upstream").inc()
                log.warning("replica %s of %s broke off its answer: %s", target.id, model, e)
            except ConnectionResetError:
                pass  # the client went away; nothing to tell anyone
            if upstream.status >= 500:
                metrics.GATEWAY_ERRORS.labels(model, "upstream").inc()
            return self._answer(model, started, resp)


GATEWAY = web.AppKey("fleet.gateway", Gateway)
