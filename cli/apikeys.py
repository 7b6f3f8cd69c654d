"""`fleet apikey create|list|revoke`: client keys for the OpenAI gateway, via the controller's HTTP admin API."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer

from fleet.cli.client import resolve_token
from fleet.cli.options import DataDirOpt, TokenOpt
from fleet.cli.output import EXIT_AUTH, EXIT_ERROR, EXIT_USAGE, Output, OutputOpt, Table, console, fail, print_json

DEFAULT_HTTP = "http://127.0.0.1:8080"

HttpOpt = Annotated[str | None, typer.Option(
    "--http", envvar="FLEET_HTTP", help=f"controller HTTP address [default: {DEFAULT_HTTP}]")]


def call(method: str, path: str, http: str | None, token: str, body: dict[str, Any] | None = None) -> Any:
    """One admin request; failures become one error line and an exit code."""
    base = (http or os.environ.get("FLEET_HTTP") or DEFAULT_HTTP).rstrip("/")
    if "://" not in base:
        base = "http://" + base
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {e.code} from {base}{path}"
        fail(message, EXIT_AUTH if e.code in (401, 403) else EXIT_USAGE if e.code < 500 else EXIT_ERROR)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        fail(f"cannot reach the controller's HTTP API at {base}: {reason} "
             "(is `fleet controller run` serving HTTP there? set --http or FLEET_HTTP)", EXIT_USAGE)


def register(app: typer.Typer) -> None:
    key_app = typer.Typer(help="Client API keys for the OpenAI gateway.", no_args_is_help=True)
    app.add_typer(key_app, name="apikey")

    @key_app.command("create")
    def create(name: Annotated[str, typer.Option("--name", help="a name to list and revoke it by")] = "",
               output: OutputOpt = Output.table, http: HttpOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """Create a key and print it. It is shown this once: the controller keeps only its hash."""
        made = call("POST", "/admin/apikeys", http, resolve_token(token, data_dir), {"name": name})
        if output == Output.json:
            print_json(made)
            return
        # The key alone on stdout, so `KEY=$(fleet apikey create)` works; the note goes to stderr.
        print(made["key"])
        typer.echo(f"created API key {made['name']} (id {made['id']}); store it now, it cannot be shown again",
                   err=True)

    @key_app.command("list")
    def list_(output: OutputOpt = Output.table, http: HttpOpt = None, token: TokenOpt = None,
              data_dir: DataDirOpt = None) -> None:
        """List keys (names and ids, never the keys)."""
        keys = call("GET", "/admin/apikeys", http, resolve_token(token, data_dir))["keys"]
        if output == Output.json:
            print_json(keys)
            return
        t = Table(title=f"{sum(not k['revoked'] for k in keys)} active API key(s)")
        for col in ("ID", "NAME", "CREATED", "STATE"):
            t.add_column(col)
        for k in keys:
            t.add_row(str(k["id"]), k["name"], time.strftime("%Y-%m-%d %H:%M", time.localtime(k["created_at"])),
                      "[red]revoked[/]" if k["revoked"] else "[green]active[/]")
        console.print(t)

    @key_app.command("revoke")
    def revoke(ref: Annotated[str, typer.Argument(help="the key's NAME or ID")], output: OutputOpt = Output.table,
               http: HttpOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
        """Revoke a key: the gateway refuses it from the next request on."""
        done = call("DELETE", f"/admin/apikeys/{urllib.request.quote(ref, safe='')}", http,
                    resolve_token(token, data_dir))["revoked"]
        if output == Output.json:
            print_json(done)
            return
        for k in done:
            console.print(f"revoked API key {k['name']} (id {k['id']})")
