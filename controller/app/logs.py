"""`fleet logs`: ask the replica's node, over its open session, for the engine's log lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fleet.controller.app.controller import AskLogs, Controller, LogPiece
from fleet.controller.core.errors import NotFound, TimedOut, Unavailable
from fleet.controller.store.schema import ReplicaRow

MAX_LINES = 10_000
QUIET_TIMEOUT = 30.0  # without --follow, a node that sends nothing for this long is given up on


@dataclass(frozen=True)
class LogSource:
    """Whose log: a replica, or (multi-node) its part on one node, which runs under its own id there."""

    replica: ReplicaRow
    node: str
    id: str


def pick_replica(ctl: Controller, deployment: str, ordinal: int, node: str = "") -> LogSource:
    """The replica with this ordinal (any when negative); with `node`, its part on that node."""
    if ctl.store.get_deployment(deployment) is None:
        raise NotFound(f"no deployment named {deployment!r}")
    replicas = ctl.store.replicas(deployment=deployment)
    pick = [r for r in replicas if ordinal < 0 or r.ordinal == ordinal]
    if not pick:
        ordinals = ", ".join(str(r.ordinal) for r in replicas) or "none"
        raise NotFound(f"{deployment} has no replica {ordinal}; replicas: {ordinals}")
    if node:
        for r in pick:
            if r.node == node:
                return LogSource(r, node, r.id)
            for p in ctl.store.parts(replica=r.id):
                if p.node == node:
                    return LogSource(r, node, p.id)
        where = sorted({r.node for r in pick} | {p.node for r in pick for p in ctl.store.parts(replica=r.id)})
        raise NotFound(f"{deployment} has no part on node {node!r}; its parts run on {', '.join(where)}")
    return LogSource(pick[0], pick[0].node, pick[0].id)


async def stream(ctl: Controller, source: LogSource, lines: int, follow: bool) -> AsyncIterator[bytes]:
    """The replica's (or part's) log, chunk by chunk, until its node says end of file (or forever with `follow`)."""
    queue = ctl.sessions.get(source.node)
    if queue is None:
        raise Unavailable(f"node {source.node} is not connected; its logs are in the agent's data dir")
    rid = ctl.next_log_request
    ctl.next_log_request += 1
    waiter: asyncio.Queue[LogPiece] = asyncio.Queue()
    ctl.log_waiters[rid] = (source.node, waiter)
    queue.put_nowait(AskLogs(rid, source.id, min(lines or 100, MAX_LINES), follow))
    try:
        while True:
            try:
                piece = await asyncio.wait_for(waiter.get(), timeout=None if follow else QUIET_TIMEOUT)
            except TimeoutError:
                raise TimedOut(f"node {source.node} sent no logs") from None
            if piece.error:
                raise NotFound(piece.error)
            if piece.data:
                yield piece.data
            if piece.eof:
                return
    finally:
        del ctl.log_waiters[rid]
        if follow and (q := ctl.sessions.get(source.node)) is not None:
            q.put_nowait(AskLogs(rid, cancel=True))


def deliver(ctl: Controller, node: str, request_id: int, piece: LogPiece) -> None:
    """A node's answer to a log request, to whoever asked (ignored when they stopped listening, or when
    `node` was not the node asked: one node cannot write into another node's logs)."""
    asked = ctl.log_waiters.get(request_id)
    if asked is not None and asked[0] == node:
        asked[1].put_nowait(piece)
