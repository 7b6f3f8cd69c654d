"""What this machine has: GPUs (NVML or declared), host memory and disk (psutil), engines on PATH.

Produces plain dataclasses; the link turns them into wire messages.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fleet.common.gpus import gpu_type

log = logging.getLogger("fleet.agent")

# A fixed namespace: declared GPUs get UUIDs that are stable across agent restarts.
DECLARED_NS = uuidlib.UUID("6f1c2a4e-1d2b-4c39-9a55-0c1f7e8d9b10")


@dataclass(frozen=True)
class GpuInfo:
    uuid: str
    index: int
    name: str
    memory_total: int
    memory_used: int
    compute_capability: str
    driver: str = ""
    utilization: int = 0
    temperature: int = -1
    declared: bool = False


@dataclass(frozen=True)
class EngineInfo:
    name: str
    version: str
    path: str
    multinode: bool = False  # can run a part of a replica over several nodes (rpc-server; vLLM >= 0.11.1)
    rpc_server: str = ""  # llama.cpp: the rpc-server beside llama-server


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    cpu_count: int
    ram_total: int
    ram_available: int
    models_dir: str
    disk_total: int
    disk_free: int


@dataclass(frozen=True)
class Probe:
    host: HostInfo
    gpus: tuple[GpuInfo, ...]
    gpu_probe: str  # nvml | declared | none
    engines: tuple[EngineInfo, ...] = field(default=())


# ---------------------------------------------------------------- declared GPUs

SPEC_ITEM = re.compile(r"^\s*(?:(\d+)\s*[xX*]\s*)?(.+?)\s*$")


def parse_gpu_spec(spec: str) -> list[tuple[int, str]]:
    """'8xA100-80GB' or '2xRTX4090,1xL40S' -> [(count, table name)]; ValueError says what is wrong."""
    out: list[tuple[int, str]] = []
    for part in spec.split(","):
        if not part.strip():
            continue
        m = SPEC_ITEM.match(part)
        if m is None:
            raise ValueError(f"cannot read GPU spec item {part!r}; write COUNTxTYPE, e.g. 8xA100-80GB")
        count = int(m.group(1) or 1)
        if not 1 <= count <= 64:
            raise ValueError(f"GPU count {count} in {part!r} must be between 1 and 64")
        try:
            name = gpu_type(m.group(2)).name
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
        out.append((count, name))
    if not out:
        raise ValueError("empty GPU spec; write COUNTxTYPE, e.g. 8xA100-80GB or 2xRTX4090,1xL40S")
    return out


def declared_gpus(spec: str, node_name: str) -> tuple[GpuInfo, ...]:
    gpus: list[GpuInfo] = []
    for count, name in parse_gpu_spec(spec):
        t = gpu_type(name)
        for _ in range(count):
            i = len(gpus)
            gpus.append(GpuInfo(
                uuid=f"GPU-{uuidlib.uuid5(DECLARED_NS, f'{node_name}/{i}/{t.name}')}", index=i, name=t.name,
                memory_total=t.memory_bytes, memory_used=0, compute_capability=t.compute_capability,
                driver="declared", declared=True,
            ))
    return tuple(gpus)


# ---------------------------------------------------------------- NVML

def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_gpus(nvml: Any) -> tuple[GpuInfo, ...]:
    """Probe through an NVML binding (pynvml, or a test's stand-in giving NVML's answers).

    Raises nvml.NVMLError when NVML itself is unusable (no driver); a failing optional query on one
    GPU (utilization, temperature) degrades that field only.
    """
    nvml.nvmlInit()
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
            try:
                util = int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            except nvml.NVMLError as e:
                log.debug("gpu %d: utilization unavailable: %s", i, e)
                util = 0
            try:
                temp = int(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
            except nvml.NVMLError as e:
                log.debug("gpu %d: temperature unavailable: %s", i, e)
                temp = -1
            gpus.append(GpuInfo(
                uuid=_text(nvml.nvmlDeviceGetUUID(h)), index=i, name=_text(nvml.nvmlDeviceGetName(h)),
                memory_total=int(mem.total), memory_used=int(mem.used),
                compute_capability=f"{major}.{minor}", driver=driver, utilization=util, temperature=temp,
            ))
        return tuple(gpus)
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def nvml_usage(nvml: Any) -> dict[str, tuple[int, int, int]]:
    """Fresh memory used / utilization / temperature per GPU UUID, for heartbeats."""
    return {g.uuid: (g.memory_used, g.utilization, g.temperature) for g in nvml_gpus(nvml)}


def probe_gpus(simulate: str | None, node_name: str, nvml: Any = None) -> tuple[tuple[GpuInfo, ...], str]:
    if simulate:
        return declared_gpus(simulate, node_name), "declared"
    if nvml is None:
        import pynvml as nvml  # nvidia-ml-py
    try:
        return nvml_gpus(nvml), "nvml"
    except nvml.NVMLError as e:
        log.info("no NVIDIA GPUs: NVML unavailable (%s); this node offers CPU and RAM only", e)
        return (), "none"


# ---------------------------------------------------------------- host and engines

def probe_host(models_dir: Path) -> HostInfo:
    models_dir.mkdir(parents=True, exist_ok=True)
    vm = psutil.virtual_memory()
    du = psutil.disk_usage(str(models_dir))
    return HostInfo(hostname=socket.gethostname(), cpu_count=psutil.cpu_count() or 1, ram_total=vm.total,
                    ram_available=vm.available, models_dir=str(models_dir), disk_total=du.total, disk_free=du.free)


ENGINE_BINARIES = {"llama.cpp": "llama-server", "vllm": "vllm"}


def probe_engines(paths: dict[str, str] | None = None, declared: tuple[str, ...] = (),
                  data_dir: Path | None = None) -> tuple[EngineInfo, ...]:
    """Engines this node can launch: the agent's own engine cache (DATA_DIR/engines), the shared one
    (`fleet engine install`), configured paths, PATH.

    `declared` engines (with declared GPUs, for capacity planning) are reported without a binary.
    """
    from fleet.agent.engine_install import agent_engines_dir, find_engines, rpc_server_beside
    from fleet.agent.engines import vllm_multinode

    found: dict[str, EngineInfo] = {}
    own = [agent_engines_dir(data_dir)] if data_dir is not None else []
    for e in find_engines(extra_paths=[p for p in (paths or {}).values() if p], first=own):
        if (paths or {}).get(e.name) and str(e.path) != paths[e.name] and e.name not in found:
            continue  # an operator-configured path wins over the cache and PATH
        rpc = rpc_server_beside(e.path) if e.name == "llama.cpp" else None
        multinode = rpc is not None if e.name == "llama.cpp" else vllm_multinode(e.version) is None
        found.setdefault(e.name, EngineInfo(name=e.name, version=e.version, path=str(e.path), multinode=multinode,
                                            rpc_server=str(rpc or "")))
    for name in declared:
        # Declared engines (capacity planning) can be planned as any part of a multi-node replica.
        found.setdefault(name, EngineInfo(name=name, version="declared", path="", multinode=True))
    return tuple(found[n] for n in sorted(found))


def probe(models_dir: Path, node_name: str, simulate: str | None = None,
          engine_paths: dict[str, str] | None = None, nvml: Any = None,
          declared_engines: tuple[str, ...] = (), data_dir: Path | None = None) -> Probe:
    gpus, how = probe_gpus(simulate, node_name, nvml)
    return Probe(host=probe_host(models_dir), gpus=gpus, gpu_probe=how,
                 engines=probe_engines(engine_paths, declared_engines, data_dir))
