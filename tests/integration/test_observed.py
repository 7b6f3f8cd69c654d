"""Observed memory through the real controller: a node's session reports what a replica really uses (as an
agent on NVIDIA GPUs would); describe, estimate and /metrics show it, a replica above its reservation is
flagged, and the next placement of the same key reserves observed + margin."""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
from collections.abc import Iterator

import grpc

from tests.integration.harness import Fleet, wait_for
from tests.integration.test_security import node_credential, secure_channel

GIB = 2**30
ENGINES = ("--declare-engines", "vllm,llama.cpp")


def describe(fleet: Fleet, name: str) -> dict:
    r = fleet.cli("deployment", "describe", name, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_observed_memory_is_shown_flagged_and_learned(fleet: Fleet) -> None:
    from fleet.proto import fleet_pb2 as pb
    from fleet.proto import fleet_pb2_grpc as pbg

    fleet.start_agent("n1", "2xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"n1": "ready"}, 20, "node ready")
    r = fleet.cli("place", "llama3.1-8b", "--quant", "q4_k_m", "--context", "8192", "--name", "first", "-o", "json")
    assert r.returncode == 0, r.stderr + r.stdout
    first = json.loads(r.stdout)["deployment"]
    replica = first["replicas"][0]
    reserved = replica["gpus"][0]["reserved"]
    assert reserved == first["estimate"]["total"]
    gpus = fleet.nodes()[0]["gpus"]

    # The agent goes; a session with its credential reports as it would: the engine uses 3 GiB more than
    # fleet reserved for it on its GPU.
    fleet.kill_agent("n1")
    cred = node_credential(fleet, "n1")
    inv = pb.Inventory(hostname="n1", gpu_probe="nvml", engines=[pb.Engine(name="llama.cpp", version="b5000")],
                       disk_total=2**40, disk_free=2**40, ram_total=2**38, ram_available=2**38, cpu_count=32,
                       gpus=[pb.Gpu(uuid=g["uuid"], index=g["index"], name=g["name"], memory_total=g["memory_total"],
                                    compute_capability=g["compute_capability"], declared=True) for g in gpus])
    used = reserved + 3 * GIB
    memory = pb.ReplicaMemory(gpus=[pb.GpuMemoryUse(uuid=replica["gpus"][0]["uuid"], bytes=used)], ram=400 * 2**20,
                              weights=4_920_000_000, kv_cache=1 * GIB, activations=300 * 2**20, total=used,
                              engine_version="b5000", measured_at=1.0)
    outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
    outbox.put(pb.AgentMessage(inventory=inv))

    def requests() -> Iterator[pb.AgentMessage]:
        seq = 0
        while True:
            try:
                m = outbox.get(timeout=fleet.heartbeat / 2)
            except queue.Empty:  # an agent beats between reports, or the node goes offline
                seq += 1
                m = pb.AgentMessage(heartbeat=pb.Heartbeat(seq=seq, disk_free=2**40, ram_available=2**38))
            if m is None:
                return
            yield m

    ch = secure_channel(fleet)
    stream = pbg.AgentStub(ch).Session(requests(), metadata=(("authorization", f"Bearer {cred}"),
                                                             ("x-fleet-node", "n1")))
    got: list[pb.ControllerMessage] = []
    def read() -> None:
        try:
            for m in stream:
                got.append(m)
        except grpc.RpcError:
            pass  # the test closed the channel

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: any(m.WhichOneof("kind") == "desired" for m in got), 20, "the desired set")
    gen = next(m.desired.generation for m in got if m.WhichOneof("kind") == "desired")
    outbox.put(pb.AgentMessage(replicas=pb.ReplicaReport(applied_generation=gen, replicas=[
        pb.ReplicaStatus(id=replica["id"], state="healthy", endpoint="http://n1:40000", pid=4242, memory=memory)])))
    try:
        d = wait_for(lambda: (x := describe(fleet, "first"))["replicas"][0]["observed"] and x, 20, "observed")
        seen = d["replicas"][0]["observed"]
        assert seen["total"] == used and seen["weights"] == 4_920_000_000 and seen["engine_version"] == "b5000"
        assert seen["gpus"] == {replica["gpus"][0]["uuid"]: used}
        assert d["replicas"][0]["over_reservation"] is True
        assert d["observed"]["replicas"] == 1 and d["observed"]["total"] == used
        table = fleet.cli("deployment", "describe", "first")
        assert "OBSERVED" in table.stdout and "more memory than it reserved" in table.stdout

        admin = (fleet.data_dir / "admin-token").read_text().strip()  # /metrics is for readers only
        req = urllib.request.Request(f"http://{fleet.http}/metrics", headers={"Authorization": f"Bearer {admin}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            metrics = resp.read().decode()
        labels = f'deployment="first",gpu="{replica["gpus"][0]["uuid"]}",node="n1",replica="{replica["id"]}"'
        samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
        assert float(samples[f"fleet_replica_memory_observed_bytes{{{labels}}}"]) == used
        assert float(samples[f"fleet_replica_memory_over_reservation{{{labels}}}"]) == 1.0

        # `fleet estimate` with the controller configured (the harness sets FLEET_CONTROLLER)
        est = fleet.cli("estimate", "llama3.1-8b", "--quant", "q4_k_m", "--context", "8192", "--gpu", "A100-80GB",
                        "-o", "json")
        assert est.returncode == 0, est.stderr
        observed = json.loads(est.stdout)["observed"]
        assert observed["replicas"] == 1 and observed["total"] == used and observed["engine_versions"] == ["b5000"]
        text = fleet.cli("estimate", "llama3.1-8b", "--quant", "q4_k_m", "--context", "8192", "--gpu", "A100-80GB")
        assert "observed on 1 replica(s)" in text.stdout

        # the next replica of the same key reserves what was observed, plus the margin
        again = fleet.cli("place", "llama3.1-8b", "--quant", "q4_k_m", "--context", "8192", "--name", "second",
                          "--dry-run", "-o", "json")
        assert again.returncode == 0, again.stderr + again.stdout
        second = json.loads(again.stdout)["deployment"]
        assert second["replicas"][0]["gpus"][0]["reserved"] >= used + 256 * 2**20 > second["estimate"]["total"]
        assert second["reserved"] == second["replicas"][0]["gpus"][0]["reserved"]
    finally:
        outbox.put(None)
        ch.close()
