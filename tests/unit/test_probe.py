"""The NVML code path, fed NVML's answers; declared GPU specs."""

from __future__ import annotations

import logging
import shutil
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from fleet.agent.probe import declared_gpus, nvml_gpus, parse_gpu_spec, probe_gpus


class FakeNvml:
    """Answers as NVML gives them for two GPUs of different kinds; one optional query fails."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, devices: list[dict[str, Any]], init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.devices[i]

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return h["uuid"]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> bytes | str:
        return h["name"]

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(total=h["total"], used=h["used"], free=h["total"] - h["used"])

    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        return h["cc"]

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> SimpleNamespace:
        if h.get("util") is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=h["util"], memory=0)

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return h["temp"]


A100 = {"uuid": "GPU-11111111-2222-3333-4444-555555555555", "name": b"NVIDIA A100-SXM4-80GB",
        "total": 85899345920, "used": 1048576 * 600, "cc": (8, 0), "util": 37, "temp": 41}
RTX = {"uuid": "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "name": "NVIDIA GeForce RTX 4090",
       "total": 25757220864, "used": 0, "cc": (8, 9), "util": None, "temp": 30}


def test_two_kinds_and_one_failing_call() -> None:
    nvml = FakeNvml([A100, RTX])
    gpus = nvml_gpus(nvml)
    assert [g.uuid for g in gpus] == [A100["uuid"], RTX["uuid"]]
    assert gpus[0].name == "NVIDIA A100-SXM4-80GB" and gpus[1].name == "NVIDIA GeForce RTX 4090"
    assert (gpus[0].memory_total, gpus[0].memory_used) == (85899345920, 629145600)
    assert [g.compute_capability for g in gpus] == ["8.0", "8.9"]
    assert gpus[0].utilization == 37 and gpus[0].temperature == 41 and gpus[0].driver == "550.54.15"
    assert gpus[1].utilization == 0  # not supported on that board: degraded, not fatal
    assert [g.index for g in gpus] == [0, 1] and not any(g.declared for g in gpus)
    assert nvml.calls == ["init", "shutdown"]


def test_no_driver_means_no_gpus_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fleet.agent")
    gpus, how = probe_gpus(None, "n1", nvml=FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    assert gpus == () and how == "none"
    assert sum("NVML unavailable" in r.message for r in caplog.records) == 1


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no NVIDIA driver on this machine")
def test_real_nvml() -> None:
    gpus, how = probe_gpus(None, "real")
    assert how == "nvml" and gpus and all(g.uuid.startswith("GPU-") and g.memory_total > 0 for g in gpus)


def test_spec_parsing() -> None:
    assert parse_gpu_spec("8xA100-80GB") == [(8, "A100-80GB")]
    assert parse_gpu_spec("2xRTX4090,1xL40S") == [(2, "RTX4090"), (1, "L40S")]
    assert parse_gpu_spec("h100") == [(1, "H100-80GB")]
    for bad, why in [("3xB9000", "unknown GPU type"), ("0xT4", "between 1 and 64"), ("", "empty GPU spec")]:
        with pytest.raises(ValueError, match=why):
            parse_gpu_spec(bad)


def test_declared_uuids_are_stable_and_distinct() -> None:
    a, b = declared_gpus("2xRTX4090,1xL40S", "node-1"), declared_gpus("2xRTX4090,1xL40S", "node-1")
    assert a == b
    assert len({g.uuid for g in a}) == 3
    assert {g.uuid for g in declared_gpus("2xRTX4090,1xL40S", "node-2")}.isdisjoint({g.uuid for g in a})
    assert a[2].memory_total == 46068 * 2**20 and a[2].compute_capability == "8.9"
