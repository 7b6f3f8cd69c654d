"""`fleet nodes`, `fleet node describe NAME`, `fleet capacity`: parse, one RPC, render."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from fleet.cli.client import Client
from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import Output, OutputOpt, Table, console, gib, plain, print_json
from fleet.proto import fleet_pb2 as pb


def gpu_dict(v: pb.GpuView) -> dict[str, Any]:
    g = v.gpu
    return {
        "uuid": g.uuid, "index": g.index, "name": g.name, "memory_total": g.memory_total,
        "memory_used": g.memory_used, "memory_reserved": v.memory_reserved,
        "memory_used_by_others": v.memory_used_by_others, "memory_free": v.memory_free,
        "compute_capability": g.compute_capability, "driver": g.driver, "utilization": g.utilization,
        "temperature": g.temperature, "declared": g.declared,
    }


def node_dict(n: pb.Node) -> dict[str, Any]:
    inv = n.inventory
    return {
        "name": n.name, "state": n.state, "hostname": inv.hostname,
        "gpus": [gpu_dict(g) for g in n.gpus], "gpu_probe": inv.gpu_probe,
        "cpu_count": inv.cpu_count, "ram_total": inv.ram_total, "ram_available": inv.ram_available,
        "models_dir": inv.models_dir, "disk_total": inv.disk_total, "disk_free": inv.disk_free,
        "engines": [{"name": e.name, "version": e.version, "path": e.path} for e in inv.engines],
        "labels": dict(inv.labels), "agent_version": inv.agent_version,
        "last_heartbeat": n.last_heartbeat, "registered_at": n.registered_at,
        "cordon": ({"reason": n.cordon_reason, "by": n.cordoned_by, "at": n.cordoned_at}
                   if n.cordoned_at else None),
        "events": [{"at": e.at, "kind": e.kind, "message": e.message} for e in n.events],
    }


STATE_STYLE = {"ready": "green", "offline": "red", "cordoned": "yellow", "draining": "yellow", "drained": "blue"}


def ago(t: float) -> str:
    if not t:
        return "never"
    s = max(0.0, time.time() - t)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"


def gpu_summary(n: pb.Node) -> str:
    counts: dict[str, int] = {}
    for g in n.gpus:
        counts[g.gpu.name] = counts.get(g.gpu.name, 0) + 1
    text = plain(", ".join(f"{c}x{name}" for name, c in counts.items())) or "-"
    return text + " (declared)" if n.inventory.gpu_probe == "declared" else text


def engine_text(e: dict[str, Any]) -> str:
    """"llama.cpp 0.3.36 (/path/llama-server)"; a declared engine has no binary: "vllm (declared)"."""
    if not e["path"]:
        return f"{e['name']} (declared)" if e["version"] == "declared" else f"{e['name']} {e['version']}".strip()
    return f"{e['name']} {e['version']} ({e['path']})"


def register(app: typer.Typer) -> None:
    node_app = typer.Typer(help="One node in detail.", no_args_is_help=True)
    app.add_typer(node_app, name="node")

    @app.command("nodes")
    def nodes(output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
              data_dir: DataDirOpt = None) -> None:
        """List nodes: state, GPUs, memory, engines, last heartbeat."""
        listed = [n for page in Client(controller, token, data_dir).pages("ListNodes", pb.ListNodesRequest())
                  for n in page.nodes]
        if output == Output.json:
            print_json([node_dict(n) for n in listed])
            return
        t = Table(title=f"{len(listed)} node(s)")
        for col in ("NAME", "STATE", "GPUS", "VRAM GiB", "RAM GiB", "DISK FREE GiB", "ENGINES", "HEARTBEAT"):
            t.add_column(col)
        for n in listed:
            state = f"[{STATE_STYLE.get(n.state, 'white')}]{n.state}[/]"
            if n.cordon_reason:
                state += f" ({plain(n.cordon_reason)})"
            t.add_row(n.name, state, gpu_summary(n), gib(sum(g.gpu.memory_total for g in n.gpus)),
                      gib(n.inventory.ram_total), gib(n.inventory.disk_free),
                      plain(", ".join(e.name for e in n.inventory.engines)) or "-", ago(n.last_heartbeat))
        console.print(t)

    @node_app.command("describe")
    def describe(name: str, output: OutputOpt = Output.table, controller: ControllerOpt = None,
                 token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
        """Everything known about one node, GPU by GPU."""
        n = Client(controller, token, data_dir).call("DescribeNode", pb.DescribeNodeRequest(name=name)).node
        d = node_dict(n)
        if output == Output.json:
            print_json(d)
            return
        console.print(f"[bold]{n.name}[/]  state [{STATE_STYLE.get(n.state, 'white')}]{n.state}[/]  "
                      f"host {plain(d['hostname'])}  agent {plain(d['agent_version'])}  "
                      f"heartbeat {ago(n.last_heartbeat)}")
        if d["cordon"]:
            c = d["cordon"]
            console.print(f"cordoned by {plain(c['by'] or '?')} {ago(c['at'])}: "
                          f"{plain(c['reason'] or 'no reason given')}")
        console.print(f"CPUs {d['cpu_count']}  RAM {gib(d['ram_available'])}/{gib(d['ram_total'])} GiB available  "
                      f"disk {gib(d['disk_free'])}/{gib(d['disk_total'])} GiB free at {plain(d['models_dir'])}")
        engines = ", ".join(engine_text(e) for e in d["engines"]) or "none installed"
        console.print(f"engines: {plain(engines)}")
        if d["labels"]:
            console.print("labels: " + plain(", ".join(f"{k}={v}" for k, v in d["labels"].items())))
        t = Table(title=f"GPUs (probe: {d['gpu_probe']})")
        for col in ("#", "UUID", "NAME", "CC", "TOTAL GiB", "USED GiB", "RESERVED GiB", "UTIL %", "TEMP C"):
            t.add_column(col)
        for g in d["gpus"]:
            t.add_row(str(g["index"]), g["uuid"], plain(g["name"]), g["compute_capability"] or "-",
                      gib(g["memory_total"]), gib(g["memory_used"]), gib(g["memory_reserved"]), str(g["utilization"]),
                      str(g["temperature"]) if g["temperature"] >= 0 else "-")
        console.print(t)
        if d["events"]:
            ev = Table(title="events (newest first)")
            for col in ("WHEN", "EVENT", "MESSAGE"):
                ev.add_column(col)
            for e in d["events"]:
                ev.add_row(ago(e["at"]), e["kind"], plain(e["message"]))
            console.print(ev)

    @app.command("cordon")
    def cordon(name: str, reason: Annotated[str, typer.Option(help="why: shown by `fleet nodes`")] = "",
               output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """Stop placing new replicas on NODE (running ones stay). Survives restarts."""
        n = Client(controller, token, data_dir).call("Cordon", pb.CordonRequest(name=name, reason=reason)).node
        if output == Output.json:
            print_json(node_dict(n))
        else:
            console.print(f"node {n.name} cordoned" + (f": {reason}" if reason else ""))

    @app.command("uncordon")
    def uncordon(name: str, output: OutputOpt = Output.table, controller: ControllerOpt = None,
                 token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
        """Make NODE eligible for new replicas again."""
        n = Client(controller, token, data_dir).call("Cordon", pb.CordonRequest(name=name, uncordon=True)).node
        if output == Output.json:
            print_json(node_dict(n))
        else:
            console.print(f"node {n.name} is {n.state}")

    @app.command("capacity")
    def capacity(output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
                 data_dir: DataDirOpt = None,
                 largest: Annotated[bool, typer.Option(
                     "--largest/--no-largest", help="also the largest catalog variant that fits now, on one node "
                                                    "and across nodes")] = True) -> None:
        """Capacity per node and per GPU (total / reserved / free VRAM), RAM, disk, and cluster totals."""
        pages = list(Client(controller, token, data_dir).pages("Capacity", pb.CapacityRequest(largest=largest)))
        r, listed = pages[0], [n for page in pages for n in page.nodes]  # the first page carries the totals
        totals = {"nodes": r.nodes_total, "nodes_ready": r.nodes_ready,
                  "gpu_count": r.gpu_count, "vram_total": r.vram_total, "vram_reserved": r.vram_reserved,
                  "vram_free": r.vram_free, "ram_total": r.ram_total, "disk_free": r.disk_free}
        fits = [{"scope": f.scope, "model": f.model, "quant": f.quant, "engine": f.engine, "tp": f.tp,
                 "nodes": list(f.nodes), "weights": f.weights, "device": f.device} for f in r.largest]
        if output == Output.json:
            print_json({"nodes": [node_dict(n) for n in listed], "totals": totals,
                        **({"largest": fits} if largest else {})})
            return
        t = Table(title="capacity (GiB)")
        for col in ("NODE", "STATE", "GPU", "UUID", "TOTAL", "RESERVED", "FREE", "RAM", "DISK FREE"):
            t.add_column(col, justify="right" if col in ("TOTAL", "RESERVED", "FREE", "RAM", "DISK FREE") else "left")
        for n in listed:
            state = f"[{STATE_STYLE.get(n.state, 'white')}]{n.state}[/]"
            ram, disk = gib(n.inventory.ram_total), gib(n.inventory.disk_free)
            if not n.gpus:
                t.add_row(n.name, state, "(no GPU)", "-", "-", "-", "-", ram, disk)
            for i, v in enumerate(n.gpus):
                g = gpu_dict(v)
                t.add_row(n.name if i == 0 else "", state if i == 0 else "", f"{g['index']}: {plain(g['name'])}",
                          g["uuid"][:13] + "…", gib(g["memory_total"]), gib(g["memory_reserved"]),
                          gib(g["memory_free"]), ram if i == 0 else "", disk if i == 0 else "")
        console.print(t)
        console.print(f"cluster: {totals['nodes_ready']}/{totals['nodes']} nodes ready, {r.gpu_count} GPUs, "
                      f"VRAM {gib(r.vram_total)} GiB total, {gib(r.vram_reserved)} reserved, "
                      f"{gib(r.vram_free)} free; RAM {gib(r.ram_total)} GiB; disk free {gib(r.disk_free)} GiB")
        for f in r.largest:
            where = f"{f.device.upper()}, TP {f.tp}" if f.device == "gpu" else "RAM"
            console.print(f"largest that fits now, {f.scope}: [bold]{f.model} {f.quant}[/] on {f.engine} "
                          f"({gib(f.weights)} GiB of weights; {where} on {' + '.join(f.nodes)})", highlight=False)
        if largest and not r.largest:
            console.print("largest that fits now: no catalog variant fits the free capacity")
