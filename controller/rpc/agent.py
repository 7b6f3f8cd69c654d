"""The Agent service: Register (join token) and Session (one bidirectional stream per node).

Validates what an agent sends, converts it, and hands it to the node use cases; sends the node its
complete desired set on connect and whenever it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from fleet.common.trust import split_token
from fleet.controller.app import logs, nodes
from fleet.controller.app.controller import Controller, Outbox, SendDesired
from fleet.controller.core.errors import FleetError, InvalidArgument, Unauthenticated
from fleet.controller.rpc import convert
from fleet.controller.rpc.auth import bearer, metadata_dict
from fleet.controller.rpc.status import rpc, status_of
from fleet.controller.rpc.validate import (
    MAX_STR,
    validate_heartbeat,
    validate_inventory,
    validate_node_name,
    validate_replica_report,
)
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

log = logging.getLogger("fleet.controller")
# Anyone who reaches the port can send a bad token as fast as they like: this logger is rate-limited by main.
refusals = logging.getLogger("fleet.controller.refusals")

INTERNAL = "the controller could not store this node's report (see the controller's log)"


class AgentService(pbg.AgentServicer):
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    @rpc
    async def Register(self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext) -> pb.RegisterResponse:
        secret = split_token(request.join_token[:MAX_STR])[0]
        # The token first: a caller without a valid one learns nothing about names or inventories.
        try:
            replaces = nodes.admit(self.ctl, secret)
        except Unauthenticated:
            refusals.warning("refused a join with a wrong or expired token from %s", context.peer())
            raise
        name = validate_node_name(request.name or request.inventory.hostname)
        validate_inventory(request.inventory)
        # An agent that re-registers (the controller's address changed) proves it is the node it was.
        md = metadata_dict(context.invocation_metadata())
        held = bearer(md) if md.get("x-fleet-node") == name else ""
        credential = nodes.join(self.ctl, name, convert.inventory_json(request.inventory),
                                convert.gpu_rows(name, request.inventory), replaces=replaces, secret=secret,
                                credential_held=held)
        return pb.RegisterResponse(node_name=name, credential=credential)

    async def Session(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ControllerMessage]:
        node = metadata_dict(context.invocation_metadata()).get("x-fleet-node", "")
        queue = self.ctl.open_session(node)
        refused: list[str] = []  # why the reader ended the session, when the node sent something invalid
        try:
            try:
                first = await anext(aiter(request_iterator), None)
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                raise
            except Exception:  # undecodable first message
                first = None
            if first is None or first.WhichOneof("kind") != "inventory":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a session must start with the inventory")
            try:
                validate_inventory(first.inventory)
                self._inventory(node, first.inventory)
            except FleetError as e:
                await context.abort(status_of(e), e.message)
            except Exception:
                # Never send a traceback or SQL to a node; the operator finds it in the controller's log.
                log.exception("node %s: storing its inventory failed", node)
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL)
            yield pb.ControllerMessage(config=pb.SessionConfig(
                heartbeat_interval_ms=int(self.ctl.settings.heartbeat_interval * 1000)))
            yield self._message(node, SendDesired())

            reader = asyncio.create_task(self._read(node, request_iterator, queue, refused))
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    yield self._message(node, item)
            finally:
                reader.cancel()
            if refused:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused[0])
        finally:
            self.ctl.close_session(node, queue)

    def _message(self, node: str, item: SendDesired | logs.AskLogs) -> pb.ControllerMessage:
        desired = self.ctl.desired_rows(node) if isinstance(item, SendDesired) else None
        return convert.outgoing(item, desired)

    def _inventory(self, node: str, inv: pb.Inventory) -> None:
        text = convert.inventory_json(inv)
        convert.remember_inventory(node, text, inv)
        nodes.connect(self.ctl, node, text, convert.gpu_rows(node, inv), inv.gpu_probe)

    async def _read(self, node: str, request_iterator: AsyncIterator[pb.AgentMessage], queue: Outbox,
                    refused: list[str]) -> None:
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("kind")
                if kind == "heartbeat":
                    validate_heartbeat(msg.heartbeat)
                    nodes.heartbeat(self.ctl, node, [(u.uuid, u.memory_used, u.utilization, u.temperature)
                                                     for u in msg.heartbeat.gpus])
                elif kind == "inventory":
                    validate_inventory(msg.inventory)
                    self._inventory(node, msg.inventory)
                elif kind == "replicas":
                    validate_replica_report(msg.replicas)
                    nodes.report(self.ctl, node, convert.replica_statuses(msg.replicas),
                                 msg.replicas.applied_generation)
                elif kind == "log":
                    logs.deliver(self.ctl, node, msg.log.request_id, convert.log_piece(msg.log))
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        except InvalidArgument as e:
            log.warning("node %s sent an invalid message (%s); closing its session", node, e.message)
            refused.append(e.message)
        except Exception as e:  # an unreadable message from a node: end its session, keep the controller quiet
            log.warning("node %s sent an unreadable message (%s); closing its session", node, type(e).__name__)
        finally:
            queue.put_nowait(None)
