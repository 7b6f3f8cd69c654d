"""Admin HTTP API on the controller's HTTP app: client API keys for the gateway (`fleet apikey ...`).

Authenticated like the gRPC Fleet service: `Authorization: Bearer <admin token>` (DATA_DIR/admin-token).
FleetError codes map once here to HTTP statuses, as the gRPC edge maps them to gRPC statuses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from fleet.controller.app import access
from fleet.controller.app.controller import Controller
from fleet.controller.core.errors import FleetError
from fleet.controller.http.gateway import GATEWAY
from fleet.controller.store.apikeys import public

HTTP_STATUS = {"invalid_argument": 400, "unauthenticated": 401, "permission_denied": 403, "not_found": 404,
               "already_exists": 409, "failed_precondition": 409}

Handler = Callable[[web.Request], Awaitable[web.Response]]


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def setup(app: web.Application, ctl: Controller) -> None:
    def admin(fn: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.Response:
            value = request.headers.get("Authorization", "")
            token = value[7:].strip() if value.lower().startswith("bearer ") else ""
            if not token:
                return error(401, "unauthenticated", "no admin token: pass --token, set FLEET_TOKEN, or run on the "
                             "controller host (reads DATA_DIR/admin-token)")
            if not ctl.creds.is_admin(token):
                return error(401, "unauthenticated", "admin token rejected; use the token in the controller's "
                             "DATA_DIR/admin-token")
            try:
                return await fn(request)
            except FleetError as e:
                return error(HTTP_STATUS.get(e.code, 500), e.code, e.message)
        return wrapped

    @admin
    async def list_keys(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [public(r) for r in access.list_apikeys(ctl)]})

    @admin
    async def create_key(request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("name", ""), str):
            return error(400, "invalid_argument", 'the body must be a JSON object like {"name": "my-app"}')
        row, key = access.create_apikey(ctl, body.get("name", ""))
        return web.json_response({**public(row), "key": key}, status=201)

    @admin
    async def revoke_key(request: web.Request) -> web.Response:
        rows = access.revoke_apikey(ctl, request.match_info["ref"])
        if GATEWAY in request.app:  # the gateway must not trust a revoked key it has seen before
            request.app[GATEWAY].forget_keys()
        return web.json_response({"revoked": [public(r) for r in rows]})

    app.router.add_get("/admin/apikeys", list_keys)
    app.router.add_post("/admin/apikeys", create_key)
    app.router.add_delete("/admin/apikeys/{ref}", revoke_key)
