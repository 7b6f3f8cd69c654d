"""A replica's real footprint: its engine's process tree, its resident memory, and per GPU what NVML says
those processes use; combined with what the engine logs about its own memory into one ReplicaMemory.

NVML is passed in (pynvml, or a test's stand-in giving NVML's answers, as in the probe tests); a GPU or a
query NVML cannot answer counts as not measured, never as an error.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fleet.agent import engine_memory
from fleet.proto import fleet_pb2 as pb

log = logging.getLogger("fleet.agent")

START_MARKER = b"==== fleet: starting "
LOG_WINDOW = 8 * 2**20  # memory lines come in the first few MB after a start


def process_tree(pid: int) -> list[psutil.Process]:
    """The engine and every process it started (vLLM's engine core and TP workers)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def rss_bytes(procs: Iterable[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_process_memory(nvml: Any, pids: set[int]) -> dict[str, int]:
    """GPU UUID -> bytes used on it by processes in `pids` (NVML's compute and graphics process lists).

    NVML reports a process's usage per GPU; a replica's processes may sit on several GPUs (TP workers),
    so each GPU sums only the pids listed on it. Raises nvml.NVMLError when NVML itself is unusable.
    """
    out: dict[str, int] = {}
    nvml.nvmlInit()
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            seen: dict[int, int] = {}
            for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    procs = getattr(nvml, query)(h)
                except (nvml.NVMLError, AttributeError):
                    continue
                for p in procs:
                    used = getattr(p, "usedGpuMemory", None)
                    if p.pid in pids and isinstance(used, int) and used >= 0:
                        seen[p.pid] = max(seen.get(p.pid, 0), used)  # a pid in both lists counts once
            if seen:
                out[_text(nvml.nvmlDeviceGetUUID(h))] = sum(seen.values())
        return out
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def current_run_log(path: Path, window: int = LOG_WINDOW) -> str:
    """The engine log since the supervisor's last start line (the current run of the engine)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - window))
            data = f.read()
    except OSError:
        return ""
    at = data.rfind(START_MARKER)
    return (data[at:] if at >= 0 else data)[:window].decode("utf-8", "replace")


@dataclass
class Meter:
    """Measures replicas' footprints; remembers what each run's log said once it has said it."""

    nvml: Any = None                          # pynvml when this node has NVIDIA GPUs
    versions: dict[str, str] = field(default_factory=dict)   # engine -> version on this node
    logged: dict[tuple[str, int], engine_memory.LoggedMemory] = field(default_factory=dict)

    def measure(self, replica_id: str, engine: str, pid: int, gpu_uuids: Iterable[str], log_path: Path,
                now: float | None = None) -> pb.ReplicaMemory | None:
        procs = process_tree(pid)
        if not procs:
            return None
        mine = set(gpu_uuids)
        per_gpu: dict[str, int] = {}
        if self.nvml is not None and mine:
            try:
                per_gpu = {u: b for u, b in nvml_process_memory(self.nvml, {p.pid for p in procs}).items()
                           if u in mine}
            except Exception as e:  # NVML gone (driver reload): this measurement has no GPU part
                log.debug("replica %s: NVML process query failed: %s", replica_id, e)
        key = (replica_id, pid)
        logged = self.logged.get(key)
        if logged is None or not (logged.weights and logged.kv_cache):
            logged = engine_memory.parse(engine, current_run_log(log_path))
            self.logged = {k: v for k, v in self.logged.items() if k[0] != replica_id}
            self.logged[key] = logged
        ram = rss_bytes(procs)
        total = max(per_gpu.values()) if per_gpu else (ram if not mine else 0)
        return pb.ReplicaMemory(
            gpus=[pb.GpuMemoryUse(uuid=u, bytes=b) for u, b in sorted(per_gpu.items())], ram=ram,
            weights=logged.weights, kv_cache=logged.kv_cache, activations=logged.activations,
            runtime=logged.runtime, total=total, engine_version=self.versions.get(engine, ""),
            measured_at=time.time() if now is None else now)

    def forget(self, replica_id: str) -> None:
        self.logged = {k: v for k, v in self.logged.items() if k[0] != replica_id}


def fingerprint(m: pb.ReplicaMemory | None) -> tuple[int, ...]:
    """What counts as a change worth a report: terms appearing, or the total moving by 64 MiB or more."""
    if m is None:
        return ()
    return (m.total >> 26, m.ram >> 26, bool(m.weights), bool(m.kv_cache), bool(m.activations), len(m.gpus))
