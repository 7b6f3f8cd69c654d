"""The Admin service: join tokens (`fleet token`), API keys (`fleet apikey`), node removal and replacement
(`fleet node remove|replace`).

Authenticated with the admin token by the AuthInterceptor, like Fleet.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from fleet.controller.app import access, nodes
from fleet.controller.app.controller import Controller
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.rpc.status import rpc
from fleet.controller.rpc.validate import NODE_NAME
from fleet.controller.store.schema import ApiKeyRow
from fleet.controller.store.tokens import TokenInfo
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

# Every Admin request is a few fields of at most 256 characters; anything bigger (unknown fields
# included) is hostile or broken, and is refused before it is looked at.
MAX_REQUEST = 4096
MAX_NAME = 63

R = TypeVar("R")


def bounded(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        if request.ByteSize() > MAX_REQUEST:
            raise InvalidArgument(f"request of {request.ByteSize()} bytes; at most {MAX_REQUEST}")
        return await fn(self, request, context)

    return wrapper


def token_message(t: TokenInfo) -> pb.JoinToken:
    return pb.JoinToken(id=t.id, kind=t.kind, description=t.description, created_at=t.created_at,
                        expires_at=t.expires_at or 0.0, revoked=t.revoked, state=t.state)


def apikey_message(row: ApiKeyRow) -> pb.ApiKey:
    return pb.ApiKey(id=row.id or 0, name=row.name, created_at=row.created_at, revoked=row.revoked, role=row.role)


def validate_name(name: str) -> str:
    """A node name exactly as stored (no case folding: removal must name the node it removes)."""
    if len(name) > MAX_NAME or not NODE_NAME.match(name):
        raise InvalidArgument(f"invalid node name {name[:80]!r}: 1-63 lowercase letters, digits, '-' or '.'")
    return name


class AdminService(pbg.AdminServicer):
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    @rpc
    @bounded
    async def CreateToken(self, request: pb.CreateTokenRequest,
                          context: grpc.aio.ServicerContext) -> pb.CreateTokenResponse:
        info, token = access.create_join_token(self.ctl, request.ttl_seconds, request.description, time.time())
        return pb.CreateTokenResponse(token=token_message(info), join_token=token)

    @rpc
    @bounded
    async def ListTokens(self, request: pb.ListTokensRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(tokens=[token_message(t) for t in access.list_tokens(self.ctl, time.time())])

    @rpc
    @bounded
    async def RevokeToken(self, request: pb.RevokeTokenRequest,
                          context: grpc.aio.ServicerContext) -> pb.RevokeTokenResponse:
        return pb.RevokeTokenResponse(token=token_message(access.revoke_token(self.ctl, request.id, time.time())))

    @rpc
    @bounded
    async def RemoveNode(self, request: pb.RemoveNodeRequest,
                         context: grpc.aio.ServicerContext) -> pb.RemoveNodeResponse:
        removed, closed = nodes.remove(self.ctl, validate_name(request.name), request.force)
        return pb.RemoveNodeResponse(name=removed.name, replicas_forgotten=len(removed.replicas),
                                     gpus_removed=len(removed.gpus), session_closed=closed)

    @rpc
    @bounded
    async def ReplaceNode(self, request: pb.ReplaceNodeRequest,
                          context: grpc.aio.ServicerContext) -> pb.ReplaceNodeResponse:
        name = validate_name(request.name)
        token, expires = access.replace_node(self.ctl, name, request.ttl_seconds, time.time())
        return pb.ReplaceNodeResponse(name=name, join_token=token, expires_at=expires)

    @rpc
    @bounded
    async def CreateApiKey(self, request: pb.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.CreateApiKeyResponse:
        row, key = access.create_apikey(self.ctl, request.name, request.role or "client")
        return pb.CreateApiKeyResponse(key=apikey_message(row), secret=key)

    @rpc
    @bounded
    async def ListApiKeys(self, request: pb.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListApiKeysResponse:
        return pb.ListApiKeysResponse(keys=[apikey_message(r) for r in access.list_apikeys(self.ctl)])

    @rpc
    @bounded
    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.RevokeApiKeyResponse:
        return pb.RevokeApiKeyResponse(keys=[apikey_message(r) for r in access.revoke_apikey(self.ctl, request.ref)])
