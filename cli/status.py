"""`fleet status`: the fleet on one screen (one RPC; details are in `fleet nodes|capacity|deployments|events`)."""

from __future__ import annotations

from typing import Any

import typer

from fleet.cli.client import Client
from fleet.cli.drain import status_dict, status_text
from fleet.cli.events import event_dict, event_line
from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import Output, OutputOpt, console, gib, print_json
from fleet.proto import fleet_pb2 as pb

NODE_STATES = ("ready", "cordoned", "draining", "drained", "offline")


def status_json(s: pb.StatusResponse) -> dict[str, Any]:
    return {
        "nodes": dict(s.nodes), "nodes_declared": s.nodes_declared,
        "gpus": {"count": s.gpu_count, "free": s.gpus_free},
        "vram": {"total": s.vram_total, "reserved": s.vram_reserved, "free": s.vram_free},
        "deployments": {"total": s.deployments, "serving": s.deployments_serving, "degraded": s.deployments_degraded,
                        "down": s.deployments_down, "declared": s.deployments_declared},
        "replicas": {"wanted": s.replicas_wanted, "serving": s.replicas_serving},
        "drains": [status_dict(d) for d in s.drains], "warnings": [event_dict(e) for e in s.warnings],
        "uptime": s.uptime,
    }


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """The fleet on one screen: nodes by state, GPUs reserved and free, deployments serving, drains in
        progress, warnings of the last hour."""
        s = Client(controller, token, data_dir).call("Status", pb.StatusRequest())
        if output == Output.json:
            print_json(status_json(s))
            return
        total = sum(s.nodes.values())
        states = ", ".join(f"{s.nodes[k]} {k}" for k in (*NODE_STATES, *sorted(set(s.nodes) - set(NODE_STATES)))
                           if s.nodes.get(k))
        declared = f" ({s.nodes_declared} declared, for planning)" if s.nodes_declared else ""
        say = console.print
        say(f"[bold]nodes[/]        {total}: {states or 'none joined yet'}{declared}", highlight=False)
        say(f"[bold]GPUs[/]         {s.gpu_count}, {s.gpus_free} unreserved; VRAM {gib(s.vram_reserved)} of "
            f"{gib(s.vram_total)} GiB reserved, {gib(s.vram_free)} GiB free", highlight=False)
        parts = [f"{s.deployments_serving} serving"]
        parts += [f"{n} {what}" for n, what in ((s.deployments_degraded, "degraded"), (s.deployments_down, "down"),
                                                 (s.deployments_declared, "declared only")) if n]
        say(f"[bold]deployments[/]  {s.deployments}: {', '.join(parts)}; replicas serving {s.replicas_serving}/"
            f"{s.replicas_wanted}", highlight=False)
        if s.drains:
            say(f"[bold]drains[/]       {len(s.drains)} in progress", highlight=False)
            for d in s.drains:
                say("  " + status_text(d).replace("\n", "\n  "), highlight=False)
        else:
            say("[bold]drains[/]       none in progress", highlight=False)
        if s.warnings:
            say(f"[bold]warnings[/]     {len(s.warnings)} in the last hour (`fleet events` for all):", highlight=False)
            for e in s.warnings:
                say("  " + event_line(e), highlight=False, soft_wrap=True)
        else:
            say("[bold]warnings[/]     none in the last hour", highlight=False)
