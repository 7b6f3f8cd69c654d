"""From the controller's ReplicaSpec to a process to start: engine binary, weights on disk, argv + env."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet.agent import engines
from fleet.agent.probe import EngineInfo, GpuInfo
from fleet.agent.supervisor import Launch, LaunchError
from fleet.agent.weights import WeightsMissing, resolve
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

    def path(self, engine: str) -> str:
        for e in self.installed:
            if e.name == engine and e.path:
                return e.path
        have = ", ".join(e.name for e in self.installed if e.path) or "none"
        raise LaunchError(f"engine {engine} is not installed on this node (installed: {have}); "
                          f"run `fleet engine install {engine}` and restart the agent")


def make_launcher(node: NodeEngines, progress: Callable[[str, str], None] = lambda _id, _m: None
                  ) -> Callable[[pb.ReplicaSpec, int, str], Launch]:
    ccs = {g.uuid: g.compute_capability for g in node.gpus}

    def launcher(spec: pb.ReplicaSpec, port: int, host: str) -> Launch:
        binary = node.path(spec.engine)
        try:
            weights = resolve(spec.source, spec.file, node.models_dir, lambda m: progress(spec.id, m))
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
        )
        try:
            out = engines.launch(engines.ReplicaSpec(
                id=spec.id, engine=spec.engine, served_name=spec.deployment, model_path=str(weights), port=port,
                api_key=spec.api_key, quant=spec.quant, context=spec.context or 4096,
                device=spec.device or ("gpu" if spec.gpu_uuids else "cpu"), gpu_uuids=tuple(spec.gpu_uuids),
                tp=spec.tp or 1, gpu_memory_utilization=spec.gpu_memory_utilization,
                tensor_split=tuple(spec.tensor_split), kv_cache_bytes=spec.kv_cache_bytes,
                compute_capability=min(caps) if caps else 0.0, rope_scaling=spec.rope_scaling,
                rope_factor=spec.rope_factor, rope_original_context=spec.rope_original_context,
                rope_theta=spec.rope_theta, api_key_file=str(where / "api-key"),
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
