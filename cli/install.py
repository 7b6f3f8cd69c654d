"""`fleet agent install|uninstall` and `fleet controller install|uninstall`: run the daemons as systemd services.

Adds commands to the `fleet agent` / `fleet controller` groups that fleet.cli.daemons creates, so this area
must be registered after "daemons" in fleet.cli.main.AREAS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli import installer
from fleet.cli.installer import AGENT, CONTROLLER, Change, Daemon, InstallError
from fleet.cli.output import EXIT_ERROR, console, fail

RootOpt = Annotated[Path | None, typer.Option(
    "--root", help="stage every file under DIR instead of / (packaging, tests): no systemctl, no useradd, "
                   "no root needed", show_default=False)]
NoStartOpt = Annotated[bool, typer.Option(
    "--no-start", help="write the files and reload systemd, but do not enable or start the service")]
PurgeOpt = Annotated[bool, typer.Option(
    "--purge", help="also delete the config, the env file and the data dir (the node credential / the database)")]


def _group(app: typer.Typer, name: str) -> typer.Typer:
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    raise RuntimeError(f"fleet.cli.install adds to `fleet {name}`, which does not exist yet: "
                       f"register 'install' after 'daemons' in fleet.cli.main.AREAS")


def _where(root: Path | None) -> tuple[Path, bool]:
    if root is None:
        return Path("/"), False
    return root.absolute(), True


def _report(changes: list[Change]) -> bool:
    for c in changes:
        mode = f" ({c.path.stat().st_mode & 0o777:04o})" if c.path.is_file() else ""
        console.print(f"{c.action:>9}  {c.path}{mode}", highlight=False)
    return any(c.changed for c in changes)


def _install(daemon: Daemon, settings: dict[str, Any], root_opt: Path | None, no_start: bool,
             writable: list[Path]) -> None:
    root, staging = _where(root_opt)
    try:
        changes = installer.install(daemon, settings, root=root, staging=staging,
                                    executable=installer.fleet_executable(), writable=writable,
                                    start=not no_start, euid=os.geteuid(), run=installer.run_command)
    except InstallError as e:
        fail(str(e), EXIT_ERROR)
    changed = _report(changes)
    name = daemon.unit.removesuffix(".service")
    if not changed:
        console.print(f"{name}: already installed with these settings; nothing changed")
    if staging:
        console.print(f"staged under {root}; on the target: systemctl daemon-reload && systemctl enable --now {name}")
    elif no_start:
        console.print(f"installed; start it with: systemctl enable --now {name}")
    else:
        console.print(f"{name} is enabled and running; logs: journalctl -u {name}")


def _uninstall(daemon: Daemon, root_opt: Path | None, purge: bool) -> None:
    root, staging = _where(root_opt)
    try:
        changes = installer.uninstall(daemon, root=root, staging=staging, purge=purge, euid=os.geteuid(),
                                      run=installer.run_command)
    except InstallError as e:
        fail(str(e), EXIT_ERROR)
    if not _report(changes):
        console.print(f"{daemon.unit.removesuffix('.service')}: not installed; nothing changed")


def _absolute(path: Path | None) -> Path | None:
    return path.absolute() if path is not None else None


def register(app: typer.Typer) -> None:
    agent_app, controller_app = _group(app, "agent"), _group(app, "controller")

    @agent_app.command("install")
    def agent_install(
        controller: Annotated[str, typer.Option(help="controller HOST:PORT the agent dials", show_default=False)],
        join_token: Annotated[str, typer.Option(
            envvar="FLEET_JOIN_TOKEN", help="the controller's join token (kept in the 0600 config file)",
            show_default=False)],
        name: Annotated[str | None, typer.Option(help="node name (default: hostname)")] = None,
        models_dir: Annotated[Path | None, typer.Option(
            help=f"where weights live (made writable in the sandbox) (default: {AGENT.state_dir}/models)")] = None,
        simulate_gpus: Annotated[str | None, typer.Option(help="declare GPUs instead of probing, e.g. 8xA100-80GB")]
        = None,
        root: RootOpt = None,
        no_start: NoStartOpt = False,
    ) -> None:
        """Install the agent as the systemd service fleet-agent: /etc/fleet/agent.toml (0600) + the unit."""
        host, sep, port = controller.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            fail(f"--controller {controller!r}: write HOST:PORT, e.g. 10.0.0.5:50051")
        if simulate_gpus:
            from fleet.agent.probe import parse_gpu_spec

            try:
                parse_gpu_spec(simulate_gpus)
            except ValueError as e:
                fail(f"--simulate-gpus: {e}")
        models = _absolute(models_dir)
        settings = {"controller": controller, "join_token": join_token, "data_dir": str(AGENT.state_dir),
                    "name": name, "models_dir": str(models) if models else None, "simulate_gpus": simulate_gpus}
        # The default models dir is inside the state dir, which the unit already makes writable.
        _install(AGENT, settings, root, no_start, [models] if models else [])

    @agent_app.command("uninstall")
    def agent_uninstall(root: RootOpt = None, purge: PurgeOpt = False) -> None:
        """Stop the agent and its engines, remove the fleet-agent unit (--purge: config and data dir too)."""
        _uninstall(AGENT, root, purge)

    @controller_app.command("install")
    def controller_install(
        listen: Annotated[str | None, typer.Option(
            help="gRPC address for agents and the CLI (default: that of `fleet controller run`)")] = None,
        data_dir: Annotated[Path | None, typer.Option(
            help=f"state: fleet.db, tokens (default: {CONTROLLER.state_dir})")] = None,
        root: RootOpt = None,
        no_start: NoStartOpt = False,
    ) -> None:
        """Install the controller as the systemd service fleet-controller, run by the `fleet` system user."""
        data = _absolute(data_dir) or CONTROLLER.state_dir
        settings = {"data_dir": str(data), "listen": listen}
        _install(CONTROLLER, settings, root, no_start, [] if data == CONTROLLER.state_dir else [data])

    @controller_app.command("uninstall")
    def controller_uninstall(root: RootOpt = None, purge: PurgeOpt = False) -> None:
        """Stop the controller and remove the fleet-controller unit (--purge: config and database too)."""
        _uninstall(CONTROLLER, root, purge)
