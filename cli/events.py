"""`fleet events`: what the controller recorded, with the reason, like `kubectl get events`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from fleet.cli.client import Client
from fleet.cli.drain import parse_duration
from fleet.cli.nodes import ago
from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import Output, OutputOpt, Table, console, plain, print_json
from fleet.proto import fleet_pb2 as pb

TYPE_STYLE = {"Warning": "yellow", "Normal": "white"}


def event_dict(e: pb.Event) -> dict[str, Any]:
    return {"id": e.id, "at": e.at, "type": e.type, "kind": e.kind, "node": e.node or None,
            "deployment": e.deployment or None, "message": e.message}


def event_line(e: pb.Event) -> str:
    """One event as a line (--follow): time, type, kind, object, reason."""
    at = time.strftime("%H:%M:%S", time.localtime(e.at))
    obj = "/".join(x for x in (e.node and f"node {e.node}", e.deployment and f"deployment {e.deployment}") if x)
    return f"{at}  [{TYPE_STYLE.get(e.type, 'white')}]{e.type:<7}[/]  {e.kind:<20} {obj or '-'}  {plain(e.message)}"


def events_table(rows: list[pb.Event], title: str) -> Table:
    t = Table(title=title)
    for col in ("AGE", "TYPE", "KIND", "NODE", "DEPLOYMENT", "MESSAGE"):
        t.add_column(col)
    for e in rows:
        t.add_row(ago(e.at), f"[{TYPE_STYLE.get(e.type, 'white')}]{e.type}[/]", e.kind, e.node or "-",
                  e.deployment or "-", plain(e.message))
    return t


def register(app: typer.Typer) -> None:
    @app.command("events")
    def events(
        node: Annotated[str | None, typer.Option("--node", help="only this node's events")] = None,
        deployment: Annotated[str | None, typer.Option("--deployment", help="only this deployment's events")] = None,
        since: Annotated[str | None, typer.Option("--since", help="only this recent: 90s, 15m, 1h, 2d")] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="the newest N")] = 200,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events (Ctrl-C stops)")]
        = False,
        output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
        data_dir: DataDirOpt = None,
    ) -> None:
        """What happened, with the reason: nodes joining, going offline, cordoned; deployments placed; replicas
        added, healthy, failed, stopping. Oldest first; Warning marks what needs a look."""
        client = Client(controller, token, data_dir)
        start = time.time() - parse_duration(since) if since else 0.0
        req = pb.ListEventsRequest(node=node or "", deployment=deployment or "", since=start, limit=limit)
        rows = list(client.call("ListEvents", req).events)
        if output == Output.json and not follow:
            print_json([event_dict(e) for e in rows])
            return
        if not follow:
            what = " ".join(x for x in (node and f"node {node}", deployment and f"deployment {deployment}",
                                        since and f"last {since}") if x)
            console.print(events_table(rows, f"{len(rows)} event(s)" + (f" ({what})" if what else "")))
            return
        # --follow: one line (or one JSON object) per event as it comes, asking only for newer ids
        last = 0
        try:
            while True:
                for e in rows:
                    if output == Output.json:
                        print_json(event_dict(e))
                    else:
                        console.print(event_line(e), highlight=False, soft_wrap=True)
                    last = max(last, e.id)
                time.sleep(1.0)
                req = pb.ListEventsRequest(node=node or "", deployment=deployment or "", after_id=last, limit=1000)
                rows = list(client.call("ListEvents", req).events)
        except KeyboardInterrupt:
            return
