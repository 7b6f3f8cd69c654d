"""What a node is told to run (rpc/convert.desired_set): table tests from rows to the wire message."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.controller.app.controller import DesiredRows
from fleet.controller.rpc.convert import desired_set
from fleet.controller.store.schema import DeploymentRow, ReplicaRow, ReservationRow

GIB = 1024**3
CHAT = DeploymentRow(name="chat", model="qwen2-72b", quant="awq", engine="vllm", context=8192, replicas_wanted=2,
                     source="Qwen/Qwen2-72B-Instruct-AWQ", tp=2)
CPU = DeploymentRow(name="small", model="smollm2-135m", quant="q4_1", engine="llama.cpp", context=512,
                    replicas_wanted=1, device="cpu", source="HuggingFaceTB/x", file="m.gguf")


def replica(rid: str, dep: str = "chat", desired: str = "run", **kw: Any) -> ReplicaRow:
    return ReplicaRow(id=rid, deployment=dep, node="n", desired=desired, api_key=f"key-{rid}", **kw)


def res(rid: str, index: int, gib: float) -> ReservationRow:
    return ReservationRow(replica=rid, gpu_uuid=f"GPU-{index}", gpu_index=index, bytes=int(gib * GIB))


TABLE = [
    # (case, replicas, deployments, reservations, expected [(id, gpu uuids, tensor_split)])
    ("one GPU, no split", [replica("r1", tp=1)], [CHAT], [res("r1", 3, 40)], [("r1", ["GPU-3"], [])]),
    ("GPUs in index order, split by reservation", [replica("r1", tp=2)], [CHAT],
     [res("r1", 5, 30), res("r1", 1, 10)], [("r1", ["GPU-1", "GPU-5"], [0.25, 0.75])]),
    ("asked to stop: not in the set, so the agent stops it", [replica("r1"), replica("r2", desired="stop")], [CHAT],
     [res("r1", 0, 40), res("r2", 1, 40)], [("r1", ["GPU-0"], [])]),
    ("a replica whose deployment is gone is not sent", [replica("r1", dep="gone")], [CHAT], [], []),
    ("CPU: no GPUs, RAM and file carried", [replica("c1", dep="small", ram_bytes=GIB)], [CPU], [],
     [("c1", [], [])]),
]


@pytest.mark.parametrize("case,replicas,deps,reservations,expected", TABLE, ids=[row[0] for row in TABLE])
def test_desired_set(case: str, replicas: list[ReplicaRow], deps: list[DeploymentRow],
                     reservations: list[ReservationRow], expected: list[tuple[str, list[str], list[float]]]) -> None:
    msg = desired_set(DesiredRows(7, replicas, {d.name: d for d in deps}, reservations))
    assert msg.generation == 7
    assert [(s.id, list(s.gpu_uuids), list(s.tensor_split)) for s in msg.replicas] == expected
    for s in msg.replicas:
        dep = next(d for d in deps if d.name == s.deployment)
        assert (s.model, s.quant, s.engine, s.context, s.source, s.file, s.device) == (
            dep.model, dep.quant, dep.engine, dep.context, dep.source, dep.file, dep.device)
        assert s.api_key == f"key-{s.id}"
        mine = sorted((x for x in reservations if x.replica == s.id), key=lambda x: x.gpu_index)
        assert list(s.reserved_bytes) == [x.bytes for x in mine]
