"""The supervisor with real child processes: start, health, restart, crash loop, stop, adopt."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil

from fleet.agent.restart import RestartPolicy
from fleet.agent.supervisor import Launch, Supervisor
from fleet.proto import fleet_pb2 as pb
from tests.integration.harness import free_port, wait_for

FAKE = str(Path(__file__).with_name("fake_engine.py"))


def launcher(mode: str = "serve"):  # type: ignore[no-untyped-def]
    def launch(spec: pb.ReplicaSpec, port: int, host: str) -> Launch:
        return Launch([sys.executable, FAKE, str(port), spec.api_key, mode], dict(os.environ))
    return launch


def spec(rid: str = "r1") -> pb.ReplicaSpec:
    return pb.ReplicaSpec(id=rid, deployment="d", engine="llama.cpp", api_key="k-" + rid)


def drive(sup: Supervisor, until, timeout: float = 20.0, what: str = "state"):  # type: ignore[no-untyped-def]
    def step():  # type: ignore[no-untyped-def]
        sup.tick()
        return until()
    return wait_for(step, timeout, what, interval=0.1)


def test_start_health_crash_restart_stop_and_adopt(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor(tmp_path, launcher(), ports=(port, port + 50), policy=RestartPolicy(base=0.1))
    sup.apply(pb.DesiredReplicas(generation=1, replicas=[spec()]))
    r = sup.replicas["r1"]
    drive(sup, lambda: r.state == "healthy", what="healthy")
    first_pid = r.pid
    assert (tmp_path / "replicas" / "r1" / "engine.log").read_text().count("fake engine starting") == 1

    os.kill(first_pid, signal.SIGKILL)  # a crash: restarted, healthy again, counted
    drive(sup, lambda: r.state == "healthy" and r.pid not in (0, first_pid), what="restarted")
    assert r.restarts == 1

    # the agent goes away; a new supervisor on the same data dir adopts the running engine
    adopted = Supervisor(tmp_path, launcher(), ports=(port, port + 50))
    a = adopted.replicas["r1"]
    assert a.pid == r.pid and a.port == r.port
    adopted.apply(pb.DesiredReplicas(generation=2, replicas=[spec()]))
    drive(adopted, lambda: a.state == "healthy", what="adopted healthy")
    assert a.pid == r.pid  # same process, not restarted

    # no longer wanted: SIGTERM, then stopped, state file gone
    adopted.apply(pb.DesiredReplicas(generation=3))
    drive(adopted, lambda: a.state == "stopped", what="stopped")
    assert not psutil.pid_exists(a.pid) or psutil.Process(a.pid).status() == psutil.STATUS_ZOMBIE
    report = adopted.statuses()
    assert report.applied_generation == 3 and [s.state for s in report.replicas] == ["stopped"]
    adopted.forget_stopped()
    assert adopted.replicas == {} and not (tmp_path / "replicas" / "r1" / "state.json").exists()


def test_crash_loop_becomes_failed_with_log_lines(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor(tmp_path, launcher("crash"), ports=(port, port + 50),
                     policy=RestartPolicy(base=0.05, max_crashes=3))
    sup.apply(pb.DesiredReplicas(generation=1, replicas=[spec("r2")]))
    r = sup.replicas["r2"]
    drive(sup, lambda: r.state == "failed", what="failed")
    assert r.restarts == 2
    assert "crash loop" in r.message and "out of memory (pretend)" in r.message and "code 3" in r.message
    # Well past every backoff (base 0.05 s), ticking keeps it failed: a crash loop is not retried forever.
    stop = time.monotonic() + 0.5
    while time.monotonic() < stop:
        sup.tick()
        assert r.state == "failed" and r.restarts == 2


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    port = free_port()

    def stubborn(spec: pb.ReplicaSpec, port: int, host: str) -> Launch:
        code = ("import signal,sys,time,http.server as h; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                "print('up',flush=True); time.sleep(60)")
        return Launch([sys.executable, "-c", code], dict(os.environ))

    sup = Supervisor(tmp_path, stubborn, ports=(port, port + 50), stop_grace=0.5)
    sup.apply(pb.DesiredReplicas(generation=1, replicas=[spec("r3")]))
    r = sup.replicas["r3"]
    drive(sup, lambda: r.state == "starting", what="starting")
    pid = r.pid
    # 'up' is printed after the SIGTERM handler is installed: only then does SIGTERM have to be escalated
    log = tmp_path / "replicas" / "r3" / "engine.log"  # its first line is the argv, which also says up
    wait_for(lambda: b"\nup\n" in log.read_bytes(), 20, "the handler")
    sup.apply(pb.DesiredReplicas(generation=2))
    t0 = time.monotonic()
    drive(sup, lambda: r.state == "stopped", what="killed")
    assert time.monotonic() - t0 >= 0.4
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_missing_weights_fail_clearly(tmp_path: Path) -> None:
    from fleet.agent.launch import NodeEngines, make_launcher
    from fleet.agent.probe import EngineInfo

    node = NodeEngines(installed=(EngineInfo("llama.cpp", "1", "/bin/true"),), gpus=(), models_dir=tmp_path / "m")
    (tmp_path / "m").mkdir()
    sup = Supervisor(tmp_path, make_launcher(node), ports=(free_port(), 65000))
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        sup.apply(pb.DesiredReplicas(generation=1, replicas=[pb.ReplicaSpec(
            id="r4", deployment="d", engine="llama.cpp", source="org/repo-GGUF", file="m.gguf", api_key="k")]))
        sup.tick()
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    r = sup.replicas["r4"]
    assert r.state == "failed" and "not on this node" in r.message and "m.gguf" in r.message
    node_vllm = make_launcher(node)
    sup2 = Supervisor(tmp_path / "2", node_vllm, ports=(free_port(), 65000))
    sup2.apply(pb.DesiredReplicas(generation=1, replicas=[pb.ReplicaSpec(id="r5", deployment="d", engine="vllm")]))
    sup2.tick()
    assert sup2.replicas["r5"].state == "failed" and "fleet engine install vllm" in sup2.replicas["r5"].message


def part_spec(rid: str, role: str, hold: bool, epoch: int = 0) -> pb.ReplicaSpec:
    return pb.ReplicaSpec(id=rid, deployment="d", engine="llama.cpp", api_key="k-" + rid,
                          part=pb.PartSpec(replica_id="r", rank=1 if role == "rpc" else 0, role=role, nnodes=2,
                                           hold=hold, epoch=epoch, waiting_for="rpc-server on b (pending)"))


def test_a_held_part_reports_its_port_then_starts_and_listening_is_its_health(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor(tmp_path, launcher(), ports=(port, port + 50), part_address="127.0.0.1")
    sup.apply(pb.DesiredReplicas(generation=1, replicas=[part_spec("p1", "rpc", hold=True)]))
    r = sup.replicas["p1"]
    sup.tick()
    [status] = sup.statuses().replicas
    assert (status.state, status.epoch) == ("pending", 0) and status.address == f"127.0.0.1:{r.port}"
    assert r.pid == 0 and "waiting for rpc-server on b" in r.message  # held: ports chosen, nothing started

    # a new spec while held (another epoch) is taken as is: no stop, no `stopped` in any report
    sup.apply(pb.DesiredReplicas(generation=2, replicas=[part_spec("p1", "rpc", hold=True, epoch=1)]))
    assert sup.replicas["p1"] is r and r.state == "pending" and sup.statuses().replicas[0].epoch == 1
    held_port = r.port

    sup.apply(pb.DesiredReplicas(generation=3, replicas=[part_spec("p1", "rpc", hold=False, epoch=1)]))
    drive(sup, lambda: r.state == "healthy", what="listening rpc part healthy")
    assert r.port == held_port and r.pid  # the port the gang was told
    assert sup.statuses().replicas[0].endpoint == ""  # an rpc part serves no HTTP endpoint
    sup.apply(pb.DesiredReplicas(generation=4))
    drive(sup, lambda: r.state == "stopped", what="stopped")


def test_a_new_spec_while_stopping_is_started_after_the_stop(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor(tmp_path, launcher(), ports=(port, port + 50), policy=RestartPolicy(base=0.1))
    first = spec()
    sup.apply(pb.DesiredReplicas(generation=1, replicas=[first]))
    r = sup.replicas["r1"]
    drive(sup, lambda: r.state == "healthy", what="healthy")
    second = pb.ReplicaSpec()
    second.CopyFrom(first)
    second.context = 1024
    sup.apply(pb.DesiredReplicas(generation=2, replicas=[second]))  # a new spec: stop, then start it
    assert r.state == "stopping"
    third = pb.ReplicaSpec()
    third.CopyFrom(second)
    third.context = 2048
    sup.apply(pb.DesiredReplicas(generation=3, replicas=[third]))  # and another while it stops
    drive(sup, lambda: r.state == "stopped", what="stopped")
    sup.forget_stopped()  # the agent reports, then forgets stopped replicas: not this one, it starts again
    assert sup.replicas["r1"] is r
    drive(sup, lambda: r.state == "healthy", what="healthy on the newest spec")
    assert r.spec.context == 2048
