"""A replica's observed memory: engine log lines (real ones, several releases), the process tree's RSS, and
NVML's per-process GPU memory fed as NVML answers it (as the probe tests do), mapped to the right replica
and GPU."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from fleet.agent.engine_memory import GIB, MIB, parse
from fleet.agent.footprint import Meter, current_run_log, fingerprint, nvml_process_memory, process_tree

LOGS = Path(__file__).parent / "engine_logs"


def test_llama_server_on_cpu_real_log():
    m = parse("llama.cpp", (LOGS / "llama-server-0.3.36-cpu.log").read_text())
    assert m.weights == int(92.10 * MIB) and m.kv_cache == int(11.25 * MIB)
    assert m.activations == int(14.01 * MIB) and m.runtime == int(0.75 * MIB)


def test_llama_server_split_over_gpus_counts_the_largest_gpu_not_the_host():
    m = parse("llama.cpp", (LOGS / "llama-server-2024-two-gpus.log").read_text())
    assert m.weights == int(13989.53 * MIB)  # CUDA1; the CPU-mapped token embedding is not GPU memory
    assert m.kv_cache == int(3584 * MIB) and m.activations == int(672.01 * MIB)
    newer = parse("llama.cpp", (LOGS / "llama-server-2025-four-gpus.log").read_text())
    assert newer.kv_cache == int(703.50 * MIB) and newer.activations == int(1958.63 * MIB)
    assert newer.weights == 0  # not in the log: unknown, not an error


def test_vllm_v0_profile_and_v1_per_worker_lines():
    v0 = parse("vllm", (LOGS / "vllm-v0-rtx3090.log").read_text())
    assert v0.weights == int(14.9888 * GIB) and v0.kv_cache == int(3.81 * GIB)
    assert v0.activations == pytest.approx((17.06 - 14.9888) * GIB, rel=1e-3)
    assert v0.runtime == int(0.35 * GIB)
    v1 = parse("vllm", (LOGS / "vllm-v1-h100-tp2.log").read_text())
    assert v1.weights == int(32.19 * GIB) and v1.kv_cache == int(38.52 * GIB) and v1.runtime == int(0.81 * GIB)


def test_missing_lines_and_unknown_engines_are_zero():
    assert not parse("vllm", "INFO nothing about memory\n").known
    assert not parse("llama.cpp", "").known
    assert not parse("other", "Model loading took 3 GiB").known


def test_only_the_current_run_is_read(tmp_path: Path):
    log = tmp_path / "engine.log"
    log.write_text("==== fleet: starting old\nModel loading took 9.00 GiB memory\n"
                   "==== fleet: starting new\nModel loading took 2.00 GiB memory\n")
    assert parse("vllm", current_run_log(log)).weights == 2 * GIB
    assert current_run_log(tmp_path / "missing.log") == ""


# ---------------------------------------------------------------- NVML's answers


class FakeNvml:
    """Two GPUs; processes of two replicas and a stranger, as nvmlDeviceGetComputeRunningProcesses lists them."""

    NVMLError = pynvml.NVMLError

    def __init__(self, procs: dict[str, list[tuple[int, int | None]]], fail_graphics: bool = True) -> None:
        self.procs = procs
        self.uuids = list(procs)
        self.fail_graphics = fail_graphics
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        return self.uuids[i]

    def nvmlDeviceGetUUID(self, h: str) -> bytes:
        return h.encode()

    def nvmlDeviceGetComputeRunningProcesses(self, h: str) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.procs[h]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: str) -> list[Any]:
        if self.fail_graphics:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.nvmlDeviceGetComputeRunningProcesses(h)


@pytest.fixture
def engine() -> Iterator[subprocess.Popen[bytes]]:
    """A real process with a child, standing in for an engine and its worker."""
    code = "import subprocess,sys,time; c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); " \
           "print(c.pid, flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    yield p
    for child in process_tree(p.pid)[1:]:
        child.kill()
    p.kill()
    p.wait()


def test_nvml_per_process_memory_goes_to_the_right_replica_and_gpu(engine: subprocess.Popen[bytes],
                                                                   tmp_path: Path):
    assert engine.stdout is not None
    worker = int(engine.stdout.readline())
    a, b = "GPU-aaaa", "GPU-bbbb"
    nvml = FakeNvml({
        # the replica's engine on GPU a, its TP worker on GPU b; another replica (pid 999999) on both;
        # NVML without per-process accounting (None) for a third process
        a: [(engine.pid, 30 * GIB), (999999, 10 * GIB), (999998, None)],
        b: [(worker, 28 * GIB), (999999, 10 * GIB)],
    })
    tree = {p.pid for p in process_tree(engine.pid)}
    assert tree == {engine.pid, worker}
    assert nvml_process_memory(nvml, tree) == {a: 30 * GIB, b: 28 * GIB}
    assert nvml.calls == ["init", "shutdown"]
    (tmp_path / "engine.log").write_text("==== fleet: starting vllm\nModel loading took 20.00 GiB memory\n")
    meter = Meter(nvml=nvml, versions={"vllm": "0.32.0"})
    m = meter.measure("r1", "vllm", engine.pid, [a, b], tmp_path / "engine.log", now=5.0)
    assert m is not None
    assert {g.uuid: g.bytes for g in m.gpus} == {a: 30 * GIB, b: 28 * GIB}
    assert m.total == 30 * GIB and m.weights == 20 * GIB and m.engine_version == "0.32.0" and m.ram > 0
    # a replica given only GPU b reports only GPU b, whatever else its processes touch
    only_b = meter.measure("r2", "vllm", engine.pid, [b], tmp_path / "engine.log", now=5.0)
    assert only_b is not None and [g.uuid for g in only_b.gpus] == [b] and only_b.total == 28 * GIB


def test_cpu_replica_total_is_the_trees_rss(engine: subprocess.Popen[bytes], tmp_path: Path):
    assert engine.stdout is not None
    engine.stdout.readline()
    m = Meter().measure("r", "llama.cpp", engine.pid, [], tmp_path / "engine.log", now=1.0)
    assert m is not None and m.total == m.ram > 1 * MIB and not m.gpus
    assert Meter().measure("gone", "llama.cpp", 2**22 + 12345, [], tmp_path / "x.log") is None
    assert fingerprint(m) != fingerprint(None)


def test_nvml_gone_means_no_gpu_part(engine: subprocess.Popen[bytes], tmp_path: Path):
    class Broken(FakeNvml):
        def nvmlInit(self) -> None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    m = Meter(nvml=Broken({})).measure("r", "vllm", engine.pid, ["GPU-x"], tmp_path / "engine.log")
    assert m is not None and not m.gpus and m.total == 0


def test_vllm_cpu_build_lines():
    # vLLM 0.32 CPU build (lines from a replica this project's e2e suite ran)
    text = ("INFO [weight_utils.py:1108] Filesystem type for checkpoints: EXT4. Checkpoint size: 2.50 GiB. "
            "Available RAM: 20.69 GiB.\n"
            "INFO [cpu_worker.py:260] Explicitly set (0.06/11.21) GiB for KV cache on node 0.\n")
    m = parse("vllm", text)
    assert m.weights == int(2.5 * GIB) and m.kv_cache == int(0.06 * GIB)
