"""Engine launchers: a replica spec in, the exact argv and environment of its engine process out.

Pure functions over plain data (no processes, no I/O): the supervisor runs what these return, the
unit tests pin it, and the e2e tests check every flag against the installed engines' `--help`.

`Launch.env` holds only what the replica needs on top of the agent's own environment; the
supervisor merges it over `os.environ`. GPUs are pinned by UUID in CUDA_VISIBLE_DEVICES (CUDA
accepts `GPU-<uuid>` entries), so the engine sees exactly its GPUs, renumbered from 0.

The replica's API key never goes on the command line (every local user can read it with `ps`, and
the supervisor logs the command line): llama-server reads it from a file (`--api-key-file`, which
`Launch.files` asks the supervisor to write, 0600), vLLM from its environment (VLLM_API_KEY).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

LLAMA_CPP = "llama.cpp"
VLLM = "vllm"
# vLLM's multiprocessing executor across nodes (--nnodes, --node-rank, --master-addr, --master-port, --headless)
# first shipped in this release; older ones need Ray for that.
VLLM_MULTINODE = (0, 11, 1)

CPU = "cpu"
GPU = "gpu"

# -ngl larger than any model's layer count = every layer on the GPU(s).
ALL_LAYERS = 999


class LaunchError(ValueError):
    """The spec cannot be turned into a command line (unknown engine or quantization)."""


@dataclass(frozen=True)
class ReplicaSpec:
    """What one replica needs to start: the proto ReplicaSpec after weights and port are resolved."""

    id: str
    engine: str                          # "llama.cpp" or "vllm"
    served_name: str                     # the model name clients send (`--alias` / `--served-model-name`)
    model_path: str                      # GGUF file (llama.cpp) or model folder / repo id (vLLM)
    port: int
    api_key: str
    quant: str = ""                      # fleet quant name: q4_k_m, awq, gptq, fp8, bf16, int8, ...
    context: int = 4096
    device: str = GPU                    # "gpu" or "cpu"
    gpu_uuids: tuple[str, ...] = ()
    tp: int = 1                          # vLLM tensor parallel size
    gpu_memory_utilization: float = 0.0  # vLLM on GPU: computed by the controller from the estimate
    tensor_split: tuple[float, ...] = ()  # llama.cpp across several GPUs: proportion per GPU
    kv_cache_bytes: int = 0              # vLLM on CPU: KV pool size (it must be given there)
    api_key_file: str = "api-key"        # llama.cpp: where the key is written (relative: the engine's cwd)
    compute_capability: float = 0.0      # lowest of the replica's GPUs (picks Marlin kernels); 0 = unknown
    gpu_layers: int = ALL_LAYERS         # llama.cpp -ngl on GPU
    # Context beyond the model's native length: rope scaling (yarn, linear, dynamic), its factor over the
    # native length, and the rope base that vLLM's rope_parameters must restate. "" = none.
    rope_scaling: str = ""
    rope_factor: float = 0.0
    rope_original_context: int = 0
    rope_theta: float = 0.0
    # A part of a replica spanning several nodes ("" for a one-node replica): main (serves HTTP), rpc
    # (llama.cpp's rpc-server) or follower (vLLM --headless).
    part: str = ""
    rank: int = 0
    nnodes: int = 1
    peers: tuple[str, ...] = ()          # llama.cpp main: rpc-server host:port, by rank
    master_address: str = ""             # vLLM: the main's rendezvous host:port (the main's own, on the main)
    bind_address: str = ""               # this node's advertised address (rpc-server binds only to it)
    interface: str = ""                  # the network interface holding bind_address (NCCL/GLOO traffic)


@dataclass(frozen=True)
class EngineConfig:
    """Per-node engine settings (agent config): where the engines are, and what else to pass them."""

    llama_server: str = "llama-server"
    vllm: str = "vllm"
    host: str = "0.0.0.0"                # engine ports are reachable from the network, hence the API key
    llama_extra_args: tuple[str, ...] = ()
    vllm_extra_args: tuple[str, ...] = ()
    offline: bool = False                # no hub access: vLLM must not try to reach it
    vllm_cache_root: str = ""            # private compile caches, one folder per replica under it
    rpc_server: str = "rpc-server"       # llama.cpp's RPC server (parts of multi-node replicas)
    vllm_version: str = ""               # as `vllm --version` says; checked before multi-node flags


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path -> content, written 0600 before the engine starts


def launch(spec: ReplicaSpec, config: EngineConfig = EngineConfig()) -> Launch:
    if spec.engine == LLAMA_CPP and spec.part == "rpc":
        return rpc_server_launch(spec, config)
    if spec.engine == LLAMA_CPP:
        return llama_server_launch(spec, config)
    if spec.engine == VLLM:
        return vllm_launch(spec, config)
    raise LaunchError(f"unknown engine {spec.engine!r} (expected {LLAMA_CPP} or {VLLM})")


def _on_cpu(spec: ReplicaSpec) -> bool:
    return spec.device == CPU or not spec.gpu_uuids


def _visible_devices(spec: ReplicaSpec) -> str:
    # Empty string (not unset) on CPU: a CUDA build must not grab a GPU that belongs to another replica.
    return "" if _on_cpu(spec) else ",".join(spec.gpu_uuids)


def _num(x: float) -> str:
    return f"{x:g}"


# ---------------------------------------------------------------- llama.cpp


def llama_server_launch(spec: ReplicaSpec, config: EngineConfig = EngineConfig()) -> Launch:
    cpu = _on_cpu(spec)
    if spec.part == "main" and spec.peers:
        # The main of a multi-node replica: the rpc-servers' devices come first in llama.cpp's device list, then
        # its own GPUs; on CPU its own RAM keeps the layers the rpc-servers do not take (-ngl).
        ngl = str(spec.gpu_layers if cpu else ALL_LAYERS)
    else:
        ngl = "0" if cpu else str(spec.gpu_layers)
    argv = [
        config.llama_server,
        "-m", spec.model_path,
        "--host", config.host,
        "--port", str(spec.port),
        "-c", str(spec.context),
        "-ngl", ngl,
    ]
    if spec.part == "main" and spec.peers:
        argv += ["--rpc", ",".join(spec.peers)]
        devices = len(spec.tensor_split)
        if devices > 1:
            if devices < len(spec.peers) + (0 if cpu else len(spec.gpu_uuids)):
                raise LaunchError(f"tensor split {spec.tensor_split} has fewer entries than the replica's devices")
            argv += ["--tensor-split", ",".join(_num(x) for x in spec.tensor_split)]
    # Only meaningful across several GPUs; with one, llama.cpp would ignore it anyway.
    elif not cpu and len(spec.gpu_uuids) > 1 and spec.tensor_split:
        if len(spec.tensor_split) != len(spec.gpu_uuids):
            raise LaunchError(f"tensor split {spec.tensor_split} does not match {len(spec.gpu_uuids)} GPUs")
        argv += ["--tensor-split", ",".join(_num(x) for x in spec.tensor_split)]
    if spec.rope_scaling:
        argv += ["--rope-scaling", "yarn" if spec.rope_scaling == "yarn" else "linear",
                 "--rope-scale", _num(spec.rope_factor), "--yarn-orig-ctx", str(spec.rope_original_context)]
    argv += ["--alias", spec.served_name, "--api-key-file", spec.api_key_file, *config.llama_extra_args]
    # Verbosity 4 logs the model, KV and compute buffer sizes the agent reports as observed memory.
    return Launch(argv, {"CUDA_VISIBLE_DEVICES": _visible_devices(spec), "LLAMA_ARG_LOG_VERBOSITY": "4"},
                  {spec.api_key_file: spec.api_key + "\n"})


def rpc_server_launch(spec: ReplicaSpec, config: EngineConfig = EngineConfig()) -> Launch:
    """A non-main part of a multi-node llama.cpp replica: rpc-server exposing this node's GPUs (or its CPU).

    rpc-server has no authentication: it binds only to the node's advertised address, never to 0.0.0.0.
    """
    if not spec.bind_address or spec.bind_address in ("0.0.0.0", "::"):
        raise LaunchError("rpc-server needs this node's advertised address to bind to (agent --advertise-address)")
    argv = [config.rpc_server, "-H", spec.bind_address, "-p", str(spec.port)]
    # CUDA_VISIBLE_DEVICES: only the GPUs reserved for this part; "" on CPU, so rpc-server exposes its CPU.
    return Launch(argv, {"CUDA_VISIBLE_DEVICES": _visible_devices(spec)})


# ---------------------------------------------------------------- vLLM


# Fleet quant names whose weights say how they are quantized in their own config: vLLM detects
# the method (compressed-tensors for llm-compressor's INT8 W8A8 and W4A16 checkpoints) by itself.
_AUTO_DETECTED = {"int8", "w8a8", "int8-w8a8", "w4a16", "compressed-tensors"}
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "f16": "float16", "fp32": "float32", "f32": "float32"}
MARLIN_MIN_CC = 8.0


def vllm_quant_args(quant: str, compute_capability: float, cpu: bool) -> list[str]:
    """`--quantization`/`--dtype` flags for a fleet quant name.

    AWQ and GPTQ get their Marlin kernels (much faster) on compute capability >= 8.0; the CPU
    backend and older GPUs use the plain kernels. GGUF is not built into vLLM any more.
    """
    q = quant.lower().strip()
    marlin = not cpu and compute_capability >= MARLIN_MIN_CC
    if q in ("", "none"):
        return []
    if q in _DTYPES:
        return ["--dtype", _DTYPES[q]]
    if q in _AUTO_DETECTED:
        return []
    if q == "awq":
        return ["--quantization", "awq_marlin" if marlin else "awq"]
    if q in ("gptq", "gptq-int4", "gptq-int8"):
        return ["--quantization", "gptq_marlin" if marlin else "gptq"]
    if q == "fp8":
        return ["--quantization", "fp8"]
    raise LaunchError(f"vLLM cannot serve quantization {quant!r} (GGUF variants run on llama.cpp)")


def vllm_rope_overrides(spec: ReplicaSpec) -> str:
    """`--hf-overrides` JSON for rope scaling: vLLM >= 0.12 reads `rope_parameters` (a dict override replaces the
    config's, so the rope base is restated) and no longer scales max_position_embeddings for YaRN itself."""
    params: dict[str, object] = {"rope_type": spec.rope_scaling, "factor": spec.rope_factor,
                                 "original_max_position_embeddings": spec.rope_original_context}
    if spec.rope_theta:
        params["rope_theta"] = spec.rope_theta
    return json.dumps({"rope_parameters": params, "max_position_embeddings": spec.context}, separators=(",", ":"))
def vllm_multinode(version: str) -> str | None:
    """Why this vLLM cannot run a replica across nodes with its multiprocessing executor, or None."""
    found = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if found is None:
        return f"cannot tell the vLLM version from {version!r}"
    have = tuple(int(x or 0) for x in found.groups())
    if have < VLLM_MULTINODE:
        return (f"vLLM {version} cannot run a replica across nodes without Ray: --nnodes/--node-rank/--master-addr "
                f"need vLLM >= {'.'.join(map(str, VLLM_MULTINODE))}; upgrade it (`fleet engine install vllm`)")
    return None


def vllm_multinode_args(spec: ReplicaSpec, config: EngineConfig) -> tuple[list[str], dict[str, str]]:
    """The multiprocessing multi-node flags (TP inside the node, one pipeline stage per node) and the network
    environment: VLLM_HOST_IP is the advertised address, NCCL/GLOO use the interface that holds it."""
    problem = vllm_multinode(config.vllm_version)
    if problem:
        raise LaunchError(problem)
    host, sep, port = spec.master_address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise LaunchError(f"multi-node vLLM needs the main's rendezvous host:port, got {spec.master_address!r}")
    argv = ["--pipeline-parallel-size", str(spec.nnodes), "--nnodes", str(spec.nnodes),
            "--node-rank", str(spec.rank), "--master-addr", host.strip("[]"), "--master-port", port,
            "--distributed-executor-backend", "mp"]
    if spec.part == "follower":
        argv.append("--headless")
    env = {}
    if spec.bind_address:
        env["VLLM_HOST_IP"] = spec.bind_address
    if spec.interface:
        env["NCCL_SOCKET_IFNAME"] = spec.interface
        env["GLOO_SOCKET_IFNAME"] = spec.interface
    return argv, env


def vllm_launch(spec: ReplicaSpec, config: EngineConfig = EngineConfig()) -> Launch:
    cpu = _on_cpu(spec)
    follower = spec.part == "follower"
    # A follower serves no HTTP: the main's API server drives its workers over torch.distributed.
    argv = [config.vllm, "serve", spec.model_path]
    if not follower:
        argv += ["--host", config.host, "--port", str(spec.port)]
    argv += [
        "--served-model-name", spec.served_name,
        "--tensor-parallel-size", str(spec.tp),
        "--max-model-len", str(spec.context),
    ]
    env = {"CUDA_VISIBLE_DEVICES": _visible_devices(spec)}
    if spec.part:
        if cpu:
            raise LaunchError("vLLM's CPU build runs a replica on one node; use llama.cpp across nodes")
        more, net = vllm_multinode_args(spec, config)
        argv += more
        env.update(net)
    if cpu:
        if spec.kv_cache_bytes <= 0:
            # Without it the CPU backend wants 92 % of the machine's RAM free and refuses to start.
            raise LaunchError("vLLM on CPU needs kv_cache_bytes (the estimate's KV share)")
        # CUDA graphs do not exist on CPU; eager avoids compile work at start.
        argv += ["--kv-cache-memory-bytes", str(spec.kv_cache_bytes), "--enforce-eager"]
        # One process instead of an engine-core child: less RAM, and stopping the pid stops it all.
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    else:
        if not 0.0 < spec.gpu_memory_utilization <= 1.0:
            raise LaunchError(f"gpu_memory_utilization must be in (0, 1], got {spec.gpu_memory_utilization}")
        argv += ["--gpu-memory-utilization", f"{spec.gpu_memory_utilization:.4f}"]
    argv += vllm_quant_args(spec.quant, spec.compute_capability, cpu)
    if spec.rope_scaling:
        argv += ["--hf-overrides", vllm_rope_overrides(spec)]
    argv += list(config.vllm_extra_args)
    if not follower:  # a follower serves no HTTP
        env["VLLM_API_KEY"] = spec.api_key
    if config.offline:
        env["HF_HUB_OFFLINE"] = "1"
    if config.vllm_cache_root:
        env["VLLM_CACHE_ROOT"] = f"{config.vllm_cache_root.rstrip('/')}/{spec.id}"
    return Launch(argv, env)
