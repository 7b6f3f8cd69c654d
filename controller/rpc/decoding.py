"""Malformed requests are the caller's error: INVALID_ARGUMENT, one log line, no traceback.

grpc parses a request before the servicer runs and, when that fails, logs a full traceback and answers
UNKNOWN. Register needs no credential, so anyone who can reach the port could fill the controller's log
with tracebacks at thousands per second (found by tests/integration/test_fuzz.py). The AuthInterceptor
passes every handler that single-message requests reach through `strict_decoding`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

log = logging.getLogger("fleet.controller")


async def _parse(deserialize: Any, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
    try:
        return deserialize(raw)
    except Exception:  # DecodeError, or upb's recursion limit: the bytes are not the message they claim to be
        log.debug("malformed request from %s", context.peer())
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request: not a valid protobuf message")


def strict_decoding(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler, parsing its single request itself; streaming requests are left to grpc."""
    deserialize = handler.request_deserializer
    if deserialize is None or handler.request_streaming:
        return handler
    if handler.response_streaming:
        inner = handler.unary_stream
        if not inspect.isasyncgenfunction(inner) and not inspect.isasyncgenfunction(getattr(inner, "__func__", None)):
            return handler  # a servicer writing with context.write(): leave it as it is

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request = await _parse(deserialize, raw, context)
            async for response in inner(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, request_deserializer=None,
                                                    response_serializer=handler.response_serializer)
    unary = handler.unary_unary

    async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await unary(await _parse(deserialize, raw, context), context)

    return grpc.unary_unary_rpc_method_handler(unary_unary, request_deserializer=None,
                                               response_serializer=handler.response_serializer)
