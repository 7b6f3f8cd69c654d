"""The Admin gRPC service: join tokens (`fleet token ...`) and node removal (`fleet node remove`).

Authenticated with the admin token by the AuthInterceptor, like Fleet. Moves data between the wire,
the store (controller/tokens.py, controller/node_removal.py) and the controller's in-memory state.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from fleet.agent.trust import split_token
from fleet.controller import node_removal, tokens
from fleet.controller.errors import InvalidArgument
from fleet.controller.service import NODE_NAME, rpc
from fleet.controller.store import token_hash
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

if TYPE_CHECKING:
    from fleet.controller.service import Controller

log = logging.getLogger("fleet.controller")

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


def token_message(t: tokens.TokenInfo) -> pb.JoinToken:
    return pb.JoinToken(id=t.id, kind=t.kind, description=t.description, created_at=t.created_at,
                        expires_at=t.expires_at or 0.0, revoked=t.revoked, state=t.state)


def validate_name(name: str) -> str:
    """A node name exactly as stored (no case folding: removal must name the node it removes)."""
    if len(name) > MAX_NAME or not NODE_NAME.match(name):
        raise InvalidArgument(f"invalid node name {name[:80]!r}: 1-63 lowercase letters, digits, '-' or '.'")
    return name


class AdminService(pbg.AdminServicer):
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        tokens.ensure_table(ctl.store.engine)  # also when the store was opened before this module was imported

    def _file_secret(self, kind: str) -> str:
        if self.ctl.data_dir is None:
            return ""
        try:
            return (self.ctl.data_dir / f"{kind}-token").read_text().strip()
        except OSError:
            return ""

    def _fingerprint(self) -> str:
        # main writes DATA_DIR/join-token at every start with the CA fingerprint it serves (empty when
        # --insecure), so this is right for a generated CA, a given --tls-ca and plaintext alike.
        return split_token(self._file_secret("join"))[1]

    def _labels(self) -> dict[str, str]:
        labels = {h: "admin token (DATA_DIR/admin-token)" for h in self.ctl.creds.admin_hashes}
        first = split_token(self._file_secret("join"))[0]
        if first:
            labels[token_hash(first)] = "first-start join token (DATA_DIR/join-token)"
        return labels

    @rpc
    @bounded
    async def CreateToken(self, request: pb.CreateTokenRequest,
                          context: grpc.aio.ServicerContext) -> pb.CreateTokenResponse:
        info, secret = tokens.create(self.ctl.store, request.ttl_seconds, request.description, time.time())
        log.info("created join token %d (%s)", info.id,
                 f"expires in {request.ttl_seconds}s" if request.ttl_seconds else "never expires")
        return pb.CreateTokenResponse(token=token_message(info),
                                      join_token=tokens.new_join_token(secret, self._fingerprint()))

    @rpc
    @bounded
    async def ListTokens(self, request: pb.ListTokensRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListTokensResponse:
        rows = tokens.list_tokens(self.ctl.store, time.time(), self._labels())
        return pb.ListTokensResponse(tokens=[token_message(t) for t in rows])

    @rpc
    @bounded
    async def RevokeToken(self, request: pb.RevokeTokenRequest,
                          context: grpc.aio.ServicerContext) -> pb.RevokeTokenResponse:
        info, revoked_hash = tokens.revoke(self.ctl.store, request.id, time.time())
        first = split_token(self._file_secret("join"))[0]
        if first and self.ctl.data_dir is not None and token_hash(first) == revoked_hash:
            # main re-adds the file's token at start when it is not valid: drop the file so a restart makes a
            # fresh one instead of reviving the revoked secret.
            (self.ctl.data_dir / "join-token").unlink(missing_ok=True)
            log.warning("revoked the first-start join token; removed DATA_DIR/join-token")
        log.info("revoked join token %d", info.id)
        return pb.RevokeTokenResponse(token=token_message(info))

    @rpc
    @bounded
    async def RemoveNode(self, request: pb.RemoveNodeRequest,
                         context: grpc.aio.ServicerContext) -> pb.RemoveNodeResponse:
        ctl, name = self.ctl, validate_name(request.name)
        replicas = node_removal.check_removable(ctl.store, name, request.force)
        if replicas and node_removal.mark_stopping(ctl.store, name):
            ctl.push([name])  # a connected agent stops the engines before its session is closed
        # Refuse new sessions first, then forget durably; put the hash back if the store fails.
        known = ctl.creds.node_hashes.pop(name, None)
        try:
            removed = node_removal.remove(ctl.store, name, time.time())
        except Exception:
            if known is not None:
                ctl.creds.node_hashes[name] = known
            raise
        ctl.liveness.alive.discard(name)
        ctl.liveness.last_seen.pop(name, None)
        for uuid in removed.gpus:
            ctl.liveness.gpu_usage.pop(uuid, None)
        queue = ctl.sessions.get(name)
        if queue is not None:
            queue.put_nowait(None)  # ends the stream; the agent's reconnect is refused (UNAUTHENTICATED)
        log.warning("removed node %s (%d replica(s) forgotten, %d GPU(s))", name, len(removed.replicas),
                    len(removed.gpus))
        return pb.RemoveNodeResponse(name=name, replicas_forgotten=len(removed.replicas),
                                     gpus_removed=len(removed.gpus), session_closed=queue is not None)
