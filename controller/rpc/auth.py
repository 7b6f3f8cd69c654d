"""Who may call what: every RPC is authenticated before it reaches a servicer.

- `/fleet.v1.Fleet/*`         admin token            (authorization: Bearer <admin token>)
- `/fleet.v1.Admin/*`         admin token            (join tokens, node removal)
- `/fleet.v1.Agent/Session`   node credential        (authorization: Bearer <cred>, x-fleet-node: <name>)
- `/fleet.v1.Agent/Register`  join token, in the request itself (checked by the servicer)
Anything else is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from fleet.common.trust import NODE_UNKNOWN, REFUSAL_KEY
from fleet.controller.app.credentials import Credentials
from fleet.controller.rpc.decoding import strict_decoding

REGISTER = "/fleet.v1.Agent/Register"
SESSION = "/fleet.v1.Agent/Session"
FLEET_PREFIX = "/fleet.v1.Fleet/"
ADMIN_PREFIX = "/fleet.v1.Admin/"
# Our own metadata is a bearer token (~45 chars), a node name and a user name; 8 KiB is generous and
# keeps hostile headers from being hashed and compared on every call.
MAX_METADATA = 8 * 1024


def metadata_dict(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


def bearer(md: dict[str, str]) -> str:
    value = md.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else ""


def refusal(method: str, md: dict[str, str], creds: Credentials) -> str | None:
    """Why this call is refused, or None when it may proceed (pure: easy to test)."""
    if method == REGISTER:
        return None
    token = bearer(md)
    if method == SESSION:
        node = md.get("x-fleet-node", "")
        if not token or not node:
            return "agent session without a node credential; the agent must register with a join token first"
        if node not in creds.node_hashes:
            return (f"node {node!r} is not registered with this controller (removed with `fleet node remove`, or "
                    "never joined); start the agent with --join-token to join again")
        if not creds.is_node(node, token):
            return (f"node credential for {node!r} rejected: the node joined again with another credential; "
                    "this agent's credential file is stale")
        return None
    if method.startswith((FLEET_PREFIX, ADMIN_PREFIX)):
        if not token:
            return ("no admin token: pass --token, set FLEET_TOKEN, or run on the controller host "
                    "(reads DATA_DIR/admin-token)")
        if not creds.is_admin(token):
            return "admin token rejected; use the token in the controller's DATA_DIR/admin-token"
        return None
    return f"unknown method {method}"


def metadata_size(metadata: Any) -> int:
    return sum(len(k) + len(v) for k, v in (metadata or ()))


def refusal_kind(method: str, md: dict[str, str], creds: Credentials) -> str:
    """The machine-readable side of a refusal: NODE_UNKNOWN for a session of a node the controller does not know."""
    if method == SESSION and md.get("x-fleet-node", "") and md.get("x-fleet-node") not in creds.node_hashes:
        return NODE_UNKNOWN
    return ""


def _aborting_handler(handler: grpc.RpcMethodHandler, message: str,
                      code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED, kind: str = "") -> grpc.RpcMethodHandler:
    trailing = ((REFUSAL_KEY, kind),) if kind else ()

    async def abort(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message, trailing_metadata=trailing)

    # No request deserializer: a refused caller's payload is never parsed.
    kw = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kw)
    return grpc.unary_unary_rpc_method_handler(abort, **kw)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if metadata_size(handler_call_details.invocation_metadata) > MAX_METADATA:
            return _aborting_handler(handler, f"call metadata larger than {MAX_METADATA} bytes",
                                     grpc.StatusCode.INVALID_ARGUMENT)
        md = metadata_dict(handler_call_details.invocation_metadata)
        why = refusal(handler_call_details.method, md, self.creds)
        if why is None:
            return strict_decoding(handler)
        return _aborting_handler(handler, why, kind=refusal_kind(handler_call_details.method, md, self.creds))
