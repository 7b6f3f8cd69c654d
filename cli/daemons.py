"""`fleet controller run` and `fleet agent run`: the two long-running processes."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.config import AgentConfigOpt, ControllerConfigOpt
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

    @controller_app.command("migrate")
    def controller_migrate(
        source: Annotated[str, typer.Option("--from", help="the database now, e.g. sqlite:////var/lib/fleet/fleet.db")],
        target: Annotated[str, typer.Option("--to", help="the new one, e.g. postgresql+psycopg://fleet@db/fleet")],
    ) -> None:
        """Move a controller's state to another database (SQLite to PostgreSQL, for several controllers).

        Stop the controller first; then run this; then start one or more controllers with --db TARGET
        (each with its own --data-dir). Nodes, GPUs, deployments, replicas, reservations, drains, tokens,
        API keys, events and the CA move; agents and the CLI keep working with the same tokens.
        """
        from fleet.controller.core.errors import FleetError
        from fleet.controller.store.migrate import migrate

        print(f"copying {source} -> {target}")
        try:
            copied = migrate(source, target)
        except FleetError as e:
            fail(e.message)
        print(f"done: {sum(copied.values())} row(s) in {len(copied)} table(s); start the controllers with "
              f"--db {target}")

    @controller_app.command("run")
    def controller_run(
        config: ControllerConfigOpt = None,
        data_dir: Annotated[Path, typer.Option(
            envvar="FLEET_DATA_DIR", help="state: fleet.db, join-token, admin-token")]
        = Path.home() / ".local/share/fleet/controller",
        listen: Annotated[str, typer.Option(help="gRPC address for agents and the CLI")] = "127.0.0.1:50051",
        db: Annotated[str | None, typer.Option(help="SQLAlchemy URL instead of DATA_DIR/fleet.db, e.g. postgresql://…")]
        = None,
        heartbeat_interval: Annotated[float, typer.Option(help="seconds between agent heartbeats")] = 5.0,
        offline_after: Annotated[float, typer.Option(help="seconds without a heartbeat before a node is offline")]
        = 15.0,
        reschedule_after: Annotated[float, typer.Option(
            help="seconds a node may be offline before its replicas are placed elsewhere")] = 60.0,
        lease_ttl: Annotated[float, typer.Option(
            help="several controllers on one database: seconds before another takes over the fleet-wide duties "
                 "(offline detection, rescheduling, drains) from one that died")] = 10.0,
        restart_grace: Annotated[float, typer.Option(
            help="after a restart, seconds a node that was online has to reconnect before it counts as offline "
                 "(agents retry with up to 10 s backoff)")] = 25.0,
        drain_min_healthy: Annotated[float, typer.Option(
            help="seconds a drain's replacement must serve before the old replica stops")] = 5.0,
        insecure: Annotated[bool, typer.Option("--insecure", help="plaintext gRPC (loopback addresses only)")]
        = False,
        tls_san: Annotated[list[str], typer.Option(help="extra name or IP for the server certificate (repeatable)")]
        = [],  # noqa: B006
        tls_cert: Annotated[Path | None, typer.Option(help="your server certificate (PEM) instead of DATA_DIR/tls")]
        = None,
        tls_key: Annotated[Path | None, typer.Option(help="its private key (PEM)")] = None,
        tls_ca: Annotated[Path | None, typer.Option(help="the CA that signed it (PEM)")] = None,
        http_listen: Annotated[str, typer.Option(
            help="HTTP address: OpenAI gateway (/v1), /metrics, capacity page (/); '' turns it off")]
        = "127.0.0.1:8080",
        http_max_connections: Annotated[int, typer.Option(
            help="HTTP connections open at once; more are closed at once (lowered to fit the open-file limit)",
            min=16)] = 1000,
        http_header_timeout: Annotated[float, typer.Option(
            help="seconds a new HTTP connection has to send its request line and headers", min=0.1)] = 10.0,
        http_idle_timeout: Annotated[float, typer.Option(
            help="seconds an idle keep-alive HTTP connection stays open", min=0.1)] = 30.0,
        http_body_timeout: Annotated[float, typer.Option(
            help="seconds a client has to send a request body", min=0.1)] = 60.0,
        http_max_body: Annotated[int, typer.Option(
            help="largest request body in MiB (413 beyond, before it is read)", min=1)] = 64,
        http_body_budget: Annotated[int, typer.Option(
            help="MiB of request bodies held at once across all requests (503 beyond)", min=1)] = 256,
    ) -> None:
        """Start the controller. First start writes DATA_DIR/join-token and DATA_DIR/admin-token (mode 0600).

        TLS is on by default: a private CA and server certificate are created in DATA_DIR/tls, and the join
        token carries the CA fingerprint so agents verify the controller without copying files.
        """
        from fleet.controller.main import HttpLimits, Settings, TLSOptions, run

        if heartbeat_interval <= 0 or offline_after <= heartbeat_interval:
            fail("--offline-after must be longer than --heartbeat-interval, and both positive")
        run(data_dir.expanduser(), listen, db,
            Settings(heartbeat_interval=heartbeat_interval, offline_after=offline_after,
                     flush_interval=min(1.0, heartbeat_interval), reschedule_after=reschedule_after,
                     drain_min_healthy=drain_min_healthy, restart_grace=restart_grace,
                     lease_ttl=lease_ttl),
            TLSOptions(insecure=insecure, sans=tuple(tls_san), cert=tls_cert, key=tls_key, ca=tls_ca), http_listen,
            HttpLimits(max_connections=http_max_connections, header_timeout=http_header_timeout,
                       idle_timeout=http_idle_timeout, body_timeout=http_body_timeout,
                       max_body=http_max_body * 2**20, body_budget=max(http_body_budget, http_max_body) * 2**20))

    @agent_app.command("run")
    def agent_run(
        config: AgentConfigOpt = None,
        controller: Annotated[str, typer.Option(
            envvar="FLEET_CONTROLLER",
            help="controller HOST:PORT; several on one database: HOST:PORT,HOST:PORT (any will do)")]
        = "127.0.0.1:50051",
        join_token: Annotated[str | None, typer.Option(
            envvar="FLEET_JOIN_TOKEN", help="the controller's DATA_DIR/join-token (first start)")] = None,
        data_dir: Annotated[Path, typer.Option(envvar="FLEET_AGENT_DATA_DIR", help="node credential, logs, replicas")]
        = Path.home() / ".local/share/fleet/agent",
        name: Annotated[str | None, typer.Option(help="node name (default: the hostname)")] = None,
        simulate_gpus: Annotated[str | None, typer.Option(
            help="declare GPUs instead of probing NVML, e.g. 8xA100-80GB or 2xRTX4090,1xL40S")] = None,
        models_dir: Annotated[Path | None, typer.Option(help="where weights live (default: DATA_DIR/models)")] = None,
        label: Annotated[list[str], typer.Option(help="node label KEY=VALUE (repeatable)")] = [],  # noqa: B006
        declare_engines: Annotated[str | None, typer.Option(
            help="with --simulate-gpus: engines to report as installed, e.g. llama.cpp,vllm "
                 "(replicas are accounted, not launched)")] = None,
        engine_host: Annotated[str, typer.Option(help="address engines listen on (they require their API key)")]
        = "127.0.0.1",
        advertise_host: Annotated[str | None, typer.Option(
            "--advertise-address", "--advertise-host",
            help="address the controller and other nodes reach this node at: the host in replica endpoints, and "
                 "where parts of multi-node replicas (rpc-server, vLLM) bind and are dialled [default endpoints: "
                 "--engine-host, or the hostname for 0.0.0.0; parts: the local address of the connection to the "
                 "controller]")] = None,
        allow_public_rpc: Annotated[bool, typer.Option(
            "--allow-public-rpc", help="allow llama.cpp rpc-server parts on a public advertise address "
                                       "(rpc-server has no authentication)")] = False,
        engine_ports: Annotated[str, typer.Option(help="port range for engines, FROM-TO")] = "40000-40999",
        llama_server: Annotated[str | None, typer.Option(help="llama-server binary [default: engine cache, PATH]")]
        = None,
        vllm: Annotated[str | None, typer.Option(help="vllm executable [default: engine cache, PATH]")] = None,
        llama_server_args: Annotated[str, typer.Option(
            help="extra flags for every llama-server on this node, e.g. '--flash-attn on -t 16'")] = "",
        vllm_args: Annotated[str, typer.Option(
            help="extra flags for every vllm serve on this node, e.g. '--enable-prefix-caching'")] = "",
        insecure: Annotated[bool, typer.Option("--insecure", help="plaintext gRPC to a loopback controller")]
        = False,
        ca_file: Annotated[Path | None, typer.Option(
            help="the controller's CA (PEM) when the join token carries no fingerprint")] = None,
    ) -> None:
        """Start the agent: probe GPUs/RAM/disk/engines, join with the join token once, then stay connected."""
        from fleet.agent.main import AgentConfig, run
        from fleet.agent.probe import ENGINE_BINARIES, parse_gpu_spec

        if simulate_gpus:
            try:
                parse_gpu_spec(simulate_gpus)
            except ValueError as e:
                fail(f"--simulate-gpus: {e}")
        declared = tuple(e.strip() for e in (declare_engines or "").split(",") if e.strip())
        if declared and not simulate_gpus:
            fail("--declare-engines goes with --simulate-gpus (a real node reports the engines it has)")
        unknown = [e for e in declared if e not in ENGINE_BINARIES]
        if unknown:
            fail(f"--declare-engines: unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINE_BINARIES)}")
        lo, sep, hi = engine_ports.partition("-")
        if not (sep and lo.isdigit() and hi.isdigit() and 1024 <= int(lo) <= int(hi) <= 65535):
            fail(f"--engine-ports {engine_ports!r}: write FROM-TO, e.g. 40000-40999")
        paths = {k: v for k, v in (("llama.cpp", llama_server), ("vllm", vllm)) if v}
        code = run(AgentConfig(
            controller=controller, data_dir=data_dir.expanduser(), join_token=join_token, name=name,
            simulate=simulate_gpus, declare_engines=declared, models_dir=models_dir, labels=parse_labels(label),
            engine_host=engine_host, advertise_host=advertise_host, allow_public_rpc=allow_public_rpc,
            engine_ports=(int(lo), int(hi)),
            engine_paths=paths, insecure=insecure, ca_file=ca_file,
            llama_extra_args=tuple(shlex.split(llama_server_args)), vllm_extra_args=tuple(shlex.split(vllm_args))))
        raise typer.Exit(code)
