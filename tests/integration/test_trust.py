"""Issue 12 (trust boundaries) against a real controller over gRPC: a node is who it was, a GPU belongs to
one node, a node back with fewer GPUs reconnects, and an agent's reported sizes are bounded.

The attacker here holds a join token and speaks the Agent service directly (no agent process); the
victims are real agents with declared GPUs.
"""

from __future__ import annotations

import base64
import http.server
import json
import queue
import sqlite3
import stat
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg
from tests.integration.harness import Fleet, wait_for

ENGINES = ("--declare-engines", "vllm,llama.cpp")
GIB = 1024**3


def channel(fleet: Fleet) -> grpc.Channel:
    ca = (fleet.data_dir / "tls" / "ca.crt").read_bytes()
    return grpc.secure_channel(fleet.address, grpc.ssl_channel_credentials(ca),
                               options=[("grpc.ssl_target_name_override", "fleet-controller")])


def inventory(name: str, gpus: list[tuple[str, int]] = (), **fields: Any) -> pb.Inventory:  # type: ignore[assignment]
    return pb.Inventory(hostname=name, gpu_probe="declared", cpu_count=8, ram_total=64 * GIB, **fields,
                        engines=[pb.Engine(name="vllm", version="declared")],
                        gpus=[pb.Gpu(uuid=u, index=i, name="A100-80GB", memory_total=m, declared=True)
                              for i, (u, m) in enumerate(gpus)])


def register(fleet: Fleet, name: str, inv: pb.Inventory | None = None, token: str | None = None,
             metadata: tuple[tuple[str, str], ...] = ()) -> pb.RegisterResponse:
    with channel(fleet) as ch:
        return pbg.AgentStub(ch).Register(pb.RegisterRequest(
            join_token=fleet.join_token if token is None else token, name=name,
            inventory=inv if inv is not None else inventory(name)), metadata=metadata, timeout=20)


