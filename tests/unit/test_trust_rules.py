"""Table tests of the trust rules' pure parts: edge validation of what agents report, the log repeat
filter, file modes, and how a reader's credential is read from a header."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest

from fleet.common.private import private_dir, private_file, write_private
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.replica_states import STATES
from fleet.controller.log_repeats import RepeatFilter
from fleet.controller.rpc.validate import (
    MAX_GPU_MEMORY,
    validate_heartbeat,
    validate_inventory,
    validate_replica_report,
)
from fleet.proto import fleet_pb2 as pb

GIB = 2**30
GOOD_GPU = {"uuid": "GPU-6b1f2c3d-0000-4000-8000-000000000001", "index": 0, "name": "NVIDIA A100-SXM4-80GB",
            "memory_total": 80 * GIB, "memory_used": GIB, "compute_capability": "8.0", "driver": "550.54.15",
            "utilization": 7, "temperature": 41}


def good() -> pb.Inventory:
    return pb.Inventory(hostname="gpu-01.example", cpu_count=64, ram_total=512 * GIB, ram_available=400 * GIB,
                        models_dir="/var/lib/fleet/models", disk_total=4000 * GIB, disk_free=3000 * GIB,
                        agent_version="0.1.0", gpu_probe="nvml", labels={"zone": "a", "rack": "b-12"},
                        engines=[pb.Engine(name="vllm", version="0.32.0", path="/opt/vllm/bin/vllm")],
                        gpus=[pb.Gpu(**GOOD_GPU), pb.Gpu(**{**GOOD_GPU, "uuid": "MIG-GPU-6b1f/1/0", "index": 1})])


def test_a_real_inventory_passes() -> None:
    validate_inventory(good())
    validate_inventory(pb.Inventory())  # an empty one too: a CPU node that reports little


@pytest.mark.parametrize(("change", "words"), [
    (lambda i: i.gpus[0].__setattr__("memory_total", 2**64 - 1), "memory_total"),
    (lambda i: i.gpus[0].__setattr__("memory_total", MAX_GPU_MEMORY + 1), "memory_total"),
    (lambda i: i.gpus[0].__setattr__("memory_used", 2**63), "memory_used"),
    (lambda i: i.gpus[0].__setattr__("utilization", 101), "utilization"),
    (lambda i: i.gpus[0].__setattr__("temperature", -40), "temperature"),
    (lambda i: i.gpus[0].__setattr__("uuid", ""), "without a UUID"),
    (lambda i: i.gpus[0].__setattr__("uuid", "GPU 1"), "is not a UUID"),
    (lambda i: i.gpus[1].__setattr__("uuid", GOOD_GPU["uuid"]), "twice"),
    (lambda i: i.gpus[0].__setattr__("compute_capability", "sm_80"), "compute_capability"),
    (lambda i: i.gpus[0].__setattr__("name", "A100\x1b[2J"), "control characters"),
    (lambda i: i.__setattr__("ram_total", 2**63 - 1), "ram_total"),
    (lambda i: i.__setattr__("disk_free", 2**64 - 1), "disk_free"),
    (lambda i: i.__setattr__("hostname", "h" * 254), "hostname"),
    (lambda i: i.__setattr__("gpu_probe", "NVML!"), "gpu_probe"),
    (lambda i: i.labels.__setitem__("bad key", "v"), "label key"),
    (lambda i: i.labels.__setitem__("k", "x" * 254), "label k"),
    (lambda i: i.labels.update({f"k{n}": "v" for n in range(65)}), "labels"),
    (lambda i: i.engines.add(name="../x"), "engine name"),
    (lambda i: i.gpus.extend([pb.Gpu(uuid=f"GPU-{n}") for n in range(63)]), "at most 64"),
])
def test_every_field_is_bounded(change, words: str) -> None:  # type: ignore[no-untyped-def]
    inv = good()
    change(inv)
    with pytest.raises(InvalidArgument) as e:
        validate_inventory(inv)
    assert words in e.value.message


def test_heartbeats_and_reports_are_bounded() -> None:
    validate_heartbeat(pb.Heartbeat(gpus=[pb.GpuUsage(uuid=GOOD_GPU["uuid"], memory_used=GIB, utilization=3)]))
    for hb in (pb.Heartbeat(gpus=[pb.GpuUsage(uuid="g", memory_used=2**64 - 1)]),
               pb.Heartbeat(gpus=[pb.GpuUsage(uuid="g"), pb.GpuUsage(uuid="g")]),
               pb.Heartbeat(gpus=[pb.GpuUsage(uuid="")]), pb.Heartbeat(ram_available=2**64 - 1)):
        with pytest.raises(InvalidArgument):
            validate_heartbeat(hb)
    validate_replica_report(pb.ReplicaReport(replicas=[pb.ReplicaStatus(id="chat-0-a1b2c3", state="healthy",
                                                                        endpoint="http://gpu-01:40000")]))
    # every state an agent reports is accepted: a declared node's replica included
    validate_replica_report(pb.ReplicaReport(replicas=[pb.ReplicaStatus(id=f"chat-{i}", state=state)
                                                       for i, state in enumerate(STATES)]))
    for r in (pb.ReplicaStatus(id="chat-0", state="owned"),
              pb.ReplicaStatus(id="chat-0", state="healthy", endpoint="http://169.254.169.254/latest/meta-data"),
              pb.ReplicaStatus(id="chat-0", state="healthy", endpoint="file:///etc/passwd:1"),
              pb.ReplicaStatus(id="../../x", state="healthy")):
        with pytest.raises(InvalidArgument):
            validate_replica_report(pb.ReplicaReport(replicas=[r]))


def test_repeat_filter_lets_one_through_per_window_and_counts_the_rest() -> None:
    f = RepeatFilter(window=10.0)

    def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("asyncio", level, __file__, 1, msg, None, None)

    assert f.filter(record("accept failed"))
    assert not any(f.filter(record("accept failed")) for _ in range(1000))
    assert f.filter(record("another error"))  # another kind is not held back
    assert f.filter(record("accept failed", logging.INFO))  # below WARNING: never filtered
    first, held = f.seen[("asyncio", "accept failed")]
    f.seen[("asyncio", "accept failed")] = (first - 11.0, held)  # the window has passed
    r = record("accept failed")
    assert f.filter(r) and "[1000 more like this" in r.msg


def test_private_files_and_dirs_are_tightened(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    (d / "db").write_text("x")
    (d / "db").chmod(0o644)
    private_dir(d)
    private_file(d / "db")
    private_file(d / "new", create=True)
    private_file(d / "absent")  # nothing to do, no error
    write_private(d / "secret", b"s")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("db", "new", "secret"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    assert not (d / "absent").exists()


@pytest.mark.parametrize(("header", "expected"), [
    ("Bearer sk-fleet-abc", "sk-fleet-abc"),
    ("bearer   tok ", "tok"),
    ("Basic " + base64.b64encode(b"anyone:sk-fleet-abc").decode(), "sk-fleet-abc"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), ""),
    ("Basic !!!not-base64", ""),
    ("Digest x", ""),
    ("", ""),
])
def test_reader_credential_from_the_header(header: str, expected: str) -> None:
    from aiohttp.test_utils import make_mocked_request

    from fleet.controller.http.readers import presented

    req = make_mocked_request("GET", "/metrics", headers={"Authorization": header} if header else {})
    assert presented(req) == expected


def test_a_database_from_before_key_roles_opens_and_its_keys_stay_client_keys(tmp_path: Path) -> None:
    import sqlite3

    from fleet.controller.store import apikeys
    from fleet.controller.store.db import sqlite_url
    from fleet.controller.store.hashing import token_hash
    from fleet.controller.store.repository import Store

    old = sqlite3.connect(tmp_path / "fleet.db")  # the apikey table as the previous release created it
    old.execute("CREATE TABLE apikey (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR NOT NULL, "
                "key_hash VARCHAR NOT NULL, created_at FLOAT NOT NULL, revoked BOOLEAN NOT NULL)")
    old.execute("INSERT INTO apikey VALUES (1, 'app', ?, 0, 0)", (token_hash("sk-fleet-old"),))
    old.commit()
    old.close()
    for _ in range(2):  # and again: the upgrade is idempotent
        store = Store(sqlite_url(tmp_path))
        assert apikeys.valid(store.engine, "sk-fleet-old")
        assert not apikeys.valid(store.engine, "sk-fleet-old", apikeys.VIEWER)
        assert [(k.name, k.role) for k in apikeys.list_keys(store.engine)] == [("app", "client")]
        store.engine.dispose()
