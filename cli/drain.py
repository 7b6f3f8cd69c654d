"""`fleet drain NODE...`: cordon, move every replica make-before-break, end `drained`."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer

from fleet.cli.client import Client
from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import EXIT_ERROR, Output, OutputOpt, Table, console, err_console, fail, plain, print_json
from fleet.proto import fleet_pb2 as pb


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h', '1h30m' or plain seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        fail(f"cannot read duration {text!r}; write e.g. 90s, 15m, 1h, 1h30m")
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


def status_dict(d: pb.DrainStatus) -> dict[str, Any]:
    return {"node": d.node, "state": d.state, "node_state": d.node_state, "message": d.message,
            "remaining": d.remaining, "started_at": d.started_at or None, "deadline": d.deadline or None,
            "force": d.force,
            "moves": [{"replica": m.replica, "deployment": m.deployment, "to": m.to_node, "gpus": list(m.gpus)}
                      for m in d.moves],
            "blocked": [{"replica": b.replica, "deployment": b.deployment, "reason": b.reason} for b in d.blocked]}


def deadline_text(d: pb.DrainStatus) -> str:
    if d.force:
        return "--force: replicas that cannot move are stopped"
    if not d.deadline:
        return "no deadline"
    left = d.deadline - time.time()
    at = time.strftime("%H:%M", time.localtime(d.deadline))
    return f"deadline {at} (in {left / 60:.0f} min)" if left > 0 else f"deadline {at} (passed)"


def status_text(d: pb.DrainStatus) -> str:
    lines = [f"{d.node} ({d.node_state}): drain {d.state}, {d.remaining} replica(s) left"
             + (f", {deadline_text(d)}" if d.state == "active" else "")
             + (f" — {plain(d.message)}" if d.message else "")]
    lines += [f"  cannot move {b.replica} ({b.deployment}): {plain(b.reason)}" for b in d.blocked]
    return "\n".join(lines)


def stuck(d: pb.DrainStatus) -> bool:
    """Active, with nothing left but replicas that cannot move, and nothing that will ever stop them."""
    return d.state == "active" and bool(d.blocked) and d.remaining <= len(d.blocked) and not d.deadline \
        and not d.force


def plan_table(resp: pb.DrainResponse) -> Table:
    t = Table(title="drain plan")
    for col in ("NODE", "REPLICA", "DEPLOYMENT", "MOVES TO", "GPUS / WHY NOT"):
        t.add_column(col)
    for d in resp.drains:
        for m in d.moves:
            t.add_row(d.node, m.replica, m.deployment, m.to_node, ",".join(map(str, m.gpus)) or "cpu")
        for b in d.blocked:
            t.add_row(d.node, b.replica, b.deployment, "[red]cannot move[/]", plain(b.reason))
        if not d.moves and not d.blocked:
            t.add_row(d.node, "-", "-", "-", "nothing to move")
    return t


def register(app: typer.Typer) -> None:
    @app.command("drain")
    def drain(
        nodes: Annotated[list[str], typer.Argument(help="node(s) to drain; several are all cordoned first")],
        deadline: Annotated[str | None, typer.Option(
            help="after this long (e.g. 1h), replicas that cannot move are stopped anyway")] = None,
        force: Annotated[bool, typer.Option("--force", help="stop replicas that cannot move (break-before-make)")]
        = False,
        reason: Annotated[str, typer.Option(help="why: shown by `fleet nodes`")] = "",
        dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, change nothing")] = False,
        detach: Annotated[bool, typer.Option("--detach", help="start the drain and return")] = False,
        cancel: Annotated[bool, typer.Option("--cancel", help="stop a drain (the node stays cordoned)")] = False,
        status: Annotated[bool, typer.Option("--status", help="show the drain's progress and return")] = False,
        output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
        data_dir: DataDirOpt = None,
    ) -> None:
        """Take nodes out for maintenance without dropping service.

        Each replica is started elsewhere first and its old copy stops only once the new one is healthy.
        A replica that cannot move blocks the drain until --force or the deadline. Ctrl-C stops watching,
        not the drain; `fleet drain NODE --cancel` stops it.
        """
        client = Client(controller, token, data_dir)
        req = pb.DrainRequest(nodes=nodes, deadline_seconds=parse_duration(deadline) if deadline else 0.0, force=force,
                              reason=reason, dry_run=dry_run, cancel=cancel)
        if status:
            resp = client.call("Drain", pb.DrainRequest(nodes=nodes, status_only=True))
            if output == Output.json:
                print_json([status_dict(d) for d in resp.drains])
            else:
                for d in resp.drains:
                    console.print(status_text(d), highlight=False)
            return
        resp = client.call("Drain", req)
        if dry_run or cancel:
            if output == Output.json:
                print_json([status_dict(d) for d in resp.drains])
            elif dry_run:
                console.print(plan_table(resp))
                blocked = sum(len(d.blocked) for d in resp.drains)
                console.print(f"{sum(len(d.moves) for d in resp.drains)} replica(s) would move, {blocked} cannot"
                              + (" (a drain waits for them until --force or --deadline)" if blocked else ""))
            else:
                console.print(f"drain of {', '.join(nodes)} cancelled; the node(s) stay cordoned")
            return
        if output != Output.json:
            console.print(plan_table(resp))
        if detach:
            if output == Output.json:
                print_json([status_dict(d) for d in resp.drains])
            else:
                console.print(f"draining {', '.join(nodes)}; watch with `fleet drain {' '.join(nodes)} --status` "
                              "or `fleet events`")
            return
        last = ""
        try:
            while True:
                resp = client.call("Drain", pb.DrainRequest(nodes=nodes, status_only=True))
                line = "; ".join(f"{d.node}: {d.state}, {d.remaining} left — {d.message}" for d in resp.drains)
                if line != last:
                    err_console.print(plain(line), highlight=False)
                    last = line
                if all(d.state in ("done", "cancelled") for d in resp.drains):
                    break
                if any(stuck(d) for d in resp.drains) and all(stuck(d) or d.state != "active" for d in resp.drains):
                    # Nothing will change by itself: say what blocks it and stop watching (the drain stays).
                    if output == Output.json:
                        print_json([status_dict(d) for d in resp.drains])
                    for d in resp.drains:
                        err_console.print(status_text(d), highlight=False)
                    fail(f"the drain of {', '.join(nodes)} is blocked with no deadline: it stays active and finishes "
                         f"if room frees up; `fleet drain {' '.join(nodes)} --force` stops what cannot move, "
                         "`--deadline 30m` sets a deadline, `--cancel` ends the drain", EXIT_ERROR)
                time.sleep(1.0)
        except KeyboardInterrupt:
            err_console.print("stopped watching; the drain goes on (`fleet drain NODE --cancel` stops it)")
            raise typer.Exit(0) from None
        if output == Output.json:
            print_json([status_dict(d) for d in resp.drains])
        if any(d.state == "cancelled" for d in resp.drains):
            raise typer.Exit(EXIT_ERROR)
        console.print(f"{', '.join(nodes)} drained")