def refused(fn: Any, *args: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    return e.value


class Session:
    """A hand-driven Agent.Session: messages go in through `send`, the controller's answers are collected."""

    def __init__(self, fleet: Fleet, name: str, credential: str) -> None:
        self.outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self.received: list[pb.ControllerMessage] = []
        self.error: grpc.RpcError | None = None
        self.channel = channel(fleet)
        md = (("authorization", f"Bearer {credential}"), ("x-fleet-node", name))
        self.call = pbg.AgentStub(self.channel).Session(self._requests(), metadata=md)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[pb.AgentMessage]:
        while (msg := self.outbox.get()) is not None:
            yield msg

    def _read(self) -> None:
        try:
            for msg in self.call:
                self.received.append(msg)
        except grpc.RpcError as e:
            self.error = e

    def send(self, msg: pb.AgentMessage) -> None:
        self.outbox.put(msg)

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()
        self.thread.join(10)
        self.channel.close()


def db_rows(fleet: Fleet, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(fleet.data_dir / "fleet.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def describe(fleet: Fleet, name: str) -> dict[str, Any]:
    r = fleet.cli("node", "describe", name, "-o", "json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def credential(fleet: Fleet, name: str) -> str:
    return str(json.loads((fleet.root / f"agent-{name}" / "node-credential.json").read_text())["credential"])


# ---------------------------------------------------------------- node identity


def test_join_token_cannot_take_over_a_known_node(fleet: Fleet) -> None:
    fleet.start_agent("victim", "1xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"victim": "ready"}, 30, "victim ready")
    before = db_rows(fleet, "SELECT credential_hash FROM node WHERE name = 'victim'")

    # offline: refused, and the victim's agent is not locked out when it returns
    fleet.kill_agent("victim")
    wait_for(lambda: fleet.states() == {"victim": "offline"}, 30, "victim offline")
    e = refused(register, fleet, "victim")
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e.details()
    assert "fleet node replace victim" in e.details() and "fleet node remove victim" in e.details()
    assert refused(register, fleet, "VICTIM").code() == grpc.StatusCode.ALREADY_EXISTS  # the same name
    assert db_rows(fleet, "SELECT credential_hash FROM node WHERE name = 'victim'") == before
    fleet.start_agent("victim", "1xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"victim": "ready"}, 30, "victim reconnected with its own credential")

    # online, and right after a controller restart (its session is not back yet): refused too
    sessions = fleet.log("agent-victim").count("connected to the controller")
    fleet.stop_controller()
    fleet.start_controller()
    assert refused(register, fleet, "victim").code() == grpc.StatusCode.ALREADY_EXISTS
    assert db_rows(fleet, "SELECT credential_hash FROM node WHERE name = 'victim'") == before
    wait_for(lambda: fleet.log("agent-victim").count("connected to the controller") > sessions, 30,
             "the victim's agent back in session with its own credential")

    # a wrong credential in the metadata does not help; the node's own one lets it re-register
    wrong = (("authorization", "Bearer not-the-credential"), ("x-fleet-node", "victim"))
    assert refused(register, fleet, "victim", metadata=wrong).code() == grpc.StatusCode.ALREADY_EXISTS
    own = (("authorization", f"Bearer {credential(fleet, 'victim')}"), ("x-fleet-node", "victim"))
    again = register(fleet, "victim", inventory("victim", [(describe(fleet, "victim")["gpus"][0]["uuid"], 80 * GIB)]),
                     metadata=own)
    assert again.node_name == "victim" and again.credential
    assert fleet.agents["victim"].wait(30) == 3  # the agent holding the old credential is refused from now on
    assert "refused node victim's credential" in fleet.log("agent-victim")


def test_an_agent_keeps_its_name_when_the_controller_address_changes(fleet: Fleet) -> None:
    fleet.start_agent("n1", "1xT4", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"n1": "ready"}, 30, "n1 ready")
    fleet.kill_agent("n1")
    # same controller, another address for it: the agent registers again, proving who it is with its credential
    fleet.start_agent("n1", "1xT4", extra=(*ENGINES, "--controller", f"localhost:{fleet.port}"))
    wait_for(lambda: fleet.log("agent-n1").count("joined the fleet as node n1") == 2
             and fleet.states() == {"n1": "ready"}, 30, "n1 back under its name")
    assert [e["kind"] for e in describe(fleet, "n1")["events"]].count("node.rejoined") == 1


def test_node_replace_issues_a_one_time_token_for_that_name(fleet: Fleet) -> None:
    fleet.start_agent("old", "1xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"old": "ready"}, 30, "old ready")
    placed = fleet.cli("place", "qwen2-72b", "--quant", "awq", "--name", "svc")
    assert placed.returncode == 0, placed.stderr

    assert fleet.cli("node", "replace", "nope").returncode == 2
    r = fleet.cli("node", "replace", "old", "--ttl", "10m")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert "\n" not in token and "fleet agent run --name old" in r.stderr
    assert token.rpartition(".")[2] == fleet.join_token.rpartition(".")[2]  # carries the CA fingerprint too
    assert fleet.states() == {"old": "ready"}  # issuing the token changes nothing yet

    # the token names one node: not a join token for a new name, nor for another node
    e = refused(register, fleet, "other", token=token)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "--name old" in e.details()
    assert db_rows(fleet, "SELECT name FROM node") == [("old",)]

    # the new machine joins as `old`, with other GPUs: it gets the node's replicas (placed again on its GPU),
    # the old agent is refused, and the token is spent
    fleet.start_agent("old-new", "1xA100-80GB", join_token=token, extra=(*ENGINES, "--name", "old"))
    assert fleet.agents["old"].wait(30) == 3
    wait_for(lambda: fleet.states() == {"old": "ready"}, 30, "replacement connected")
    events = [e["kind"] for e in describe(fleet, "old")["events"]]
    assert "node.replaced" in events
    e = refused(register, fleet, "old", token=token)
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED

    # after `fleet node remove`, the name is free for a plain join token
    assert fleet.cli("node", "remove", "old", "--force").returncode == 0
    assert register(fleet, "old").node_name == "old"


# ---------------------------------------------------------------- GPU ownership


def test_a_gpu_belongs_to_the_node_that_first_reported_it(fleet: Fleet) -> None:
    fleet.start_agent("victim", "1xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"victim": "ready"}, 30, "victim ready")
    assert fleet.cli("place", "qwen2-72b", "--quant", "awq", "--name", "svc").returncode == 0
    gpu = describe(fleet, "victim")["gpus"][0]
    stolen = gpu["uuid"]
    reserved = db_rows(fleet, "SELECT replica, gpu_uuid, bytes FROM reservation")
    assert reserved and reserved[0][1] == stolen

    # Register naming the victim's GPU: refused, and nothing of the thief is stored (all or nothing)
    e = refused(register, fleet, "thief", inventory("thief", [(stolen, 80 * GIB)]))
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS and "belongs to node 'victim'" in e.details()
    assert db_rows(fleet, "SELECT name FROM node") == [("victim",)]

    # joined with a GPU of its own, then a session inventory and heartbeats naming the victim's GPU
    own = "GPU-7417e000-0000-4000-8000-000000000001"
    cred = register(fleet, "thief", inventory("thief", [(own, 80 * GIB)])).credential
    s = Session(fleet, "thief", cred)
    try:
        s.send(pb.AgentMessage(inventory=inventory("thief", [(own, 80 * GIB), (stolen, 80 * GIB)])))
        wait_for(lambda: any(m.WhichOneof("kind") == "desired" for m in s.received), 20, "thief's session")
        for seq in range(5):
            s.send(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=seq, gpus=[
                pb.GpuUsage(uuid=stolen, memory_used=80 * GIB, utilization=100),
                pb.GpuUsage(uuid=own, memory_used=GIB)])))
        wait_for(lambda: describe(fleet, "thief")["gpus"][0]["memory_used"] == GIB, 20, "thief's own heartbeat")
        assert [g["uuid"] for g in describe(fleet, "thief")["gpus"]] == [own]
        victim = describe(fleet, "victim")["gpus"][0]
        assert victim["uuid"] == stolen and victim["memory_used"] == 0 and victim["memory_free"] == gpu["memory_free"]
        assert any(e["kind"] == "gpu.refused" and stolen in e["message"] for e in describe(fleet, "thief")["events"])
        assert s.error is None
    finally:
        s.close()
    assert db_rows(fleet, f"SELECT node FROM gpu WHERE uuid = '{stolen}'") == [("victim",)]
    assert fleet.cli("node", "remove", "thief", "--force").returncode == 0
    assert db_rows(fleet, "SELECT replica, gpu_uuid, bytes FROM reservation") == reserved


# ---------------------------------------------------------------- a node back with fewer GPUs


def test_node_back_with_fewer_gpus_reconnects_and_its_lost_replicas_move(fleet: Fleet) -> None:
    fleet.start_agent("big", "2xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"big": "ready"}, 30, "big ready")
    on: dict[str, int] = {}
    for name in ("svc-a", "svc-b"):  # 56 GiB each: one per 80 GiB GPU
        placed = fleet.cli("place", "qwen2-72b", "--quant", "awq", "--name", name, "-o", "json")
        assert placed.returncode == 0, placed.stderr
        on.update({r["id"]: r["gpus"][0]["index"] for r in json.loads(placed.stdout)["deployment"]["replicas"]})
    assert sorted(on.values()) == [0, 1], on
    lost = next(rid for rid, index in on.items() if index == 1)
    uuid1 = describe(fleet, "big")["gpus"][1]["uuid"]

    # GPU 1 fell off the bus: the agent comes back with one GPU
    fleet.kill_agent("big")
    fleet.start_agent("big", "1xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"big": "ready"}, 30, "big reconnected with one GPU")
    assert [g["index"] for g in describe(fleet, "big")["gpus"]] == [0]
    assert db_rows(fleet, f"SELECT count(*) FROM reservation WHERE gpu_uuid = '{uuid1}'") == [(0,)]
    events = describe(fleet, "big")["events"]
    missing = [e for e in events if e["kind"] == "gpu.missing"]
    assert missing and uuid1 in missing[0]["message"] and lost in missing[0]["message"]
    assert "IntegrityError" not in fleet.log("agent-big") and "FOREIGN KEY" not in fleet.log("controller")

    # the replica that lost its GPU is gone from the node; a new one is placed elsewhere once room appears
    wait_for(lambda: lost not in {r[0] for r in db_rows(fleet, "SELECT id FROM replica")}, 30, "lost replica forgotten")
    fleet.start_agent("spare", "1xA100-80GB", extra=ENGINES)
    wait_for(lambda: sorted(r[0] for r in db_rows(fleet, "SELECT node FROM replica WHERE desired = 'run'"))
             == ["big", "spare"], 40, "replacement placed on the spare node")


# ---------------------------------------------------------------- secrets


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def http_get(fleet: Fleet, path: str, key: str = "", basic: bool = False) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://{fleet.http}{path}")
    if key:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"me:{key}".encode()).decode() if basic
                       else f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def fake_llama_server(tmp_path: Path) -> Path:
    """An executable named llama-server (the agent finds engines by name) running fake_llama_server.py."""
    exe = tmp_path / "bin" / "llama-server"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name('fake_llama_server.py')} \"$@\"\n")
    exe.chmod(0o755)
    return exe


def test_engine_key_stays_off_the_command_line_and_out_of_logs(fleet: Fleet, tmp_path: Path) -> None:
    try:
        _engine_key(fleet, tmp_path)
    finally:  # engines run in their own sessions (an agent restart adopts them): end them with the test
        for p in psutil.process_iter(["cmdline"]):
            if str(fleet.root) in " ".join(p.info["cmdline"] or []):
                p.kill()


def _engine_key(fleet: Fleet, tmp_path: Path) -> None:
    agent_dir = fleet.root / "agent-cpu"
    (agent_dir / "models").mkdir(parents=True)
    agent_dir.chmod(0o755)  # created by an operator: tightened at start
    (agent_dir / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + bytes(64))
    fleet.start_agent("cpu", None, extra=("--llama-server", str(fake_llama_server(tmp_path))))
    wait_for(lambda: fleet.states() == {"cpu": "ready"}, 30, "cpu node ready")
    placed = fleet.cli("place", "smollm2-135m", "--quant", "q4_1", "--device", "cpu", "--context", "512",
                       "--name", "smol", "-o", "json")
    assert placed.returncode == 0, placed.stderr

    def replica() -> dict[str, Any] | None:
        reps = json.loads(fleet.cli("deployments", "-o", "json").stdout)[0]["replicas"]
        return reps[0] if reps and reps[0]["state"] == "healthy" else None

    rep = wait_for(replica, 60, "replica healthy (the engine read its key from the file)")
    key = rep["api_key"]
    assert len(key) >= 24

    # not in `ps`: no process's command line holds it
    for p in psutil.process_iter(["cmdline"]):
        assert key not in " ".join(p.info["cmdline"] or []), p.info["cmdline"]
    # not in any log: engine log, agent, controller, `fleet logs`
    rdir = agent_dir / "replicas" / rep["id"]
    engine_log = (rdir / "engine.log").read_text()
    assert "fake llama-server" in engine_log and "--api-key-file" in engine_log and key not in engine_log
    shown = fleet.cli("logs", "smol")
    assert shown.returncode == 0 and "fake llama-server" in shown.stdout and key not in shown.stdout
    assert key not in fleet.log("agent-cpu") and key not in fleet.log("controller")
    # the files that hold it, and the agent's state, are the agent user's alone
    assert (rdir / "api-key").read_text().strip() == key
    assert mode(agent_dir) == 0o700 and mode(agent_dir / "replicas") == 0o700 and mode(rdir) == 0o700
    for name in ("api-key", "state.json", "engine.log"):
        assert mode(rdir / name) == 0o600, name
    assert mode(agent_dir / "node-credential.json") == 0o600

    # and it is the key the gateway uses: a chat through the gateway reaches the engine
    client_key = fleet.cli("apikey", "create", "--name", "app").stdout.strip()
    req = urllib.request.Request(f"http://{fleet.http}/v1/chat/completions", method="POST",
                                 data=json.dumps({"model": "smol", "messages": []}).encode(),
                                 headers={"Authorization": f"Bearer {client_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert json.loads(resp.read())["choices"][0]["message"]["content"] == "hi"


def test_controller_data_dir_is_private_at_every_start(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.data_dir.mkdir(mode=0o755)
    fleet.data_dir.chmod(0o755)  # pre-created by an operator (or a package) with the usual mode
    try:
        fleet.start_controller()
        secrets = ["fleet.db", "fleet.db-wal", "fleet.db-shm", "join-token", "admin-token", "tls/ca.key",
                   "tls/server.key"]

        def private() -> bool:
            return mode(fleet.data_dir) == 0o700 and mode(fleet.data_dir / "tls") == 0o700 and all(
                mode(fleet.data_dir / name) == 0o600 for name in secrets)

        assert private(), {n: oct(mode(fleet.data_dir / n)) for n in secrets}
        fleet.stop_controller()
        for name in secrets:  # widened while it was stopped (a restore from backup, a careless chmod)
            if (fleet.data_dir / name).exists():  # a clean stop folds the WAL in and deletes it
                (fleet.data_dir / name).chmod(0o644)
        fleet.data_dir.chmod(0o755)
        fleet.start_controller()
        assert private()
    finally:
        fleet.close()


def test_apikey_goes_over_the_admin_service_never_plain_http(fleet: Fleet) -> None:
    # Something else listens where FLEET_HTTP points (another controller, anyone): it must see nothing.
    seen: list[str] = []

    class Trap(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(f"{self.command} {self.path} {self.headers.get('Authorization')}")
            self.send_response(500)
            self.end_headers()

        do_POST = do_DELETE = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    trap = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trap)
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    fleet.env["FLEET_HTTP"] = f"http://127.0.0.1:{trap.server_address[1]}"
    try:
        made = fleet.cli("apikey", "create", "--name", "app")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert key.startswith("sk-fleet-") and "cannot be shown again" in made.stderr
        assert http_get(fleet, "/v1/models", key)[0] == 200
        listed = fleet.cli("apikey", "list", "-o", "json")
        assert listed.returncode == 0 and key not in listed.stdout
        assert [(k["name"], k["role"], k["revoked"]) for k in json.loads(listed.stdout)] == [("app", "client", False)]
        assert fleet.cli("apikey", "revoke", "app").returncode == 0
        assert http_get(fleet, "/v1/models", key)[0] == 401  # at once, not after a cache expires
        again = fleet.cli("apikey", "revoke", "app")
        assert again.returncode == 2 and "no active API key" in again.stderr
        assert fleet.cli("apikey", "create", "--role", "root").returncode == 2
        assert fleet.cli("apikey", "list", "--token", "wrong").returncode == 3
    finally:
        trap.shutdown()
    assert seen == []
    assert http_get(fleet, "/admin/apikeys", (fleet.data_dir / "admin-token").read_text().strip())[0] == 404


def test_read_only_pages_need_the_admin_token_or_a_viewer_key(fleet: Fleet) -> None:
    fleet.start_agent("gpu-a", "1xA100-80GB", extra=ENGINES)
    wait_for(lambda: fleet.states() == {"gpu-a": "ready"}, 30, "node ready")
    uuid = describe(fleet, "gpu-a")["gpus"][0]["uuid"]
    client_key = fleet.cli("apikey", "create", "--name", "app").stdout.strip()
    viewer = fleet.cli("apikey", "create", "--name", "prometheus", "--role", "viewer")
    assert viewer.returncode == 0 and "viewer API key" in viewer.stderr, viewer.stderr
    viewer_key = viewer.stdout.strip()
    admin = (fleet.data_dir / "admin-token").read_text().strip()

    for path in ("/", "/api/capacity", "/metrics"):
        for key in ("", client_key, "sk-fleet-made-up", admin + "x"):
            status, headers, body = http_get(fleet, path, key)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic "), (path, key)
            assert b"gpu-a" not in body and uuid.encode() not in body
        for key, basic in ((viewer_key, False), (viewer_key, True), (admin, False), (admin, True)):
            status, _, body = http_get(fleet, path, key, basic=basic)
            assert status == 200, (path, basic)
        assert uuid.encode() in http_get(fleet, "/api/capacity", viewer_key)[2]
    # Prometheus' scrape: `authorization: {type: Bearer, credentials_file: ...}` with the viewer key
    assert b'fleet_gpu_memory_total_bytes{' in http_get(fleet, "/metrics", viewer_key)[2]
    # a viewer key reads, it does not call models; revoked, it reads nothing at once
    assert http_get(fleet, "/v1/models", viewer_key)[0] == 401
    assert fleet.cli("apikey", "revoke", "prometheus").returncode == 0
    assert http_get(fleet, "/metrics", viewer_key)[0] == 401
