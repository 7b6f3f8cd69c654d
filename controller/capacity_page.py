"""The capacity page (`/`, a static file) and the JSON it renders (`/api/capacity`), from controller state.

The JSON carries what an operator looks at, never a secret: replica engine keys stay out of it.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from fleet.controller.service import Controller

ATTENTION = ("cordoned", "draining", "drained", "offline")


def capacity_view(ctl: Controller, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    rows = {r.name: r for r in ctl.store.nodes()}
    nodes = []
    for n in ctl.node_messages():
        row = rows.get(n.name)
        badges = [n.state] if n.state in ATTENTION else []
        # An offline node keeps its cordon or drain: show both, the operator needs both facts.
        if row is not None and n.state == "offline" and row.admin_state in ATTENTION:
            badges.append(row.admin_state)
        gpus = []
        for v in n.gpus:
            g = v.gpu
            # "used" counts every process on the GPU, fleet's engines too; what exceeds fleet's reservation
            # belongs to someone else and is not free either.
            others = max(0, g.memory_used - v.memory_reserved)
            gpus.append({
                "uuid": g.uuid, "index": g.index, "name": g.name, "memory_total": g.memory_total,
                "memory_reserved": v.memory_reserved, "memory_used": g.memory_used, "used_by_others": others,
                "memory_free": max(0, g.memory_total - v.memory_reserved - others), "declared": g.declared,
                "utilization": g.utilization, "temperature": g.temperature,
            })
        nodes.append({
            "name": n.name, "state": n.state, "badges": badges,
            "reason": n.cordon_reason, "cordoned_by": n.cordoned_by,
            "heartbeat_age": round(now - n.last_heartbeat, 1) if n.last_heartbeat else None,
            "gpu_probe": n.inventory.gpu_probe, "cpu_count": n.inventory.cpu_count,
            "ram_total": n.inventory.ram_total, "engines": [e.name for e in n.inventory.engines],
            "gpus": gpus,
        })

    by_replica: dict[str, list[dict[str, Any]]] = {}
    for x in ctl.store.reservations():
        by_replica.setdefault(x.replica, []).append({"uuid": x.gpu_uuid, "index": x.gpu_index, "bytes": x.bytes})
    replicas: dict[str, list[dict[str, Any]]] = {}
    for r in ctl.store.replicas():
        replicas.setdefault(r.deployment, []).append({
            "id": r.id, "ordinal": r.ordinal, "node": r.node, "state": r.state, "desired": r.desired,
            "endpoint": r.endpoint, "restarts": r.restarts, "message": r.message[:500],
            "gpus": sorted(by_replica.get(r.id, []), key=lambda x: x["index"]),
        })
    deployments = [{
        "name": d.name, "model": d.model, "quant": d.quant, "engine": d.engine, "state": d.state,
        "replicas_wanted": d.replicas_wanted, "replicas": replicas.get(d.name, []),
    } for d in ctl.store.deployments()]

    all_gpus = [g for n in nodes for g in n["gpus"]]
    return {
        "generated_at": now, "nodes": nodes, "deployments": deployments,
        "totals": {
            "nodes": len(nodes), "gpus": len(all_gpus),
            "memory_total": sum(g["memory_total"] for g in all_gpus),
            "memory_reserved": sum(g["memory_reserved"] for g in all_gpus),
            "memory_free": sum(g["memory_free"] for g in all_gpus),
        },
    }


def page_html() -> bytes:
    return resources.files("fleet.controller").joinpath("web/index.html").read_bytes()


def setup(app: web.Application, ctl: Controller) -> None:
    html = page_html()  # read once: the page is static, the data comes from /api/capacity

    async def index(_request: web.Request) -> web.Response:
        return web.Response(body=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def capacity(_request: web.Request) -> web.Response:
        return web.json_response(capacity_view(ctl), headers={"Cache-Control": "no-store"})

    app.router.add_get("/", index)
    app.router.add_get("/api/capacity", capacity)
