"""The `fleet` command: one Typer app assembled from one module per area."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from fleet.cli.options import CaFileOpt, InsecureOpt

HELP = """fleet places LLM engines (llama.cpp, vLLM) on your GPU servers.

Exit codes: 0 ok; 1 the operation failed; 2 bad input, nothing fits, or the controller is unreachable;
3 credential refused.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"fleet {version('fleet')}")
        except PackageNotFoundError:
            typer.echo("fleet (not installed as a package)")
        raise typer.Exit()


@app.callback()
def connection(insecure: InsecureOpt = False, ca_file: CaFileOpt = None,
               version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                     help="print fleet's version and exit")] = False) -> None:
    """Options for reaching the controller, given before the command: `fleet --ca-file ca.crt nodes`."""
    # The CLI reads these where it opens its channel; the environment carries them there.
    if insecure:
        os.environ["FLEET_INSECURE"] = "1"
    if ca_file is not None:
        os.environ["FLEET_CA"] = str(ca_file)


# Each area registers its commands; an area whose module is not there yet is simply absent.
# "tokens" adds `fleet node remove` to the `node` group that "nodes" creates, so it comes after it.
AREAS = ("daemons", "install", "nodes", "deployments", "drain", "models", "plan", "engine", "apikeys", "tokens",
         "events", "status")
# The long-running processes need only their own area: the agent's idle memory is a product target.
DAEMON_COMMANDS = (["agent", "run"], ["controller", "run"])
_registered: set[str] = set()


def register_areas(areas: tuple[str, ...] = AREAS) -> typer.Typer:
    for area in areas:
        if area in _registered:
            continue
        try:
            module = importlib.import_module(f"fleet.cli.{area}")
        except ModuleNotFoundError as e:
            if e.name != f"fleet.cli.{area}":
                raise
            continue
        module.register(app)
        _registered.add(area)
    return app


def main() -> None:
    words = [a for a in sys.argv[1:] if not a.startswith("-")][:2]
    register_areas(("daemons",) if words in DAEMON_COMMANDS else AREAS)
    app()
