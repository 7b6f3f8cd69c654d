"""Issue 7 acceptance (security) against real processes: join tokens with expiry and revoke, node removal,
and what a node credential may never do."""

from __future__ import annotations

import json
import sqlite3
import time

import grpc
import pytest

from tests.integration.harness import Fleet, wait_for

ENGINES = ("--declare-engines", "vllm,llama.cpp")


def secure_channel(fleet: Fleet) -> grpc.Channel:
    ca = (fleet.data_dir / "tls" / "ca.crt").read_bytes()
    return grpc.secure_channel(fleet.address, grpc.ssl_channel_credentials(ca),
                               options=[("grpc.ssl_target_name_override", "fleet-controller")])


def node_credential(fleet: Fleet, name: str) -> str:
    return json.loads((fleet.root / f"agent-{name}" / "node-credential.json").read_text())["credential"]


def test_token_create_list_expire_revoke(fleet: Fleet) -> None:
    made = fleet.cli("token", "create", "--ttl", "2s", "--description", "rack 3, row B", "-o", "json")
    assert made.returncode == 0, made.stderr
    short = json.loads(made.stdout)
    fingerprint = fleet.join_token.rpartition(".")[2]
    assert short["join_token"].endswith("." + fingerprint) and short["state"] == "active"
    assert short["expires_at"] - short["created_at"] == pytest.approx(2, abs=0.01)

    plain = fleet.cli("token", "create")  # default 24 h; the token alone on stdout
    assert plain.returncode == 0, plain.stderr
    day = plain.stdout.strip()
    assert "\n" not in day and "cannot be shown again" in plain.stderr

    listed = fleet.cli("token", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    secrets = [short["join_token"].rpartition(".")[0], day.rpartition(".")[0], fleet.join_token.rpartition(".")[0]]
    assert not any(s in listed.stdout for s in secrets)  # never the secrets
    rows = {t["id"]: t for t in json.loads(listed.stdout)}
    assert rows[short["id"]]["description"] == "rack 3, row B"
    # join tokens have their own numbers (the first-start one is 1); the admin token is not a join token
    assert {t["kind"] for t in rows.values()} == {"join"} and sorted(rows) == [1, 2, 3]
    assert short["id"] == 2 and "DATA_DIR/join-token" in rows[1]["description"]
    table = fleet.cli("token", "list")
    assert table.returncode == 0 and "rack 3, row B" in table.stdout
    assert "3 join token(s): " in table.stdout and "admin" not in table.stdout

    # a token within its lifetime joins (the 24 h one: a loaded machine may take longer than 2 s to start an
    # agent); an expired one is refused and the agent exits 3
    fleet.start_agent("early", "1xT4", join_token=day)
    wait_for(lambda: fleet.states().get("early") == "ready", 20, "early joined")
    wait_for(lambda: time.time() > short["expires_at"] + 0.2, 5, "the token to expire")
    late = fleet.start_agent("late", "1xT4", join_token=short["join_token"])
    assert late.wait(30) == 3
    assert "refused to join" in fleet.log("agent-late")
    expired = {t["id"]: t for t in json.loads(fleet.cli("token", "list", "-o", "json").stdout)}[short["id"]]
    assert expired["state"] == "expired"
    assert fleet.states()["early"] == "ready"  # joined nodes keep their own credential

    # revoke: refused from the next join on
    day_id = max(rows)
    r = fleet.cli("token", "revoke", str(day_id))
    assert r.returncode == 0 and "revoked" in r.stdout, r.stderr
    revoked = fleet.start_agent("revoked", "1xT4", join_token=day)
    assert revoked.wait(30) == 3 and "refused to join" in fleet.log("agent-revoked")
    db = sqlite3.connect(fleet.data_dir / "fleet.db")
    assert {n for (n,) in db.execute("SELECT name FROM node")} == {"early"}

    table = fleet.cli("token", "list")
    assert "3 join token(s): 1 usable, 1 expired, 1 revoked" in table.stdout, table.stdout
    # the CLI's own admin token is untouched by any of this; unknown numbers are a usage error
    assert fleet.cli("nodes").returncode == 0
    r = fleet.cli("token", "revoke", "9999")
    assert r.returncode == 2 and "no join token 9999; there are 3" in r.stderr
    r = fleet.cli("token", "create", "--ttl", "soon")
    assert r.returncode == 2 and "invalid --ttl" in r.stderr
    r = fleet.cli("token", "create", "--description", "x" * 300)
    assert r.returncode == 2 and "at most 256" in r.stderr


def test_revoked_first_start_token_stays_revoked_across_restart(fleet: Fleet) -> None:
    old = fleet.join_token
    first = next(t for t in json.loads(fleet.cli("token", "list", "-o", "json").stdout)
                 if t["kind"] == "join" and "DATA_DIR/join-token" in t["description"])
    assert fleet.cli("token", "revoke", str(first["id"])).returncode == 0
    fleet.stop_controller()
    fleet.start_controller()
    assert fleet.join_token != old  # a fresh first-start token, not the revoked one revived
    proc = fleet.start_agent("stale", "1xT4", join_token=old)
    assert proc.wait(30) == 3 and "refused to join" in fleet.log("agent-stale")
    fleet.start_agent("fresh", "1xT4")
    wait_for(lambda: fleet.states().get("fresh") == "ready", 20, "fresh joined")


def test_node_remove_refuses_with_replicas_then_forces_and_agent_is_refused(fleet: Fleet) -> None:
    for name, spec in {"gpu-a": "2xA100-80GB", "gpu-b": "1xT4"}.items():
        fleet.start_agent(name, spec, extra=ENGINES)
    wait_for(lambda: fleet.states() == {"gpu-a": "ready", "gpu-b": "ready"}, 30, "nodes ready")
    placed = fleet.cli("place", "qwen2-72b", "--quant", "awq", "--node", "gpu-a", "-o", "json")
    assert placed.returncode == 0, placed.stderr

    refused = fleet.cli("node", "remove", "gpu-a")
    assert refused.returncode == 2 and "still has 1 replica(s) of qwen2-72b" in refused.stderr, refused.stderr
    assert fleet.cli("node", "remove", "nope").returncode == 2
    assert fleet.cli("node", "remove", "Bad_Name!").returncode == 2

    # a node without replicas goes at once; its agent is refused and exits with a clear message
    r = fleet.cli("node", "remove", "gpu-b", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"name": "gpu-b", "replicas_forgotten": 0, "gpus_removed": 1,
                                    "session_closed": True}
    assert fleet.agents["gpu-b"].wait(30) == 3
    assert "node gpu-b was removed" in fleet.log("agent-gpu-b"), "a running agent stops: removal sticks"
    assert "start the agent again with --join-token" in fleet.log("agent-gpu-b")

    r = fleet.cli("node", "remove", "gpu-a", "--force")
    assert r.returncode == 0 and "1 replica(s) forgotten" in r.stdout, r.stderr
    assert fleet.agents["gpu-a"].wait(30) == 3
    assert fleet.nodes() == []
    db = sqlite3.connect(fleet.data_dir / "fleet.db")
    for table in ("node", "gpu", "replica", "reservation"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert db.execute("SELECT count(*) FROM event WHERE kind = 'node.removed'").fetchone()[0] == 2

    # the removed node's saved credential stays refused after a controller restart too: started without a
    # join token, the agent names the exact file; started with one, it sets the old credential aside and joins
    fleet.stop_controller()
    fleet.start_controller()
    cred_file = fleet.root / "agent-gpu-b" / "node-credential.json"
    old = cred_file.read_text()
    again = fleet.start_agent("gpu-b", "1xT4", join_token="")
    assert again.wait(30) == 3
    assert "does not know node gpu-b" in fleet.log("agent-gpu-b") and str(cred_file) in fleet.log("agent-gpu-b")
    fleet.start_agent("gpu-b", "1xT4")
    wait_for(lambda: fleet.states() == {"gpu-b": "ready"}, 30, "gpu-b joined again with its join token")
    assert cred_file.read_text() != old and (cred_file.parent / "node-credential.json.refused").read_text() == old


def test_node_credential_is_neither_admin_nor_another_node(fleet: Fleet) -> None:
    fleet.start_agent("n1", "1xT4")
    fleet.start_agent("n2", "1xT4")
    wait_for(lambda: fleet.states() == {"n1": "ready", "n2": "ready"}, 20, "two nodes")
    cred = node_credential(fleet, "n1")
    from fleet.proto import fleet_pb2 as pb
    from fleet.proto import fleet_pb2_grpc as pbg

    ch = secure_channel(fleet)
    as_node = (("authorization", f"Bearer {cred}"), ("x-fleet-node", "n1"))
    calls = [
        (pbg.FleetStub(ch).ListNodes, pb.ListNodesRequest()),
        (pbg.FleetStub(ch).Cordon, pb.CordonRequest(name="n2")),
        (pbg.AdminStub(ch).ListTokens, pb.ListTokensRequest()),
        (pbg.AdminStub(ch).CreateToken, pb.CreateTokenRequest()),
        (pbg.AdminStub(ch).RemoveNode, pb.RemoveNodeRequest(name="n2")),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as e:
            method(request, metadata=as_node, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, method

    # a session as n2 with n1's credential is refused before it reaches the servicer
    inv = pb.AgentMessage(inventory=pb.Inventory(hostname="evil"))
    stream = pbg.AgentStub(ch).Session(iter([inv]), metadata=(("authorization", f"Bearer {cred}"),
                                                              ("x-fleet-node", "n2")), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        list(stream)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "'n2' rejected" in e.value.details()

    r = fleet.cli("token", "list", "--token", cred)
    assert r.returncode == 3 and "admin token rejected" in r.stderr
    assert fleet.states() == {"n1": "ready", "n2": "ready"}
    # oversized metadata is refused before any credential check
    with pytest.raises(grpc.RpcError) as e:
        pbg.FleetStub(ch).ListNodes(pb.ListNodesRequest(), metadata=(("x-junk", "x" * 9000),), timeout=10)
    assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    ch.close()


def test_plaintext_controller_hands_out_bare_tokens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(tmp_path, controller_args=("--insecure",))
    fleet.env["FLEET_INSECURE"] = "1"
    fleet.start_controller()
    try:
        r = fleet.cli("token", "create", "--ttl", "1h")
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        assert "." not in token  # no CA to pin on a plaintext (loopback-only) controller
        fleet.start_agent("plain", "1xT4", join_token=token, extra=("--insecure",))
        wait_for(lambda: fleet.states() == {"plain": "ready"}, 20, "plain joined")
    finally:
        fleet.close()
