"""The controller's HTTP app served for real on 127.0.0.1, in-process, against a real Controller over a
real SQLite file, with fleet rows inserted as placement would leave them, and OpenAI-compatible fake
engines (aiohttp) that check the replica key as llama-server does.

Everything async runs on one background event loop thread, so tests drive it with ordinary blocking
clients (the official `openai` client, urllib, Chromium) exactly as outside callers would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format

from fleet.controller.app.controller import Controller, Settings
from fleet.controller.app.credentials import Credentials
from fleet.controller.http.app import make_app
from fleet.controller.rpc.server import build_server
from fleet.controller.store import apikeys
from fleet.controller.store.db import sqlite_url
from fleet.controller.store.hashing import token_hash
from fleet.controller.store.mirror import DEPLOYMENT, NODE_GPUS
from fleet.controller.store.repository import Store, touch
from fleet.controller.store.schema import DeploymentRow, GpuRow, NodeRow, ReplicaRow, ReservationRow
from fleet.proto import fleet_pb2 as pb

T = TypeVar("T")
GIB = 1024**3
ADMIN_TOKEN = "admin-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopThread:
    """An asyncio loop on a daemon thread; `run` hands it a coroutine and waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class FakeEngine:
    """An OpenAI-compatible engine: answers `<reply>` in words, streams one SSE event per word.

    Requires `Authorization: Bearer <api_key>` (401 otherwise, as llama-server --api-key does). A user
    message "hold" waits until `release()`; `gap` seconds pass between streamed events.
    """

    def __init__(self, name: str, api_key: str, reply: str = "hello from the engine", gap: float = 0.0) -> None:
        self.name, self.api_key, self.reply, self.gap = name, api_key, reply, gap
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.requests: list[dict[str, Any]] = []
        self.seen_auth: list[str] = []
        self.held = 0
        self.runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None

    async def start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def release(self) -> None:
        assert self._release is not None
        self._release.set()

    def _refusal(self, request: web.Request) -> web.Response | None:
        self.seen_auth.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Invalid API Key", "type": "authentication_error",
                                                "code": 401}}, status=401)
        return None

    def words(self) -> list[str]:
        parts = self.reply.split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = await request.json()
        self.requests.append(body)
        if any(m.get("content") == "hold" for m in body.get("messages", [])):
            assert self._release is not None
            self.held += 1
            await self._release.wait()
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            return web.json_response({
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(self.words()), "total_tokens": 3 + len(
                    self.words())},
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, word in enumerate(self.words()):
            if i and self.gap:
                await asyncio.sleep(self.gap)
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {},
                                                                        "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = await request.json()
        self.requests.append(body)
        return web.json_response({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "text": self.reply, "finish_reason": "stop", "logprobs": None}],
        })

    async def embeddings(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = await request.json()
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response({
            "object": "list", "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1},
            "data": [{"object": "embedding", "index": i, "embedding": [0.25, 0.5, float(i)]}
                     for i in range(len(inputs))],
        })


class HttpFleet:
    """A Controller over a SQLite file, its HTTP app on a free port, and helpers to write fleet rows."""

    def __init__(self, root: Path, connect_timeout: float = 2.0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.store = Store(sqlite_url(root))
        self.ctl = Controller(self.store, Settings(), Credentials(admin_hashes={token_hash(ADMIN_TOKEN)}))
        self.loop = LoopThread()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.engines: list[FakeEngine] = []
        self.runner: web.AppRunner = self.loop.run(self._start(connect_timeout))
        self.grpc: grpc.aio.Server | None = None
        self.client_key = apikeys.create(self.store.engine, "tests")[1]
        self.viewer_key = apikeys.create(self.store.engine, "dashboards", role=apikeys.VIEWER)[1]

    def get(self, path: str, key: str | None = None, basic: bool = False) -> tuple[int, dict[str, str], bytes]:
        """GET as a reader: the viewer key by default, as a bearer token or as Basic auth's password."""
        req = urllib.request.Request(self.base + path)
        key = self.viewer_key if key is None else key
        if key:
            value = "Basic " + base64.b64encode(f"reader:{key}".encode()).decode() if basic else f"Bearer {key}"
            req.add_header("Authorization", value)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    async def _start(self, connect_timeout: float) -> web.AppRunner:
        runner = web.AppRunner(make_app(self.ctl, connect_timeout=connect_timeout), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    def start_grpc(self) -> str:
        """The same Controller's gRPC server (plaintext on loopback) for CLI calls; returns its address."""
        address = f"127.0.0.1:{free_port()}"

        async def start() -> grpc.aio.Server:
            server = build_server(self.ctl, address, None)
            await server.start()
            return server

        self.grpc = self.loop.run(start())
        return address

    def cli_env(self, address: str) -> dict[str, str]:
        return {**os.environ, "FLEET_CONTROLLER": address, "FLEET_INSECURE": "1", "FLEET_TOKEN": ADMIN_TOKEN}

    def engine(self, name: str, api_key: str, **kw: Any) -> FakeEngine:
        e = FakeEngine(name, api_key, **kw)
        self.loop.run(e.start())
        self.engines.append(e)
        return e

    def close(self) -> None:
        for e in self.engines:
            self.loop.run(e.release())
            self.loop.run(e.stop())
        self.loop.run(self.runner.cleanup())
        if self.grpc is not None:
            self.loop.run(self.grpc.stop(grace=0))
        self.loop.close()
        self.store.engine.dispose()

    # ---- rows, as registration and placement leave them
    def add_node(self, name: str, gpus: list[tuple[str, str, int]], *, alive: bool = True, admin_state: str = "ready",
                 reason: str = "", used: dict[str, int] | None = None, engines: tuple[str, ...] = ("llama.cpp",),
                 heartbeat_at: float | None = None) -> None:
        """gpus: (uuid, name, memory_total) in index order; used: uuid -> bytes as a heartbeat reported."""
        inv = pb.Inventory(hostname=name, gpu_probe="declared", cpu_count=8, ram_total=64 * GIB,
                           engines=[pb.Engine(name=e, version="1") for e in engines])
        now = time.time() if heartbeat_at is None else heartbeat_at
        with self.store.session() as s:
            s.add(NodeRow(name=name, credential_hash="-", admin_state=admin_state, alive=alive,
                          inventory=json_format.MessageToJson(inv), registered_at=now, last_heartbeat=now,
                          cordon_reason=reason, cordoned_by="tests" if reason else "",
                          cordoned_at=now if reason else 0.0))
            s.flush()
            for i, (uuid, gname, total) in enumerate(gpus):
                s.add(GpuRow(uuid=uuid, node=name, index=i, name=gname, memory_total=total, declared=True))
            touch(s, NODE_GPUS, [name])  # as every writer does, so the controller's mirror sees it
            s.commit()
        self.store.sync()
        if alive:
            self.ctl.liveness.beat(name, now, [(u, b, 0, -1) for u, b in (used or {}).items()])

    def add_deployment(self, name: str, engine: str = "llama.cpp") -> None:
        with self.store.session() as s:
            s.add(DeploymentRow(name=name, model="smollm2-135m", quant="q4_1", engine=engine, context=2048,
                                replicas_wanted=1, created_at=time.time()))
            touch(s, DEPLOYMENT, [name])
            s.commit()
        self.store.sync()

    def add_replica(self, rid: str, deployment: str, node: str, *, endpoint: str = "", api_key: str = "",
                    state: str = "healthy", desired: str = "run", gpus: list[tuple[str, int, int]] = (),  # type: ignore[assignment]
                    ordinal: int = 0) -> None:
        """gpus: (uuid, index, reserved bytes)."""
        with self.store.session() as s:
            s.add(ReplicaRow(id=rid, deployment=deployment, ordinal=ordinal, node=node, desired=desired, state=state,
                             endpoint=endpoint, api_key=api_key, created_at=time.time()))
            s.flush()
            for uuid, index, reserved in gpus:
                s.add(ReservationRow(replica=rid, gpu_uuid=uuid, gpu_index=index, bytes=reserved))
            touch(s, DEPLOYMENT, [deployment])
            s.commit()
        self.store.sync()

    def set_replica(self, rid: str, **fields: Any) -> None:
        with self.store.session() as s:
            row = s.get(ReplicaRow, rid)
            assert row is not None
            for k, v in fields.items():
                setattr(row, k, v)
            s.add(row)
            touch(s, DEPLOYMENT, [row.deployment])
            s.commit()
        self.store.sync()


# A declared-GPU fleet as `--simulate-gpus` agents and placement leave it; metrics, /api/capacity and
# the page are checked against these numbers.
DECLARED = {
    "gpu-01": [("GPU-11111111-0000-4000-8000-000000000000", "A100-80GB", 80 * GIB),
               ("GPU-11111111-0000-4000-8000-000000000001", "A100-80GB", 80 * GIB)],
    "gpu-02": [("GPU-22222222-0000-4000-8000-000000000000", "L4", 24 * GIB)],
    "gpu-03": [("GPU-33333333-0000-4000-8000-000000000000", "H100-80GB", 80 * GIB)],
    "cpu-01": [],
}


def declared_fleet(hf: HttpFleet, heartbeat_age: float = 7.0) -> None:
    """gpu-01 ready (GPU 0: 20 GiB reserved, 30 GiB used), gpu-02 cordoned, gpu-03 offline while draining,
    cpu-01 without GPUs; deployment chat (healthy + starting on gpu-01), emb (failed on gpu-02)."""
    at = time.time() - heartbeat_age
    a0, a1 = (u for u, _, _ in DECLARED["gpu-01"])
    (l4, _, _), (h100, _, _) = DECLARED["gpu-02"][0], DECLARED["gpu-03"][0]
    hf.add_node("gpu-01", DECLARED["gpu-01"], used={a0: 30 * GIB, a1: 20 * GIB}, heartbeat_at=at)
    hf.add_node("gpu-02", DECLARED["gpu-02"], admin_state="cordoned", reason="bad fan", heartbeat_at=at)
    hf.add_node("gpu-03", DECLARED["gpu-03"], alive=False, admin_state="draining", heartbeat_at=at - 600)
    hf.add_node("cpu-01", DECLARED["cpu-01"], heartbeat_at=at)
    hf.add_deployment("chat")
    hf.add_deployment("emb")
    hf.add_replica("chat-0", "chat", "gpu-01", endpoint="http://127.0.0.1:1", api_key="k", gpus=[(a0, 0, 20 * GIB)])
    hf.add_replica("chat-1", "chat", "gpu-01", state="starting", gpus=[(a1, 1, 20 * GIB)], ordinal=1)
    hf.add_replica("emb-0", "emb", "gpu-02", state="failed", gpus=[(l4, 0, 4 * GIB)])
    hf.add_replica("emb-1", "emb", "gpu-03", state="healthy", gpus=[(h100, 0, 10 * GIB)], ordinal=1)
