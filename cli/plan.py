"""`fleet plan`: offline what-if placement on a described fleet (parse -> core -> render)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.cli.output import EXIT_USAGE, Output, OutputOpt, console, fail, gib, print_json
from fleet.controller.errors import FleetError


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        fail(f"{what} {path}: cannot read: {e.strerror or e}", EXIT_USAGE)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{what} {path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", EXIT_USAGE)


def plan_cmd(
    fleet: Annotated[Path | None, typer.Option("--fleet", help="FLEET.json: the nodes and GPUs to plan on")] = None,
    requests: Annotated[Path | None, typer.Option("--requests",
                                                  help="REQUESTS.json: deployments, placed in order")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """What-if: how many of these deployments fit on this fleet? Places requests in order, one replica at a time."""
    from fleet.controller.whatif import plan_files

    if requests is None:
        fail("--requests REQUESTS.json is required", EXIT_USAGE)
    if fleet is None:
        fail("planning against the live inventory needs the controller; for an offline what-if pass "
             "--fleet FLEET.json", EXIT_USAGE)
    fleet_data = _read_json(fleet, "--fleet")
    request_data = _read_json(requests, "--requests")
    try:
        result = plan_files(fleet_data, request_data)
    except FleetError as e:
        fail(e.message, EXIT_USAGE)
    if output == Output.json:
        print_json(result.as_json())
        return
    render(result)


def render(result: Any) -> None:
    t = Table(title="plan")
    for col in ("REQ", "REPLICA", "MODEL", "VARIANT", "NODE", "GPUS", "PER GPU (GiB)", "REASON"):
        t.add_column(col)
    for row in result.rows:
        req = result.requests[row.request]
        p = row.placement
        if p is None:
            t.add_row(str(row.request), str(row.replica), req.model, req.quant or "-", "[red]rejected[/]", "-", "-",
                      row.reason)
        else:
            where = ",".join(str(g) for g in p.gpus) or "cpu"
            t.add_row(str(row.request), str(row.replica), req.model, p.option.label, p.node, where,
                      gib(p.per_gpu_bytes), "")
    console.print(t)
    summary = result.as_json()
    console.print(f"placed {summary['placed_total']} of {len(result.rows)} replicas; "
                  f"{summary['placed_before_first_reject']} before the first rejection; "
                  f"VRAM reserved {summary['vram_reserved_fraction'] * 100:.1f} %", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)
