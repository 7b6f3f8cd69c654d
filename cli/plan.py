"""`fleet plan`: offline what-if placement on a described fleet (parse -> core -> render)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import EXIT_USAGE, Output, OutputOpt, Table, console, fail, gib, print_json
from fleet.controller.core.errors import FleetError

# One paragraph per line for Typer (a newline inside a paragraph would break the rendered line there).
PLAN_HELP = "\n\n".join((
    "What-if: how many of these deployments fit? Places requests in order, one replica at a time.",
    "With --fleet, on the fleet that file describes (offline, no controller). Without it, on the live inventory "
    "with its current reservations (nothing is reserved by planning). Examples: examples/fleet.json and "
    "examples/requests.json in the repository.",
    'FLEET.json: {"nodes": [{"name": "a100-1", "gpus": [{"type": "A100-80GB", "count": 8}], "ram_gib": 1024, '
    '"disk_gib": 4000, "labels": {"rack": "a"}}]}. A GPU not in the table: {"memory_gib": 48, '
    '"compute_capability": "8.6", "count": 2}. Optional per node: "engines", "state".',
    'REQUESTS.json: {"requests": [{"model": "qwen2-72b", "quant": "awq", "context": 8192, "replicas": 2}]}. '
    'Optional per request: "engine", "tp", "gpu_type", "node", "labels", "device" ("cpu"), "strategy" '
    '("spread"), "name"; without "quant", the best quality that fits, as `fleet place` picks.',
))


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
    controller: ControllerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
) -> None:
    """What-if placement; the help text is PLAN_HELP (both file formats)."""
    from functools import partial

    from fleet.controller.core.options import options_for
    from fleet.controller.core.whatif import what_if_files
    from fleet.controller.store.files import catalog_with, default_catalog_dir

    if requests is None:
        fail("--requests REQUESTS.json is required", EXIT_USAGE)
    if fleet is None:
        live(_read_json(requests, "--requests"), output, controller, token, data_dir)
        return
    fleet_data = _read_json(fleet, "--fleet")
    request_data = _read_json(requests, "--requests")
    try:
        catalog = catalog_with([default_catalog_dir()])
        result = what_if_files(fleet_data, request_data, partial(options_for, catalog=catalog), catalog.workload)
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
            if p.parts:  # one replica over several nodes: the GPUs of each part
                where = " | ".join(",".join(str(g) for g in part.gpus) or "cpu" for part in p.parts)
            t.add_row(str(row.request), str(row.replica), req.model, p.option.label, "+".join(p.nodes), where,
                      gib(p.per_gpu_bytes), "")
    console.print(t)
    summary = result.as_json()
    console.print(f"placed {summary['placed_total']} of {len(result.rows)} replicas; "
                  f"{summary['placed_before_first_reject']} before the first rejection; "
                  f"VRAM reserved {summary['vram_reserved_fraction'] * 100:.1f} %", highlight=False)


def live(requests: Any, output: Output, controller: str | None, token: str | None, data_dir: Path | None) -> None:
    from fleet.cli.client import Client
    from fleet.proto import fleet_pb2 as pb

    resp = Client(controller, token, data_dir).call("Plan", pb.PlanRequest(requests_json=json.dumps(requests)))
    result = json.loads(resp.result_json)
    if output == Output.json:
        print_json(result)
        return
    t = Table(title="plan (live inventory)")
    for col in ("REQ", "REPLICA", "NODE", "GPUS", "PER GPU (GiB)", "REASON"):
        t.add_column(col)
    for p in result["placements"]:
        parts = p.get("parts") or [{"gpus": p["gpus"]}]
        where = " | ".join(",".join(map(str, part["gpus"])) or "cpu" for part in parts)
        t.add_row(str(p["request"]), str(p["replica"]), "+".join(p.get("nodes") or [p["node"]]), where,
                  gib(p["per_gpu_bytes"]), "")
    for r in result["rejected"]:
        t.add_row(str(r["request"]), str(r["replica"]), "[red]rejected[/]", "-", "-", r["reason"])
    console.print(t)
    console.print(f"placed {result['placed_total']} replicas; {result['placed_before_first_reject']} before the "
                  f"first rejection; VRAM reserved {result['vram_reserved_fraction'] * 100:.1f} %", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("plan", help=PLAN_HELP)(plan_cmd)
