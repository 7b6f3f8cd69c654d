"""How every command renders: rich tables for people, `-o json` for scripts, one error line and an exit code."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from typing import Annotated, Any, NoReturn

import orjson
import rich.table
import typer
from rich.console import Console
from rich.markup import escape

console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console = Console(width=160)  # piped output: do not squeeze tables into 80 columns
err_console = Console(stderr=True)

# Exit codes scripts can trust (documented in `fleet --help`).
EXIT_OK = 0
EXIT_ERROR = 1          # the command ran and failed (e.g. a replica failed to start)
EXIT_USAGE = 2          # bad input, unknown name, nothing fits, controller unreachable
EXIT_AUTH = 3           # refused: missing or wrong credential


class Output(str, Enum):
    table = "table"
    json = "json"


class Table(rich.table.Table):
    """rich's Table, but a value too long for its column folds onto more lines instead of being cut with "…"
    (node names, replica ids and reasons must stay whole on an 80-column terminal)."""

    def add_column(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)


OutputOpt = Annotated[Output, typer.Option(
    "--output", "-o", help="table (for people) or json (for scripts; sizes in bytes)")]

GIB = 1024**3


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f}"


def print_json(obj: Any) -> None:
    # the same text as json.dumps(obj, indent=2), written by a C encoder (the standard one falls back to Python
    # when indenting); anything orjson cannot encode is passed to json as before
    try:
        text = orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        text = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a text-only stream (some test harnesses)
        sys.stdout.write(text.decode())
        return
    sys.stdout.flush()
    out.write(text)
    out.flush()


def plain(text: str) -> str:
    """Text from outside the CLI (an agent's inventory, an engine's log, a server message) as literal text:
    a "[/x]" in a GPU name must print, not be taken for rich markup (which would fail the whole table)."""
    return escape(text)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {plain(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
