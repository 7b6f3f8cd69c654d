"""`fleet agent run`: probe this machine, join the controller, keep the session open."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from fleet.agent.footprint import Meter
from fleet.agent.launch import NodeEngines, make_launcher
from fleet.agent.link import AgentFatal, Link, addresses
from fleet.agent.probe import nvml_usage, probe
from fleet.agent.supervisor import Supervisor
from fleet.common import sdnotify
from fleet.common.private import private_dir, private_file

log = logging.getLogger("fleet.agent")

VERSION = "0.1.0"


@dataclass(frozen=True)
class AgentConfig:
    controller: str
    data_dir: Path
    join_token: str | None = None
    name: str | None = None
    simulate: str | None = None
    declare_engines: tuple[str, ...] = ()
    models_dir: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)
    engine_host: str = "127.0.0.1"
    advertise_host: str | None = None  # --advertise-address: endpoints and multi-node parts
    allow_public_rpc: bool = False
    engine_ports: tuple[int, int] = (40000, 40999)
    engine_paths: dict[str, str] = field(default_factory=dict)
    insecure: bool = False
    ca_file: Path | None = None
    llama_extra_args: tuple[str, ...] = ()
    vllm_extra_args: tuple[str, ...] = ()


def local_address_towards(controller: str) -> str:
    """The local address of this node's connection to the controller (the first, when several are given): the
    address its peers most likely reach it at. A UDP socket is "connected" only to ask the kernel for its route;
    nothing is sent."""
    host, _, port = addresses(controller)[0].rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port) if port.isdigit() else 50051))
            return str(s.getsockname()[0])
    except OSError as e:
        log.warning("cannot tell the local address towards the controller at %s (%s); parts of multi-node "
                    "replicas cannot run here without --advertise-address", controller, e)
        return ""


async def serve(cfg: AgentConfig) -> None:
    node = (cfg.name or socket.gethostname()).lower()
    data_dir = private_dir(cfg.data_dir)  # 0700 at every start, whoever created it
    for name in ("node-credential.json", "controller-ca.crt"):
        private_file(data_dir / name)
    models_dir = (cfg.models_dir or data_dir / "models").resolve()
    # Hardware is re-detected on every start: a GPU swapped during maintenance shows up at once.
    found = await asyncio.to_thread(probe, models_dir, node, cfg.simulate, cfg.engine_paths, None,
                                    cfg.declare_engines, data_dir)
    log.info("probed %d GPU(s) via %s, engines: %s", len(found.gpus), found.gpu_probe,
             ", ".join(f"{e.name} {e.version}" for e in found.engines) or "none")
    usage = None
    if found.gpu_probe == "nvml":
        import pynvml

        def usage() -> dict[str, tuple[int, int, int]]:
            return nvml_usage(pynvml)

    advertise = cfg.advertise_host or (socket.gethostname() if cfg.engine_host == "0.0.0.0" else cfg.engine_host)
    part_address = cfg.advertise_host or await asyncio.to_thread(local_address_towards, cfg.controller)
    log.info("advertising %s to the other parts of multi-node replicas", part_address or "nothing")
    def progress(rid: str, message: str) -> None:
        supervisor.note(rid, message)

    launcher = make_launcher(NodeEngines(installed=found.engines, gpus=found.gpus, models_dir=models_dir,
                                         replicas_dir=data_dir / "replicas", llama_extra_args=cfg.llama_extra_args,
                                         vllm_extra_args=cfg.vllm_extra_args, advertise_address=part_address,
                                         allow_public_rpc=cfg.allow_public_rpc), progress)
    nvml = None
    if found.gpu_probe == "nvml":
        import pynvml as nvml
    meter = Meter(nvml=nvml, versions={e.name: e.version for e in found.engines})
    supervisor = Supervisor(data_dir, launcher, host=cfg.engine_host, advertise=advertise, ports=cfg.engine_ports,
                            simulate=bool(cfg.simulate), meter=meter, part_address=part_address)
    link = Link(cfg.controller, data_dir, found, node, cfg.join_token, VERSION, usage=usage, labels=cfg.labels,
                supervisor=supervisor, insecure=cfg.insecure, ca_file=cfg.ca_file, advertise_address=part_address,
                allow_public_rpc=cfg.allow_public_rpc)
    task = asyncio.create_task(link.run())
    supervising = asyncio.create_task(supervisor.run())
    # Ready before the controller answers: an outage there must not make systemd restart the agent.
    sdnotify.ready(f"node {node}")
    watchdog = asyncio.create_task(sdnotify.watchdog_loop())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        sdnotify.stopping()
        # Engines keep running: the next agent adopts them (systemd: KillMode=process).
        log.info("agent stopping; %d engine(s) left running for the next agent to adopt",
                 sum(1 for r in supervisor.replicas.values() if r.pid))
    finally:
        supervising.cancel()
        watchdog.cancel()


def run(cfg: AgentConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(cfg))
    except AgentFatal as e:
        log.error("%s", e.message)
        return e.code
    return 0
