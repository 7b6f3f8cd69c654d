"""The operator console (`/`, a static file) and the JSON it renders (`/api/capacity`), from controller state.

Read-only: nodes with their GPUs, deployments with their replicas and states, drains in progress with what
blocks them, and recent events; the page links each node and deployment to a view of its own. The JSON
carries what an operator looks at, never a secret: replica engine keys stay out of it. Node and GPU figures
come from the one capacity view (fleet.controller.app.capacity), as `fleet capacity`'s do; drains from the
view `fleet drain --status` shows, events from the table `fleet events` reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from fleet.controller.app import capacity, drain, events
from fleet.controller.app.controller import Controller
from fleet.controller.app.deployments import every
from fleet.controller.core.events import event_type
from fleet.controller.http.readers import readers

ATTENTION = ("cordoned", "draining", "drained", "offline")
RECENT_EVENTS = 100


def capacity_view(ctl: Controller, now: float | None = None) -> dict[str, Any]:
    return take(ctl, now)()


def take(ctl: Controller, now: float | None = None) -> Callable[[], dict[str, Any]]:
    """What the page shows, read from controller state now (on the loop); the returned function writes the
    JSON-ready dicts from it, and may run in a thread (at 10,000 nodes that is 80,000 GPU entries)."""
    now = time.time() if now is None else now
    views = capacity.node_views(ctl)
    every_deployment = every(ctl)
    active = [d.node for d in ctl.store.drains()]
    drain_views = drain.status(ctl, active) if active else []
    events_seen = events.recent(ctl, limit=RECENT_EVENTS)
    return lambda: _view(now, views, every_deployment, drain_views, events_seen)


def _view(now: float, views: list[capacity.NodeView], every_deployment: list[Any], drain_views: list[Any],
          events_seen: list[Any]) -> dict[str, Any]:
    nodes = []
    for n in views:
        row = n.row
        badges = [n.state] if n.state in ATTENTION else []
        # An offline node keeps its cordon or drain: show both, the operator needs both facts.
        if n.state == "offline" and row.admin_state in ATTENTION:
            badges.append(row.admin_state)
        gpus = [{
            "uuid": g.uuid, "index": g.index, "name": g.name, "memory_total": g.memory_total,
            "memory_reserved": g.memory_reserved, "memory_used": g.memory_used,
            "used_by_others": g.memory_used_by_others, "memory_free": g.memory_free, "declared": g.declared,
            "utilization": g.utilization, "temperature": g.temperature,
        } for g in n.gpus]
        nodes.append({
            "name": n.name, "state": n.state, "badges": badges,
            "reason": row.cordon_reason, "cordoned_by": row.cordoned_by,
            "heartbeat_age": round(now - n.last_heartbeat, 1) if n.last_heartbeat else None,
            "gpu_probe": n.inventory.get("gpuProbe", ""), "cpu_count": n.number("cpuCount"),
            "ram_total": n.number("ramTotal"), "ram_available": n.number("ramAvailable"),
            "disk_free": n.number("diskFree"), "engines": n.engines,
            "engine_versions": [{"name": e.get("name", ""), "version": e.get("version", "")}
                                for e in n.inventory.get("engines", [])],
            "labels": n.inventory.get("labels", {}), "agent_version": n.inventory.get("agentVersion", ""),
            "gpus": gpus,
        })

    deployments = []
    for d in every_deployment:
        by_replica: dict[str, list[dict[str, Any]]] = {}
        for x in d.reservations:
            by_replica.setdefault(x.replica, []).append({"uuid": x.gpu_uuid, "index": x.gpu_index, "bytes": x.bytes})
        dep = d.deployment
        deployments.append({
            "name": dep.name, "model": dep.model, "quant": dep.quant, "engine": dep.engine, "state": dep.state,
            "replicas_wanted": dep.replicas_wanted, "device": dep.device, "context": dep.context, "tp": dep.tp,
            "why": dep.why, "created_at": dep.created_at,
            "replicas": [{
                "id": r.id, "ordinal": r.ordinal, "node": r.node, "state": r.state, "desired": r.desired,
                "endpoint": r.endpoint, "restarts": r.restarts, "message": r.message[:500],
                "gpus": sorted(by_replica.get(r.id, []), key=lambda x: x["index"]),
            } for r in d.replicas],
        })

    drains = [{
        "node": v.node, "state": v.state, "node_state": v.node_state, "message": v.message, "remaining": v.remaining,
        "started_at": v.started_at, "deadline": v.deadline or None, "force": v.force,
        "blocked": [{"replica": r, "deployment": d, "reason": why} for r, d, why in v.blocked],
    } for v in drain_views]
    recent = [{
        "id": e.id, "at": e.at, "age": round(now - e.at, 1), "type": event_type(e.kind), "kind": e.kind,
        "node": e.node, "deployment": e.deployment, "message": e.message[:500],
    } for e in events_seen]

    all_gpus = [g for n in nodes for g in n["gpus"]]
    return {
        "generated_at": now, "nodes": nodes, "deployments": deployments, "drains": drains, "events": recent,
        "totals": {
            "nodes": len(nodes), "gpus": len(all_gpus),
            "memory_total": sum(g["memory_total"] for g in all_gpus),
            "memory_reserved": sum(g["memory_reserved"] for g in all_gpus),
            "memory_free": sum(g["memory_free"] for g in all_gpus),
        },
    }


def page_html() -> bytes:
    return resources.files("fleet.controller.http").joinpath("web/index.html").read_bytes()


def setup(app: web.Application, ctl: Controller) -> None:
    """`/` and `/api/capacity`, for the admin token or a viewer key only (fleet.controller.http.readers)."""
    html = page_html()  # read once: the page is static, the data comes from /api/capacity
    who = readers(app, ctl)

    async def index(request: web.Request) -> web.Response:
        if (refused := who.refusal(request)) is not None:
            return refused
        return web.Response(body=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    running: list[asyncio.Future[bytes]] = []

    async def body() -> bytes:
        # Readers that arrive while one rendering runs share it (a dashboard on many screens); the dicts and the
        # JSON are written in a thread, so 10,000 nodes do not stop the controller.
        if running:
            return await asyncio.shield(running[0])
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        running.append(future)
        try:
            build = take(ctl)
            future.set_result(await asyncio.to_thread(lambda: orjson.dumps(build())))
        except Exception as e:
            future.set_exception(e)
            future.exception()  # retrieved: a failure is raised to its readers, not logged as never seen
        except BaseException:
            future.cancel()  # this reader was cancelled: the others see a cancellation, not a hang
            raise
        finally:
            running.clear()
        return await future

    async def capacity(request: web.Request) -> web.Response:
        if (refused := who.refusal(request)) is not None:
            return refused
        return web.Response(body=await body(), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    app.router.add_get("/", index)
    app.router.add_get("/api/capacity", capacity)
