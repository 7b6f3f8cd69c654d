"""`fleet token create|list|revoke` and `fleet node remove|replace`: parse, one Admin RPC, render.

`fleet node remove` joins the `node` group the "nodes" area creates, so this area is registered after
it (cli/main.py AREAS).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer

from fleet.cli.client import Client
from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import Output, OutputOpt, Table, console, fail, print_json
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TTL = re.compile(r"^(\d{1,9})([smhdw]?)$")


def parse_ttl(text: str) -> int:
    """'24h', '30m', '7d', '90s' or '90' (seconds) -> seconds; '0' or 'never' -> 0 (never expires)."""
    text = text.strip().lower()
    if text == "never":
        return 0
    m = TTL.match(text)
    if not m:
        fail(f"invalid --ttl {text!r}: a number with s, m, h, d or w (24h, 7d), or 'never'")
    return int(m.group(1)) * UNITS[m.group(2) or "s"]


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"


def token_dict(t: pb.JoinToken) -> dict[str, Any]:
    return {"id": t.id, "kind": t.kind, "description": t.description, "created_at": t.created_at,
            "expires_at": t.expires_at or None, "revoked": t.revoked, "state": t.state}


STATE_STYLE = {"active": "green", "expired": "yellow", "revoked": "red"}


def admin(controller: str | None, token: str | None, data_dir: Any) -> tuple[Client, Any]:
    client = Client(controller, token, data_dir)
    return client, pbg.AdminStub(client.channel)


def node_group(app: typer.Typer) -> typer.Typer:
    for group in app.registered_groups:
        if group.name == "node" and group.typer_instance is not None:
            return group.typer_instance
    # The "nodes" area is absent from this install: give `node remove` a group of its own.
    node_app = typer.Typer(help="One node in detail.", no_args_is_help=True)
    app.add_typer(node_app, name="node")
    return node_app


def register(app: typer.Typer) -> None:
    token_app = typer.Typer(help="Join tokens for agents: create, list, revoke.", no_args_is_help=True)
    app.add_typer(token_app, name="token")

    @token_app.command("create")
    def create(ttl: Annotated[str, typer.Option(help="lifetime: 30m, 24h, 7d, or 'never'")] = "24h",
               description: Annotated[str, typer.Option(help="what it is for, shown by `fleet token list`")] = "",
               output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """Create a join token and print it. It is shown this once: the controller keeps only its hash."""
        client, stub = admin(controller, token, data_dir)
        r = client.call("CreateToken", pb.CreateTokenRequest(ttl_seconds=parse_ttl(ttl), description=description),
                        stub=stub)
        if output == Output.json:
            print_json({**token_dict(r.token), "join_token": r.join_token})
            return
        # The token alone on stdout, so `T=$(fleet token create)` works; the note goes to stderr.
        print(r.join_token)
        typer.echo(f"created join token {r.token.id}, expires {when(r.token.expires_at)}; "
                   "use it with `fleet agent run --join-token` (it cannot be shown again)", err=True)

    @token_app.command("list")
    def list_(output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
              data_dir: DataDirOpt = None) -> None:
        """List join tokens, numbered 1, 2, … in creation order (expiry, state; never the secrets).

        The admin token (DATA_DIR/admin-token, what the CLI itself uses) is not a join token: not listed, no number.
        """
        client, stub = admin(controller, token, data_dir)
        rows = [r for r in client.call("ListTokens", pb.ListTokensRequest(), stub=stub).tokens if r.kind == "join"]
        if output == Output.json:
            print_json([token_dict(t) for t in rows])
            return
        counts = {s: sum(r.state == s for r in rows) for s in ("active", "expired", "revoked")}
        t = Table(title=f"{len(rows)} join token(s): {counts['active']} usable"
                        + "".join(f", {n} {s}" for s, n in counts.items() if n and s != "active"))
        for col in ("ID", "DESCRIPTION", "CREATED", "EXPIRES", "STATE"):
            t.add_column(col)
        for r in rows:
            t.add_row(str(r.id), r.description, when(r.created_at), when(r.expires_at),
                      f"[{STATE_STYLE.get(r.state, 'white')}]{r.state}[/]")
        console.print(t)

    @token_app.command("revoke")
    def revoke(token_id: Annotated[int, typer.Argument(metavar="ID", help="the join token's id (`fleet token list`)",
                                                       min=1)],
               output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """Revoke a join token: agents that have not joined yet are refused with it. Joined nodes stay."""
        client, stub = admin(controller, token, data_dir)
        r = client.call("RevokeToken", pb.RevokeTokenRequest(id=token_id), stub=stub).token
        if output == Output.json:
            print_json(token_dict(r))
        else:
            console.print(f"join token {r.id} revoked")

    @node_group(app).command("remove")
    def remove(name: str,
               force: Annotated[bool, typer.Option(help="also forget its replicas (their engines are told to stop)")]
               = False,
               output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """Remove NODE: revoke its credential, close its session, forget its GPUs. Refused while it has replicas."""
        client, stub = admin(controller, token, data_dir)
        r = client.call("RemoveNode", pb.RemoveNodeRequest(name=name, force=force), stub=stub)
        if output == Output.json:
            print_json({"name": r.name, "replicas_forgotten": r.replicas_forgotten, "gpus_removed": r.gpus_removed,
                        "session_closed": r.session_closed})
            return
        extra = f", {r.replicas_forgotten} replica(s) forgotten" if r.replicas_forgotten else ""
        console.print(f"node {r.name} removed ({r.gpus_removed} GPU(s){extra}); its agent must join again "
                      "with a join token to come back")

    @node_group(app).command("replace")
    def replace(name: str,
                ttl: Annotated[str, typer.Option(help="how long the token may be used: 30m, 1h, 1d")] = "1h",
                output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
                data_dir: DataDirOpt = None) -> None:
        """Let a new agent take over NODE's name: prints a one-time token for it.

        Run `fleet agent run --name NODE --join-token TOKEN` on the new machine. NODE keeps its replicas
        and keeps working with its current agent until the new one joins; then the old agent's credential
        stops working. A plain join token can never take over a known name.
        """
        client, stub = admin(controller, token, data_dir)
        r = client.call("ReplaceNode", pb.ReplaceNodeRequest(name=name, ttl_seconds=parse_ttl(ttl)), stub=stub)
        if output == Output.json:
            print_json({"name": r.name, "join_token": r.join_token, "expires_at": r.expires_at})
            return
        print(r.join_token)
        typer.echo(f"one-time token to replace node {r.name}, expires {when(r.expires_at)}: run `fleet agent run "
                   f"--name {r.name} --join-token TOKEN` on the new machine (it cannot be shown again)", err=True)
