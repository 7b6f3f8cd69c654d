"""From the controller's ReplicaSpec to a process to start: engine binary, weights on disk, argv + env."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleet.agent import engines
from fleet.agent.probe import EngineInfo, GpuInfo
from fleet.agent.supervisor import Launch, LaunchError
from fleet.agent.weights import WeightsMissing, resolve
from fleet.common.address import is_public
from fleet.proto import fleet_pb2 as pb


@dataclass(frozen=True)
class NodeEngines:
    """This node's engines and how to run them (agent configuration)."""

    installed: tuple[EngineInfo, ...]
    gpus: tuple[GpuInfo, ...]
    models_dir: Path
    llama_extra_args: tuple[str, ...] = ()
    vllm_extra_args: tuple[str, ...] = ()
    cache_root: Path | None = None
    replicas_dir: Path | None = None  # the supervisor's DATA_DIR/replicas: engines keep temp files there
    advertise_address: str = ""  # where the other parts of a multi-node replica reach this node
    allow_public_rpc: bool = False  # the operator allows rpc-server on a public advertise_address

    def engine(self, engine: str) -> EngineInfo:
        for e in self.installed:
            if e.name == engine and e.path:
                return e
        have = ", ".join(e.name for e in self.installed if e.path) or "none"
        raise LaunchError(f"engine {engine} is not installed on this node (installed: {have}); "
                          f"run `fleet engine install {engine}` and restart the agent")

    def path(self, engine: str) -> str:
        return self.engine(engine).path


def interface_of(address: str) -> str:
    """The network interface that holds `address` (NCCL/GLOO bind to it), or "" when none does."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%", 1)[0] == address for a in addrs):
            return name
    return ""


def check_rpc_address(address: str, allow_public: bool) -> None:
    """rpc-server has no authentication: never on an open network unless the operator opted in."""
    if not address:
        raise LaunchError("this node has no advertised address for rpc-server to bind to; "
                          "start the agent with --advertise-address")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise LaunchError(f"rpc-server binds to an IPv4 address only, not {address!r}: pass the node's IPv4 "
                          "address as --advertise-address") from None
    if is_public(address) and not allow_public:
        raise LaunchError(f"refusing to start rpc-server on {address}, a public address: rpc-server has no "
                          "authentication. Advertise a private address (--advertise-address), or start the agent "
                          "with --allow-public-rpc if this network is trusted")


def make_launcher(node: NodeEngines, progress: Callable[[str, str], None] = lambda _id, _m: None
                  ) -> Callable[[pb.ReplicaSpec, int, str], Launch]:
    ccs = {g.uuid: g.compute_capability for g in node.gpus}

    def launcher(spec: pb.ReplicaSpec, port: int, host: str) -> Launch:
        installed = node.engine(spec.engine)
        binary = installed.path
        part = spec.part if spec.HasField("part") else None
        rpc = part is not None and part.role == "rpc"
        if rpc:
            check_rpc_address(node.advertise_address, node.allow_public_rpc)
            if not installed.rpc_server:
                raise LaunchError(f"no rpc-server beside {binary}: run `fleet engine install llama.cpp` (it builds "
                                  "rpc-server) and restart the agent")
            weights = ""  # an rpc-server receives its tensors from the main
        else:
            try:
                weights = str(resolve(spec.source, spec.file, node.models_dir, lambda m: progress(spec.id, m)))
            except WeightsMissing as e:
                raise LaunchError(str(e)) from e
        caps = [float(ccs[u]) for u in spec.gpu_uuids if ccs.get(u)]
        where = (node.replicas_dir or node.models_dir.parent / "replicas") / spec.id
        config = engines.EngineConfig(
            llama_server=binary if spec.engine == engines.LLAMA_CPP else "llama-server",
            vllm=binary if spec.engine == engines.VLLM else "vllm",
            host=host, llama_extra_args=node.llama_extra_args, vllm_extra_args=node.vllm_extra_args,
            offline=os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true"),
            vllm_cache_root=str(node.cache_root or node.models_dir.parent / "vllm-cache"),
            rpc_server=installed.rpc_server or "rpc-server", vllm_version=installed.version,
        )
        try:
            out = engines.launch(engines.ReplicaSpec(
                id=spec.id, engine=spec.engine, served_name=spec.deployment, model_path=weights, port=port,
                api_key=spec.api_key, quant=spec.quant, context=spec.context or 4096,
                device=spec.device or ("gpu" if spec.gpu_uuids else "cpu"), gpu_uuids=tuple(spec.gpu_uuids),
                tp=spec.tp or 1, gpu_memory_utilization=spec.gpu_memory_utilization,
                tensor_split=tuple(spec.tensor_split), kv_cache_bytes=spec.kv_cache_bytes,
                compute_capability=min(caps) if caps else 0.0, rope_scaling=spec.rope_scaling,
                rope_factor=spec.rope_factor, rope_original_context=spec.rope_original_context,
                rope_theta=spec.rope_theta, api_key_file=str(where / "api-key"),
                part=part.role if part is not None else "", rank=part.rank if part is not None else 0,
                nnodes=part.nnodes if part is not None else 1, peers=tuple(part.peers) if part is not None else (),
                master_address=part.master_address if part is not None else "",
                bind_address=node.advertise_address if part is not None else "",
                interface=interface_of(node.advertise_address) if part is not None else "",
                **({"gpu_layers": part.gpu_layers} if part is not None and part.gpu_layers else {}),
            ), config)
        except engines.LaunchError as e:
            raise LaunchError(str(e)) from e
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        # vLLM leaves /tmp/vllm_dist_* behind: give each replica its own temp dir. Short, in the system temp
        # dir: vLLM puts IPC sockets there, and a socket path is limited to 107 bytes.
        tmp = Path(tempfile.gettempdir()) / f"fleet-{hashlib.sha1(str(where).encode()).hexdigest()[:12]}"
        tmp.mkdir(mode=0o700, exist_ok=True)
        return Launch(argv=out.argv, env={**env, "TMPDIR": str(tmp), **out.env}, files=out.files)

    return launcher
