"""`fleet apikey create|list|revoke`: API keys, over the Admin service (the same TLS-verified, authenticated
channel as every other verb). Client keys call the OpenAI gateway; viewer keys read the capacity page,
/api/capacity and /metrics (e.g. Prometheus)."""

from __future__ import annotations

import time
from enum import Enum
from typing import Annotated, Any

import typer

from fleet.cli.client import Client
from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import Output, OutputOpt, Table, console, print_json
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg


class Role(str, Enum):
    client = "client"
    viewer = "viewer"


def key_dict(k: pb.ApiKey) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "created_at": k.created_at, "revoked": k.revoked, "role": k.role}


def admin(controller: str | None, token: str | None, data_dir: Any) -> tuple[Client, Any]:
    client = Client(controller, token, data_dir)
    return client, pbg.AdminStub(client.channel)


def register(app: typer.Typer) -> None:
    key_app = typer.Typer(help="API keys: client keys for the OpenAI gateway, viewer keys for the capacity page "
                               "and /metrics.", no_args_is_help=True)
    app.add_typer(key_app, name="apikey")

    @key_app.command("create")
    def create(name: Annotated[str, typer.Option("--name", help="a name to list and revoke it by")] = "",
               role: Annotated[Role, typer.Option(
                   help="client: calls the gateway (/v1); viewer: reads /, /api/capacity and /metrics")]
               = Role.client,
               output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """Create a key and print it. It is shown this once: the controller keeps only its hash."""
        client, stub = admin(controller, token, data_dir)
        made = client.call("CreateApiKey", pb.CreateApiKeyRequest(name=name, role=role.value), stub=stub)
        if output == Output.json:
            print_json({**key_dict(made.key), "key": made.secret})
            return
        # The key alone on stdout, so `KEY=$(fleet apikey create)` works; the note goes to stderr.
        print(made.secret)
        typer.echo(f"created {made.key.role} API key {made.key.name} (id {made.key.id}); store it now, it cannot be "
                   "shown again", err=True)

    @key_app.command("list")
    def list_(output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
              data_dir: DataDirOpt = None) -> None:
        """List keys (names, ids and roles, never the keys)."""
        client, stub = admin(controller, token, data_dir)
        keys = client.call("ListApiKeys", pb.ListApiKeysRequest(), stub=stub).keys
        if output == Output.json:
            print_json([key_dict(k) for k in keys])
            return
        t = Table(title=f"{sum(not k.revoked for k in keys)} active API key(s)")
        for col in ("ID", "NAME", "ROLE", "CREATED", "STATE"):
            t.add_column(col)
        for k in keys:
            t.add_row(str(k.id), k.name, k.role, time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at)),
                      "[red]revoked[/]" if k.revoked else "[green]active[/]")
        console.print(t)

    @key_app.command("revoke")
    def revoke(ref: Annotated[str, typer.Argument(help="the key's NAME or ID")], output: OutputOpt = Output.table,
               controller: ControllerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
        """Revoke a key: refused from the next request on."""
        client, stub = admin(controller, token, data_dir)
        done = client.call("RevokeApiKey", pb.RevokeApiKeyRequest(ref=ref), stub=stub).keys
        if output == Output.json:
            print_json([key_dict(k) for k in done])
            return
        for k in done:
            console.print(f"revoked API key {k.name} (id {k.id})")
