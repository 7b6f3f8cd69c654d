"""Who may read the capacity page (`/`), `/api/capacity` and `/metrics`: the admin token or a viewer key.

These reveal node names, GPU UUIDs, replica endpoints and cordon reasons, and the HTTP port is the one
applications reach for the gateway, so nothing is answered to an anonymous caller. The credential comes as
`Authorization: Bearer <key>` (curl, Prometheus' `authorization` setting) or as the password of HTTP Basic
auth, so a browser asks for it once and sends it with the page's own requests.
"""

from __future__ import annotations

import base64
import binascii
import time

from aiohttp import web

from fleet.controller.app import access
from fleet.controller.app.controller import Controller
from fleet.controller.store.apikeys import VIEWER

CHALLENGE = {"WWW-Authenticate": 'Basic realm="fleet (admin token or viewer key as the password)", charset="UTF-8"'}
MAX_CREDENTIAL = 512


def presented(request: web.Request) -> str:
    """The credential in the Authorization header: a bearer token, or Basic auth's password."""
    value = request.headers.get("Authorization", "")[: MAX_CREDENTIAL * 2]
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(rest.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return ""
    return ""


class Readers:
    """Checks readers' credentials; viewer keys found good are remembered a few seconds (revokes clear them)."""

    def __init__(self, ctl: Controller, ttl: float = 5.0) -> None:
        self.ctl, self.ttl = ctl, ttl
        self.good: dict[str, float] = {}
        self.epoch = ctl.keys_epoch

    def allowed(self, credential: str) -> bool:
        if not credential or len(credential) > MAX_CREDENTIAL:
            return False
        if self.ctl.creds.is_admin(credential):
            return True
        now = time.monotonic()
        if self.epoch != self.ctl.keys_epoch:
            self.good.clear()
            self.epoch = self.ctl.keys_epoch
        if now - self.good.get(credential, -self.ttl) < self.ttl:
            return True
        if not access.apikey_valid(self.ctl, credential, VIEWER):
            return False
        if len(self.good) > 10_000:
            self.good.clear()
        self.good[credential] = now
        return True

    def refusal(self, request: web.Request) -> web.Response | None:
        credential = presented(request)
        if self.allowed(credential):
            return None
        why = ("this page needs the admin token or a viewer key (`fleet apikey create --role viewer`), as "
               "`Authorization: Bearer <key>` or as the password of HTTP Basic auth")
        if credential:
            why = "credential rejected: " + why
        return web.json_response({"error": {"code": "unauthenticated", "message": why}}, status=401, headers=CHALLENGE)


READERS = web.AppKey("fleet.readers", Readers)


def readers(app: web.Application, ctl: Controller) -> Readers:
    """The app's one Readers (page and metrics share its memory of good keys)."""
    if READERS not in app:
        app[READERS] = Readers(ctl)
    return app[READERS]
