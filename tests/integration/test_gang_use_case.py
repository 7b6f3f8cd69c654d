"""Multi-node replicas through the app layer on a real store (SQLite and PostgreSQL): place, the desired set of
every part, the start order (rpc-servers and followers first), the argv of both ranks, crash → new epoch, removal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet.agent.launch import NodeEngines, make_launcher
from fleet.agent.probe import EngineInfo, GpuInfo
from fleet.controller.app import deployments, nodes, reconcile
from fleet.controller.app.controller import Controller
from fleet.controller.app.place import PlaceArgs, place_deployment
from fleet.controller.rpc import convert
from fleet.proto import fleet_pb2 as pb
from tests.integration.fleet_state import GIB, controller, go_offline, join


def desired(ctl: Controller, node: str) -> dict[str, pb.ReplicaSpec]:
    return {s.id: s for s in convert.desired_set(ctl.desired_rows(node)).replicas}


def say(ctl: Controller, node: str, *statuses: nodes.ReplicaStatus) -> None:
    """The node's agent reports (having applied its newest desired set)."""
    nodes.report(ctl, node, list(statuses), ctl.store.get_node(node).generation)  # type: ignore[union-attr]


@pytest.fixture
def two_h100(tmp_path: Path, store_url: str) -> Controller:
    ctl = controller(tmp_path, store_url)
    join(ctl, "a", "8xH100-80GB", advertise="127.0.0.1")
    join(ctl, "b", "8xH100-80GB", advertise="10.9.0.2")
    return ctl


def test_deepseek_over_two_nodes_starts_followers_first_and_argv_for_both_ranks(two_h100: Controller,
                                                                                tmp_path: Path) -> None:
    ctl = two_h100
    out = place_deployment(ctl, PlaceArgs("deepseek-r1", quant="fp8", name="r1", context=32768), time.time())
    assert out.placed, out.summary
    [r] = ctl.store.replicas()
    [part] = ctl.store.parts()
    assert (r.node, r.nodes, part.node, part.role, part.rank) == ("a", 2, "b", "follower", 1)
    res = ctl.store.reservations()
    assert len(res) == 16 and {x.bytes for x in res} == {res[0].bytes}  # 8 GPUs on each node, same per-GPU bytes

    # -o json: nodes main first, per-node reservations
    d = convert.deployment_message(deployments.get(ctl, "r1"))
    rep = d.replicas[0]
    assert rep.node == "a" and [p.node for p in rep.parts] == ["a", "b"]
    assert [len(p.gpus) for p in rep.parts] == [8, 8] and len(rep.gpus) == 8

    main, follower = desired(ctl, "a")[r.id], desired(ctl, "b")[part.id]
    assert main.part.hold and follower.part.hold  # nobody has reported: the main's rendezvous is unknown
    assert list(main.gpu_uuids) == [f"GPU-a-{i}" for i in range(8)]
    assert list(follower.gpu_uuids) == [f"GPU-b-{i}" for i in range(8)]

    # a's agent holds the main and reports its rendezvous port: the follower may start, the main still waits
    say(ctl, "a", nodes.ReplicaStatus(r.id, "pending", address="127.0.0.1:40001"))
    main, follower = desired(ctl, "a")[r.id], desired(ctl, "b")[part.id]
    assert not follower.part.hold and follower.part.master_address == "127.0.0.1:40001"
    assert main.part.hold and "follower on b" in main.part.waiting_for
    say(ctl, "b", nodes.ReplicaStatus(part.id, "starting"))
    main = desired(ctl, "a")[r.id]
    assert not main.part.hold and main.part.nnodes == 2

    # both ranks through the agent's own launcher: the flags of vLLM's multiprocessing executor
    argv = {}
    for node, spec, address in (("a", main, "127.0.0.1"), ("b", follower, "10.9.0.2")):
        models = tmp_path / f"models-{node}"
        (models / "DeepSeek-R1").mkdir(parents=True)
        launcher = make_launcher(NodeEngines(
            installed=(EngineInfo("vllm", "0.32.0", "/opt/vllm/bin/vllm", multinode=True),),
            gpus=tuple(GpuInfo(u, i, "H100", 80 * GIB, 0, "9.0") for i, u in enumerate(spec.gpu_uuids)),
            models_dir=models, advertise_address=address))
        if spec.part.role == "main":
            spec.part.master_address = "127.0.0.1:40001"  # the supervisor fills in its own rendezvous
        launch = launcher(spec, 40000, "0.0.0.0")
        argv[node] = launch.argv
        assert launch.env["VLLM_HOST_IP"] == address
    assert argv["a"][argv["a"].index("--node-rank") + 1] == "0" and "--headless" not in argv["a"]
    assert argv["b"][argv["b"].index("--node-rank") + 1] == "1" and "--headless" in argv["b"]
    for node in "ab":
        a = argv[node]
        assert [a[a.index(f) + 1] for f in ("--tensor-parallel-size", "--pipeline-parallel-size", "--nnodes",
                                            "--master-addr", "--master-port")] == ["8", "2", "2", "127.0.0.1", "40001"]
    assert "--port" in argv["a"] and "--port" not in argv["b"]


