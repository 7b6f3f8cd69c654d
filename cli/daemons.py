"""`fleet controller run` and `fleet agent run`: the two long-running processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.output import fail


def parse_labels(labels: list[str]) -> dict[str, str]:
    out = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"label {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def register(app: typer.Typer) -> None:
    controller_app = typer.Typer(help="Run the controller (inventory, placement, the CLI's API).",
                                 no_args_is_help=True)
    agent_app = typer.Typer(help="Run the node agent (reports this machine, runs engines).", no_args_is_help=True)
    app.add_typer(controller_app, name="controller")
    app.add_typer(agent_app, name="agent")

    @controller_app.command("run")
    def controller_run(
        data_dir: Annotated[Path, typer.Option(
            envvar="FLEET_DATA_DIR", help="state: fleet.db, join-token, admin-token")]
        = Path.home() / ".local/share/fleet/controller",
        listen: Annotated[str, typer.Option(help="gRPC address for agents and the CLI")] = "127.0.0.1:50051",
        db: Annotated[str | None, typer.Option(help="SQLAlchemy URL instead of DATA_DIR/fleet.db, e.g. postgresql://…")]
        = None,
        heartbeat_interval: Annotated[float, typer.Option(help="seconds between agent heartbeats")] = 5.0,
        offline_after: Annotated[float, typer.Option(help="seconds without a heartbeat before a node is offline")]
        = 15.0,
    ) -> None:
        """Start the controller. First start writes DATA_DIR/join-token and DATA_DIR/admin-token (mode 0600)."""
        from fleet.controller.main import run
        from fleet.controller.service import Settings

        if heartbeat_interval <= 0 or offline_after <= heartbeat_interval:
            fail("--offline-after must be longer than --heartbeat-interval, and both positive")
        run(data_dir.expanduser(), listen, db,
            Settings(heartbeat_interval=heartbeat_interval, offline_after=offline_after,
                     flush_interval=min(1.0, heartbeat_interval)))

    @agent_app.command("run")
    def agent_run(
        controller: Annotated[str, typer.Option(envvar="FLEET_CONTROLLER", help="controller HOST:PORT")]
        = "127.0.0.1:50051",
        join_token: Annotated[str | None, typer.Option(
            envvar="FLEET_JOIN_TOKEN", help="the controller's DATA_DIR/join-token (first start)")] = None,
        data_dir: Annotated[Path, typer.Option(envvar="FLEET_AGENT_DATA_DIR", help="node credential, logs, replicas")]
        = Path.home() / ".local/share/fleet/agent",
        name: Annotated[str | None, typer.Option(help="node name [default: hostname]")] = None,
        simulate_gpus: Annotated[str | None, typer.Option(
            help="declare GPUs instead of probing NVML, e.g. 8xA100-80GB or 2xRTX4090,1xL40S")] = None,
        models_dir: Annotated[Path | None, typer.Option(help="where weights live [default: DATA_DIR/models]")] = None,
        label: Annotated[list[str], typer.Option(help="node label KEY=VALUE (repeatable)")] = [],  # noqa: B006
    ) -> None:
        """Start the agent: probe GPUs/RAM/disk/engines, join with the join token once, then stay connected."""
        from fleet.agent.main import run
        from fleet.agent.probe import parse_gpu_spec

        if simulate_gpus:
            try:
                parse_gpu_spec(simulate_gpus)
            except ValueError as e:
                fail(f"--simulate-gpus: {e}")
        code = run(controller=controller, data_dir=data_dir.expanduser(), join_token=join_token, name=name,
                   simulate=simulate_gpus, models_dir=models_dir, labels=parse_labels(label))
        raise typer.Exit(code)
