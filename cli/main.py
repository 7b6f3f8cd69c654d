"""The `fleet` command: one Typer app assembled from one module per area."""

from __future__ import annotations

import importlib

import typer

HELP = """fleet places LLM engines (llama.cpp, vLLM) on your GPU servers.

Exit codes: 0 ok; 1 the operation failed; 2 bad input, nothing fits, or the controller is unreachable;
3 credential refused.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

# Each area registers its commands; an area whose module is not there yet is simply absent.
AREAS = ("daemons", "nodes", "deployments", "models", "plan", "engine")
for area in AREAS:
    try:
        module = importlib.import_module(f"fleet.cli.{area}")
    except ModuleNotFoundError as e:
        if e.name != f"fleet.cli.{area}":
            raise
        continue
    module.register(app)


def main() -> None:
    app()