def test_a_part_that_crashes_restarts_the_gang_in_order(two_h100: Controller) -> None:
    ctl = two_h100
    assert place_deployment(ctl, PlaceArgs("deepseek-r1", quant="fp8", name="r1"), time.time()).placed
    [r] = ctl.store.replicas()
    [part] = ctl.store.parts()
    say(ctl, "a", nodes.ReplicaStatus(r.id, "pending", address="127.0.0.1:40001"))
    say(ctl, "b", nodes.ReplicaStatus(part.id, "starting"))
    say(ctl, "a", nodes.ReplicaStatus(r.id, "healthy", "http://a:1", address="127.0.0.1:40001"))
    generation = ctl.store.get_node("a").generation  # type: ignore[union-attr]

    say(ctl, "b", nodes.ReplicaStatus(part.id, "pending", restarts=1, message="engine exited with code -9"))
    assert ctl.store.replicas()[0].epoch == 1
    assert ctl.store.get_node("a").generation > generation  # type: ignore[union-attr]
    main, follower = desired(ctl, "a")[r.id], desired(ctl, "b")[part.id]
    assert main.part.epoch == follower.part.epoch == 1
    assert follower.part.hold  # until the main holds its port in epoch 1, running no older engine
    # a late report from the old epoch changes nothing
    say(ctl, "b", nodes.ReplicaStatus(part.id, "pending", restarts=2, epoch=0))
    assert ctl.store.replicas()[0].epoch == 1
    say(ctl, "a", nodes.ReplicaStatus(r.id, "pending", address="127.0.0.1:40001", epoch=1))
    assert not desired(ctl, "b")[part.id].part.hold


def test_llama_cpp_main_waits_for_its_rpc_servers_and_splits_layers(tmp_path: Path, store_url: str) -> None:
    ctl = controller(tmp_path, store_url)
    join(ctl, "a", [], engines=("llama.cpp",), ram_gib=16, advertise="10.9.0.1")
    join(ctl, "b", [], engines=("llama.cpp",), ram_gib=16, advertise="10.9.0.2")
    out = place_deployment(ctl, PlaceArgs("smollm2-135m", quant="q4_1", device="cpu", context=512, nodes=2,
                                          name="smol"), time.time())
    assert out.placed, out.summary
    [r] = ctl.store.replicas()
    [part] = ctl.store.parts()
    assert part.role == "rpc" and r.ram_bytes > 0 and part.ram_bytes == r.ram_bytes
    assert 1 <= r.gpu_layers <= 31  # SmolLM2: 30 layers + the output layer, shared by RAM
    rpc = desired(ctl, "b")[part.id]
    assert not rpc.part.hold and rpc.source == "" and rpc.part.role == "rpc"  # rpc-servers download nothing
    main = desired(ctl, "a")[r.id]
    assert main.part.hold and not main.part.peers
    say(ctl, "b", nodes.ReplicaStatus(part.id, "starting", address="10.9.0.2:40000"))
    assert desired(ctl, "a")[r.id].part.hold  # listening is what counts
    say(ctl, "b", nodes.ReplicaStatus(part.id, "healthy", address="10.9.0.2:40000"))
    main = desired(ctl, "a")[r.id]
    assert not main.part.hold and list(main.part.peers) == ["10.9.0.2:40000"]
    assert main.part.gpu_layers == r.gpu_layers


def test_removal_stops_every_part_and_forgets_the_gang_when_all_stopped(two_h100: Controller) -> None:
    ctl = two_h100
    assert place_deployment(ctl, PlaceArgs("deepseek-r1", quant="fp8", name="r1"), time.time()).placed
    [r] = ctl.store.replicas()
    [part] = ctl.store.parts()
    say(ctl, "a", nodes.ReplicaStatus(r.id, "healthy", "http://a:1", address="127.0.0.1:40001"))
    say(ctl, "b", nodes.ReplicaStatus(part.id, "starting"))
    deployments.remove(ctl, "r1")
    assert desired(ctl, "a") == {} and desired(ctl, "b") == {}
    say(ctl, "a")  # the main stopped: a's GPUs are free, b's part still stopping
    assert ctl.store.replicas() and len(ctl.store.reservations()) == 8
    say(ctl, "b")
    assert ctl.store.replicas() == [] and ctl.store.parts() == [] and ctl.store.reservations() == []
    assert ctl.store.get_deployment("r1") is None


def test_an_offline_part_node_moves_the_whole_replica(tmp_path: Path, store_url: str) -> None:
    ctl = controller(tmp_path, store_url, reschedule_after=0.0, retry_every=0.0)
    for name in "abc":
        join(ctl, name, "8xH100-80GB", advertise=f"10.9.0.{ord(name)}")
    assert place_deployment(ctl, PlaceArgs("deepseek-r1", quant="fp8", name="r1"), time.time()).placed
    [old] = ctl.store.replicas()
    [part] = ctl.store.parts()
    gone = part.node
    go_offline(ctl, gone, time.time() - 100)
    reconcile.tick(ctl)
    assert [x.desired for x in ctl.store.replicas()] == ["stop"]  # fenced; no two nodes have room yet
    assert desired(ctl, old.node) == {}  # the live part stops with it
    say(ctl, old.node)  # ... and frees its node, which the replacement needs
    reconcile.tick(ctl)
    [new] = [x for x in ctl.store.replicas() if x.desired == "run"]
    where = {new.node} | {p.node for p in ctl.store.parts(replica=new.id)}
    assert gone not in where and len(where) == 2
