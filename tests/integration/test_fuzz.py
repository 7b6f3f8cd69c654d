"""Hostile input against a real controller subprocess; every family prints its counts to the test output.

- Issue 7: >= 10,000 malformed or hostile messages to every method of Agent, Fleet and Admin, over TLS,
  with and without credentials. Holds: the controller stays up, still answers ListNodes, and no table
  changes. Calls that a credential would let through are made invalid on purpose (a poison field appended
  to the payload: protobuf merges it last), so "no state change" is a real assertion and not luck;
  read-only methods get anything.
- Issue 12, hostile inventories: sizes, counts, strings, names, duplicate and foreign GPU UUIDs, at
  Register and at a session's start; each refused whole with one INVALID_ARGUMENT (or ALREADY_EXISTS).
- Issue 12, hostile HTTP: slow clients, a connection flood past the cap, nested JSON, large and many
  bodies; and a flood of both ports at a small open-file limit.
"""

from __future__ import annotations

import json
import random
import re
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fleet.controller.core.errors import InvalidArgument
from fleet.controller.rpc.validate import validate_inventory, validate_node_name
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pbg
from tests.integration.harness import Fleet, wait_for

MAX_MESSAGE = 4 * 1024 * 1024
RANDOM_PER_METHOD_AND_CRED = 120
HYPOTHESIS_EXAMPLES = 2500
NODE = "fuzz-node"

# Methods that change nothing whatever they are sent; every other method must have a poison below.
READ_ONLY = {"ListNodes", "DescribeNode", "Capacity", "Stats", "ListDeployments", "DescribeDeployment", "Logs",
             "Plan", "ListTokens", "ListApiKeys", "ListEvents", "Status", "Observed"}
# Appended to a payload a credential would let through, so the call is refused as invalid (last field wins).
POISON: dict[str, Message] = {
    "Register": pb.RegisterRequest(name="_"),                                # '_' is never in a node name
    "Session": pb.AgentMessage(inventory=pb.Inventory(gpus=[pb.Gpu()])),   # a GPU without a UUID
    "Place": pb.PlaceRequest(model="\x00no-such-model"),
    "Remove": pb.RemoveRequest(name="\x00"),
    "Cordon": pb.CordonRequest(name="\x00"),
    "Drain": pb.DrainRequest(nodes=["\x00"]),
    "CreateToken": pb.CreateTokenRequest(description="\x00"),               # control characters are refused
    "RevokeToken": pb.RevokeTokenRequest(id=2**64 - 1),
    "RemoveNode": pb.RemoveNodeRequest(name="_"),
    "ReplaceNode": pb.ReplaceNodeRequest(name="_"),
    "CreateApiKey": pb.CreateApiKeyRequest(name="\x00"),                    # not a key name
    "RevokeApiKey": pb.RevokeApiKeyRequest(ref="\x00"),                     # names no key
}
CREDS = ("none", "wrong", "node", "node-as-other", "admin")

HOSTILE = ["", " ", "\x00", "../../../etc/passwd", "'; DROP TABLE node; --", "%s%n%x%p", "${jndi:ldap://x/a}",
           "\u202egpu-a", "☃" * 2000, "a" * 70_000, "A" * 300, NODE, NODE.upper(), "-", ".", "x" * 64, "\n\r\t",
           "𝔣𝔩𝔢𝔢𝔱", "null", "0", "-1", "qwen2-72b", "awq", "vllm", "llama.cpp", "gpu", "\ufeff", "é"]


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    input: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/fleet.v1.{self.service}/{self.name}"

    def message(self) -> Message:
        return GetMessageClass(self.input)()


METHODS = [Method(s.name, m.name, m.input_type, m.client_streaming, m.server_streaming)
           for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods]


@dataclass(frozen=True)
class Call:
    method: Method
    cred: str
    payloads: tuple[bytes, ...]  # one for unary requests, 1-3 for Session
    kind: str  # random or structured


# ---------------------------------------------------------------- payloads


def privileged(method: Method, cred: str) -> bool:
    """Would this credential get the call past the AuthInterceptor to the servicer?"""
    if method.name == "Register":
        return cred == "join"
    if method.name == "Session":
        return cred == "node"
    return cred == "admin"


def would_change_state(method: Method, payload: bytes, join_secret: str) -> bool:
    """Local replay of the checks that stand between a poisoned payload and a write (a safety net)."""
    msg = method.message()
    try:
        msg.ParseFromString(payload)
    except DecodeError:
        return False
    if method.name == "Register":
        if msg.join_token[:256].strip().rpartition(".")[0] != join_secret and msg.join_token.strip() != join_secret:
            return False
        try:
            validate_node_name(msg.name or msg.inventory.hostname)
            validate_inventory(msg.inventory)
        except InvalidArgument:
            return False
        return True
    if method.name == "Session":
        if msg.WhichOneof("kind") != "inventory":
            return False
        try:
            validate_inventory(msg.inventory)
        except InvalidArgument:
            return False
        return True
    return False


def parses(method: Method, payload: bytes) -> Message | None:
    msg = method.message()
    try:
        msg.ParseFromString(payload)
    except DecodeError:
        return None
    return msg


def poisoned(method: Method, cred: str, payload: bytes, join_secret: str) -> bytes:
    if method.name in READ_ONLY or not privileged(method, cred) or parses(method, payload) is None:
        return payload  # refused at the door, or malformed as it is (appending could make it parse)
    poison = POISON.get(method.name)
    assert poison is not None, f"new RPC {method.name}: add it to READ_ONLY, or give it a POISON that makes it invalid"
    out = payload + poison.SerializeToString()
    msg = parses(method, out)
    assert msg is not None
    for field, value in poison.ListFields():  # the poison is really what the servicer will read
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            continue  # merged, not replaced: would_change_state replays what the servicer checks
        got = getattr(msg, field.name)
        assert (value[-1] == got[-1]) if field.is_repeated else (got == value), (method.name, out[:200])
    assert not would_change_state(method, out, join_secret), (method.name, out[:200])
    return out


def random_bytes(rng: random.Random) -> bytes:
    n = rng.choice((0, 1, 2, 3, 5, 8, 16, 32, 64, 128, 512, 4096))
    return rng.randbytes(rng.randint(0, n))


def random_calls(rng: random.Random, join_token: str, join_secret: str) -> list[Call]:
    calls = []
    for method in METHODS:
        creds = (*CREDS, "join") if method.name == "Register" else CREDS
        for cred in creds:
            for _ in range(RANDOM_PER_METHOD_AND_CRED):
                if method.client_streaming:
                    raw = tuple(random_bytes(rng) for _ in range(rng.randint(1, 3)))
                    payloads = (poisoned(method, cred, raw[0], join_secret), *raw[1:])
                else:
                    raw_one = random_bytes(rng)
                    if cred == "join":  # a valid join token, then garbage that may override any field
                        raw_one = pb.RegisterRequest(join_token=join_token).SerializeToString() + raw_one
                    payloads = (poisoned(method, cred, raw_one, join_secret),)
                calls.append(Call(method, cred, payloads, "random"))
    return calls


def big_calls(join_token: str, join_secret: str) -> list[Call]:
    """Deterministic extremes: payloads at and over the 4 MiB limit, 10^5-element repeated fields and maps."""
    by_name = {m.name: m for m in METHODS}
    big_inventory = pb.Inventory(hostname="h", gpus=[pb.Gpu(uuid=f"GPU-{i}") for i in range(100_000)])
    specs: list[tuple[str, str, Message | bytes]] = [
        ("ListNodes", "admin", b"\x0a" + b"\xff" * (MAX_MESSAGE - 64)),  # garbage just under the limit
        ("ListNodes", "admin", b"\x00" * (MAX_MESSAGE + 1024)),  # over it
        ("Register", "join", pb.RegisterRequest(join_token=join_token, name="big", inventory=big_inventory)),
        ("Register", "join", pb.RegisterRequest(join_token=join_token, name="labels", inventory=pb.Inventory(
            labels={f"k{i}": "v" * 8 for i in range(100_000)}))),
        ("Register", "none", pb.RegisterRequest(join_token="x" * (MAX_MESSAGE - 1024))),
        ("Session", "node", pb.AgentMessage(inventory=big_inventory)),
        ("Session", "node", pb.AgentMessage(heartbeat=pb.Heartbeat(
            gpus=[pb.GpuUsage(uuid="g", memory_used=2**64 - 1) for _ in range(100_000)]))),
        ("Place", "admin", pb.PlaceRequest(model="m" * 100_000, labels={f"k{i}": "v" for i in range(100_000)})),
        ("Drain", "admin", pb.DrainRequest(nodes=[f"n{i}" for i in range(100_000)])),
        ("Cordon", "admin", pb.CordonRequest(name="\x00", reason="r" * (MAX_MESSAGE - 1024))),
        ("DescribeNode", "admin", pb.DescribeNodeRequest(name="n" * (MAX_MESSAGE - 1024))),
        ("CreateToken", "admin", pb.CreateTokenRequest(ttl_seconds=2**64 - 1, description="d" * (MAX_MESSAGE - 1024))),
        ("CreateToken", "admin", pb.CreateTokenRequest(ttl_seconds=2**64 - 1)),
        ("RemoveNode", "admin", pb.RemoveNodeRequest(name="n" * 100_000, force=True)),
        ("Logs", "admin", pb.LogsRequest(deployment="d" * 100_000, replica=-(2**31), lines=2**32 - 1, follow=True)),
    ]
    out = []
    for name, cred, msg in specs:
        method = by_name[name]
        raw = msg if isinstance(msg, bytes) else msg.SerializeToString()
        out.append(Call(method, cred, (poisoned(method, cred, raw, join_secret),), "structured"))
    return out


def hostile_strings() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE), st.text(max_size=80),
                     st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=8))


INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_STRING:
        return hostile_strings()
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=256)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    lo, hi = INT_RANGES[f.type]
    return st.one_of(st.sampled_from([lo, hi, 0, -1 if lo < 0 else 1]), st.integers(lo, hi))


@st.composite
def hostile_message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """Any message type, structurally valid, every field drawn from hostile values (nested up to 3 deep)."""
    msg = GetMessageClass(descriptor)()
    for f in descriptor.fields:
        if not draw(st.booleans()):
            continue
        is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
        if is_map:
            kv = f.message_type.fields_by_name
            entries = draw(st.dictionaries(scalar(kv["key"]), scalar(kv["value"]), max_size=4))
            getattr(msg, f.name).update(entries)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            count = draw(st.integers(0, 3)) if f.is_repeated else 1
            for _ in range(count):
                sub = draw(hostile_message(f.message_type, depth + 1))
                if f.is_repeated:
                    getattr(msg, f.name).add().CopyFrom(sub)
                else:
                    getattr(msg, f.name).CopyFrom(sub)
        elif f.is_repeated:
            getattr(msg, f.name).extend(draw(st.lists(scalar(f), max_size=4)))
        else:
            setattr(msg, f.name, draw(scalar(f)))
    return msg


def structured_calls(join_token: str, join_secret: str, node_cred: str, admin: str) -> list[Call]:
    calls: list[Call] = []
    secrets_by_cred = {"none": "", "wrong": "not-a-token", "node": node_cred, "node-as-other": node_cred,
                       "admin": admin, "join": join_token}

    @settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def generate(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(METHODS))
        cred = data.draw(st.sampled_from((*CREDS, "join") if method.name == "Register" else CREDS))
        count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        msgs = [data.draw(hostile_message(method.input)) for _ in range(count)]
        if method.name == "Register":
            msgs[0].join_token = secrets_by_cred[cred]  # Register's credential travels in the request
        raw = [m.SerializeToString() for m in msgs]
        calls.append(Call(method, cred, (poisoned(method, cred, raw[0], join_secret), *raw[1:]), "structured"))

    generate()
    return calls


# ---------------------------------------------------------------- sending


def metadata(cred: str, node_cred: str, admin: str) -> tuple[tuple[str, str], ...]:
    return {
        "none": (),
        "wrong": (("authorization", "Bearer not-a-token"),),
        "node": (("authorization", f"Bearer {node_cred}"), ("x-fleet-node", NODE)),
        "node-as-other": (("authorization", f"Bearer {node_cred}"), ("x-fleet-node", "other-node")),
        "admin": (("authorization", f"Bearer {admin}"),),
        "join": (),
    }[cred]


def send(channel: grpc.Channel, call: Call, md: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    m = call.method
    try:
        if m.client_streaming:
            list(channel.stream_stream(m.path)(iter(call.payloads), metadata=md, timeout=20))
        elif m.server_streaming:
            list(channel.unary_stream(m.path)(call.payloads[0], metadata=md, timeout=20))
        else:
            channel.unary_unary(m.path)(call.payloads[0], metadata=md, timeout=20)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()  # type: ignore[attr-defined, no-any-return]


def open_channel(fleet: Fleet) -> grpc.Channel:
    ca = (fleet.data_dir / "tls" / "ca.crt").read_bytes()
    return grpc.secure_channel(fleet.address, grpc.ssl_channel_credentials(ca), options=[
        ("grpc.ssl_target_name_override", "fleet-controller"),
        ("grpc.max_send_message_length", MAX_MESSAGE * 2),  # let oversize payloads reach the server's limit
        ("grpc.max_receive_message_length", MAX_MESSAGE)])


# What moves by itself while the fuzzer runs, whatever it sends: the duties lease is renewed, and the fuzzed
# node (registered, never in session) goes offline after offline_after, with its event and change-feed row.
CLOCKWORK = {"lease", "change"}
LIVENESS_COLUMNS = ("alive", "last_heartbeat")


def snapshot(db_path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(db_path)
    try:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") if t not in CLOCKWORK]
        out = {}
        for t in tables:
            cols = [c[1] for c in db.execute(f'PRAGMA table_info("{t}")')]
            keep = [c for c in cols if not (t == "node" and c in LIVENESS_COLUMNS)]
            rows = db.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in keep)} FROM "{t}"')
            if t == "event":
                rows = [r for r in rows if r[keep.index("kind")] not in ("node.offline", "node.online")]
            out[t] = sorted(repr(r) for r in rows)
        return out
    finally:
        db.close()


def chunks(items: list[Call], n: int) -> Iterator[list[Call]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def test_fuzz_every_method_changes_nothing(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    admin = (fleet.data_dir / "admin-token").read_text().strip()
    join_token = fleet.join_token
    join_secret = join_token.rpartition(".")[0]
    channel = open_channel(fleet)
    # one real node, so a node credential exists to fuzz with (no agent: nothing moves while we fuzz)
    inventory = pb.Inventory(hostname=NODE, gpus=[pb.Gpu(uuid="GPU-fuzz-0", name="A100-80GB", memory_total=2**36)])
    joined = pbg.AgentStub(channel).Register(pb.RegisterRequest(join_token=join_token, name=NODE,
                                                                inventory=inventory), timeout=10)
    made = pbg.AdminStub(channel).CreateToken(pb.CreateTokenRequest(ttl_seconds=3600, description="fuzz"),
                                              metadata=(("authorization", f"Bearer {admin}"),), timeout=10)
    assert made.join_token
    node_cred = joined.credential
    before = snapshot(fleet.data_dir / "fleet.db")
    assert before["node"] and before["gpu"] and before["join_token_meta"]

    started = time.monotonic()
    rng = random.Random(7)
    calls = random_calls(rng, join_token, join_secret)
    calls += structured_calls(join_token, join_secret, node_cred, admin)
    calls += big_calls(join_token, join_secret)
    rng.shuffle(calls)
    generated = time.monotonic() - started

    codes: Counter[tuple[str, str]] = Counter()
    per: Counter[tuple[str, str]] = Counter()
    unknown: list[str] = []
    sent_at = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        for batch in chunks(calls, 2000):
            results = pool.map(lambda c: send(channel, c, metadata(c.cred, node_cred, admin)), batch)
            for call, code in zip(batch, results, strict=True):
                codes[(call.method.service, code.name)] += 1
                per[(call.method.service, call.cred)] += 1
                # A payload that does not parse is answered UNKNOWN by grpc itself; one that parses is ours.
                if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and privileged(call.method, call.cred) \
                        and all(parses(call.method, p) is not None for p in call.payloads):
                    unknown.append(f"{call.method.name} {call.cred} {code.name} {call.payloads[0][:60]!r}")
            assert fleet.controller is not None and fleet.controller.poll() is None, "the controller died"
    duration = time.monotonic() - sent_at

    # still answers, and changed nothing
    nodes = pbg.FleetStub(channel).ListNodes(pb.ListNodesRequest(), metadata=(("authorization", f"Bearer {admin}"),),
                                             timeout=10)
    assert [n.name for n in nodes.nodes] == [NODE]
    after = snapshot(fleet.data_dir / "fleet.db")
    changed = {t: (len(before.get(t, [])), len(after.get(t, []))) for t in set(before) | set(after)
               if before.get(t) != after.get(t)}
    channel.close()

    report = {
        "messages": len(calls), "duration_s": round(duration, 1), "generation_s": round(generated, 1),
        "per_second": round(len(calls) / duration),
        "by_service_and_credential": {f"{s}/{c}": n for (s, c), n in sorted(per.items())},
        "status_codes": {f"{s}/{c}": n for (s, c), n in sorted(codes.items())},
        "unexpected_errors_past_auth": len(unknown),
        "controller_log_tracebacks": fleet.log("controller").count("Traceback"),
    }
    # grpc logs a traceback per request it cannot parse; single-message requests are parsed by
    # fleet.controller.rpc.decoding instead, so only Session's stream (node credential needed) may still log one.
    raised = re.findall(r"raised by servicer method \[(\S+)\]", fleet.log("controller"))
    with capsys.disabled():
        print("\nfuzz:", json.dumps(report, indent=1, ensure_ascii=False))
        for line in unknown[:20]:
            print("  past auth, UNKNOWN/INTERNAL:", line)
    assert len(calls) >= 10_000
    assert set(raised) <= {"/fleet.v1.Agent/Session"}, Counter(raised)
    assert not changed, f"tables changed under fuzz (rows before, after): {changed}"
    assert not [u for u in unknown if u.split()[0] in {"CreateToken", "ListTokens", "RevokeToken", "RemoveNode",
                                                       "ReplaceNode", "CreateApiKey", "ListApiKeys", "RevokeApiKey"}]


NESTED_JSON = ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000]


def test_plan_refuses_deeply_nested_json(fleet: Fleet) -> None:
    admin = (("authorization", f"Bearer {(fleet.data_dir / 'admin-token').read_text().strip()}"),)
    channel = open_channel(fleet)
    try:
        for text in NESTED_JSON:
            with pytest.raises(grpc.RpcError) as e:
                pbg.FleetStub(channel).Plan(pb.PlanRequest(requests_json=text), metadata=admin, timeout=20)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    finally:
        channel.close()
    assert fleet.controller is not None and fleet.controller.poll() is None


# ---------------------------------------------------------------- hostile inventories (Agent service)


def hostile_inventories(own: str, foreign: str) -> list[tuple[str, pb.Inventory]]:
    """(what, inventory) pairs that must each be refused whole: sizes, counts, strings, names, UUIDs."""
    gpu = {"uuid": own, "name": "A100-80GB", "memory_total": 80 * 2**30}
    out: list[tuple[str, pb.Inventory]] = []
    for total in (2**41, 2**63 - 1, 2**64 - 1):
        out.append((f"memory_total {total}", pb.Inventory(gpus=[pb.Gpu(**{**gpu, "memory_total": total})])))
    for field_name, value in (("memory_used", 2**64 - 1), ("utilization", 2**32 - 1), ("index", 2**32 - 1)):
        out.append((f"{field_name} {value}", pb.Inventory(gpus=[pb.Gpu(**{**gpu, field_name: value})])))
    out.append(("temperature -2**31", pb.Inventory(gpus=[pb.Gpu(**gpu, temperature=-(2**31))])))
    for field_name in ("ram_total", "ram_available", "disk_total", "disk_free"):
        out.append((f"{field_name} 2**64-1", pb.Inventory(**{field_name: 2**64 - 1})))
    out.append(("cpu_count 2**32-1", pb.Inventory(cpu_count=2**32 - 1)))
    out.append(("65 GPUs", pb.Inventory(gpus=[pb.Gpu(uuid=f"GPU-{i}", name="T4") for i in range(65)])))
    out.append(("9 engines", pb.Inventory(engines=[pb.Engine(name=f"e{i}") for i in range(9)])))
    out.append(("65 labels", pb.Inventory(labels={f"k{i}": "v" for i in range(65)})))
    out.append(("1 MB label", pb.Inventory(labels={"k": "v" * 2**20})))
    out.append(("label key with spaces", pb.Inventory(labels={"a b": "v"})))
    out.append(("label value with a newline", pb.Inventory(labels={"k": "a\nb"})))
    for field_name, value in (("hostname", "h" * 254), ("hostname", "h\x00"), ("models_dir", "/" * 1025),
                              ("agent_version", "\u202e1.0"), ("gpu_probe", "NVML; rm -rf")):
        out.append((f"{field_name} {value[:12]!r}", pb.Inventory(**{field_name: value})))
    for field_name, value in (("name", "\x1b[31mA100"), ("driver", "d" * 65), ("compute_capability", "8.0.0.0")):
        out.append((f"GPU {field_name} {value[:12]!r}", pb.Inventory(gpus=[pb.Gpu(**{**gpu, field_name: value})])))
    for uuid in ("", "GPU with spaces", "G" * 129, "../../etc", "GPU-\x00", "-GPU"):
        out.append((f"GPU uuid {uuid[:12]!r}", pb.Inventory(gpus=[pb.Gpu(**{**gpu, "uuid": uuid})])))
    out.append(("the same UUID twice", pb.Inventory(gpus=[pb.Gpu(**gpu), pb.Gpu(**{**gpu, "index": 1})])))
    out.append(("engine path 2 KB", pb.Inventory(engines=[pb.Engine(name="vllm", path="/" * 2048)])))
    return out


def test_hostile_inventories_change_nothing(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """Every hostile inventory is refused whole, at Register and at Session start, with one INVALID_ARGUMENT;
    foreign and duplicate UUIDs are refused or ignored; hostile names never become nodes."""
    channel = open_channel(fleet)
    agent = pbg.AgentStub(channel)
    admin = (("authorization", f"Bearer {(fleet.data_dir / 'admin-token').read_text().strip()}"),)
    own, other = "GPU-00000000-0000-4000-8000-00000000a001", "GPU-00000000-0000-4000-8000-00000000b001"
    victim = agent.Register(pb.RegisterRequest(join_token=fleet.join_token, name="victim", inventory=pb.Inventory(
        gpus=[pb.Gpu(uuid=other, name="A100-80GB", memory_total=80 * 2**30)])), timeout=20)
    joined = agent.Register(pb.RegisterRequest(join_token=fleet.join_token, name="fuzz", inventory=pb.Inventory(
        gpus=[pb.Gpu(uuid=own, name="A100-80GB", memory_total=80 * 2**30)])), timeout=20)
    assert victim.credential and joined.credential
    before = snapshot(fleet.data_dir / "fleet.db")
    codes: Counter[str] = Counter()
    cases = hostile_inventories(own, other)
    # names: none may become a node
    names = ["", "UPPER_case", "a" * 64, "-lead", "trail-", "a..b\x00", "ünï", "a b", "x/y", "..", "fuzz\n"]
    for i, (what, inv) in enumerate(cases):
        e = None
        try:
            agent.Register(pb.RegisterRequest(join_token=fleet.join_token, name=f"hostile-{i}", inventory=inv),
                           timeout=20)
        except grpc.RpcError as err:
            e = err
        assert e is not None and e.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, e and e.details())
        codes[f"Register/{e.code().name}"] += 1
        # the same at a session's start, as the node that joined
        md = (("authorization", f"Bearer {joined.credential}"), ("x-fleet-node", "fuzz"))
        try:
            list(agent.Session(iter([pb.AgentMessage(inventory=inv)]), metadata=md, timeout=20))
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (what, code)
        codes[f"Session/{code.name}"] += 1
    for name in names:
        try:
            agent.Register(pb.RegisterRequest(join_token=fleet.join_token, name=name, inventory=pb.Inventory(
                hostname=name)), timeout=20)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code)
        codes[f"Register name/{code.name}"] += 1
    # another node's UUID: refused at Register (nothing stored), ignored in a session and in heartbeats
    stolen = pb.Inventory(gpus=[pb.Gpu(uuid=other, name="A100-80GB", memory_total=80 * 2**30)])
    with pytest.raises(grpc.RpcError) as taken:
        agent.Register(pb.RegisterRequest(join_token=fleet.join_token, name="thief", inventory=stolen), timeout=20)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    codes["Register foreign UUID/ALREADY_EXISTS"] += 1
    # a known name with a join token: refused whatever the inventory
    with pytest.raises(grpc.RpcError) as known:
        agent.Register(pb.RegisterRequest(join_token=fleet.join_token, name="victim"), timeout=20)
    assert known.value.code() == grpc.StatusCode.ALREADY_EXISTS
    codes["Register known name/ALREADY_EXISTS"] += 1
    after = snapshot(fleet.data_dir / "fleet.db")
    changed = {t for t in set(before) | set(after) if before.get(t) != after.get(t) and t != "event"}
    # the one thing the sessions may touch: the node's own row (alive, last heartbeat) and events
    nodes = pbg.FleetStub(channel).ListNodes(pb.ListNodesRequest(), metadata=admin, timeout=20)
    channel.close()
    with capsys.disabled():
        print("\nhostile inventories:", json.dumps({"cases": len(cases), "names": len(names),
                                                   "status_codes": dict(sorted(codes.items()))}, indent=1))
    assert changed <= {"node"}, changed
    assert sorted(n.name for n in nodes.nodes) == ["fuzz", "victim"]
    gpus = {n.name: [g.gpu.uuid for g in n.gpus] for n in nodes.nodes}
    assert gpus == {"fuzz": [own], "victim": [other]}
    assert fleet.log("controller").count("Traceback") == 0

    # valid but unkind text (rich markup) is printed as it is, never taken for markup by the CLI
    markup = pb.Inventory(hostname="[red]h", labels={"k": "[/b]"}, engines=[pb.Engine(name="vllm", version="[/]")],
                          gpus=[pb.Gpu(uuid="GPU-00000000-0000-4000-8000-00000000c001", name="[/x] A100",
                                       memory_total=80 * 2**30)])
    channel = open_channel(fleet)
    pbg.AgentStub(channel).Register(pb.RegisterRequest(join_token=fleet.join_token, name="markup", inventory=markup),
                                    timeout=20)
    channel.close()
    for args in (("nodes",), ("capacity",), ("node", "describe", "markup")):
        r = fleet.cli(*args)
        assert r.returncode == 0 and "[/x] A100" in r.stdout, (args, r.stderr[-500:])


# ---------------------------------------------------------------- hostile HTTP (the gateway's port)

HTTP_LIMITS = ("--http-header-timeout", "2", "--http-idle-timeout", "2", "--http-body-timeout", "3",
               "--http-max-body", "8", "--http-body-budget", "24", "--http-max-connections", "64")
MIB = 2**20


class Raw:
    """A raw TCP client: send what a hostile client sends, see what comes back and when the server hangs up."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.setblocking(False)
        self.data = b""
        self.closed_at: float | None = None

    def send(self, data: bytes) -> bool:
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(False)

    def poll(self) -> bool:
        """True once the server has closed the connection (reading what it sent on the way)."""
        while self.closed_at is None:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                self.closed_at = time.monotonic()
                self.sock.close()
            self.data += chunk
        return True

    @property
    def status(self) -> int:
        m = re.match(rb"HTTP/1\.1 (\d{3})", self.data)
        return int(m.group(1)) if m else 0


def http_request(base: str, path: str, body: bytes, key: str, timeout: float = 30) -> int:
    req = urllib.request.Request(base + path, data=body, method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_hostile_http_breaks_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = Fleet(tmp_path, controller_args=HTTP_LIMITS)
    fleet.start_controller()
    try:
        _hostile_http(fleet, capsys)
    finally:
        fleet.close()


def _hostile_http(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    host, port = fleet.http.split(":")
    address, base = (host, int(port)), f"http://{fleet.http}"
    key = fleet.cli("apikey", "create", "--name", "fuzz").stdout.strip()
    assert fleet.controller is not None
    proc = psutil.Process(fleet.controller.pid)
    rss_before = proc.memory_info().rss
    report: dict[str, Any] = {}
    auth = f"Authorization: Bearer {key}\r\n".encode()

    # 1. slow clients: silent, half a request line, headers without the end, a body that never comes, and a
    # keep-alive connection left idle after its answer
    slow = {"silent": b"", "half request line": b"POST /v1/chat/comp",
            "headers never end": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth,
            "body never comes": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":",
            "idle after an answer": b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"}
    clients = [(kind, Raw(address)) for kind in slow for _ in range(12)]
    started = time.monotonic()
    for (kind, c) in clients:
        c.send(slow[kind])
    wait_for(lambda: all(c.poll() for _, c in clients), 30, "the controller to hang up on every slow client")
    took = {kind: round(max(c.closed_at - started for k, c in clients if k == kind), 1) for kind in slow}  # type: ignore[operator]
    report["slow_clients"] = {"connections": len(clients), "seconds_until_closed": took,
                              "body_timeouts_answered_408": sum(c.status == 408 for _, c in clients)}
    assert max(took.values()) < 15, took
    assert all(c.status == 408 for k, c in clients if k == "body never comes")
    assert all(c.status == 200 for k, c in clients if k == "idle after an answer")

    # 2. more connections than the cap at once: the extra ones are refused at once; all end; the port still serves
    flood = [Raw(address) for _ in range(300)]
    wait_for(lambda: all(c.poll() for c in flood), 30, "every flood connection to end")
    refused = sum(c.status == 503 for c in flood)
    report["connection_flood"] = {"connections": len(flood), "refused_503_at_once": refused}
    # How many are refused depends on how fast they are opened (the admitted ones end after the 2 s head
    # timeout, freeing places): some are, each at once, and the controller says so in its log.
    assert refused > 0 and "the cap (--http-max-connections)" in fleet.log("controller")
    assert http_request(base, "/v1/chat/completions", b'{"model": "nope"}', key) == 404

    # 3. nested JSON: 400, never a 500 with a traceback
    depth_cases = [("[" * n + "]" * n).encode() for n in (1_000, 100_000, 1_000_000)]
    depth_cases += [('{"a":' * n + "1" + "}" * n).encode() for n in (1_000, 200_000)]
    depth_cases += [('{"model": "chat", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
                    ('{"model": ' + "[" * 500_000 + "]" * 500_000 + "}").encode()]
    nested = Counter(http_request(base, "/v1/chat/completions", body, key) for body in depth_cases)
    report["nested_json"] = {"bodies": len(depth_cases), "status_codes": dict(nested)}
    assert set(nested) <= {400, 404}, nested  # 404: a well-formed body naming no deployment

    # 4. large bodies: a declared 100 MiB is refused before a byte of it is sent; a chunked one past 8 MiB too
    big = Raw(address)
    big.send(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 104857600\r\n\r\n")
    wait_for(lambda: big.poll() or big.status, 10, "413 for the declared size")
    chunked = Raw(address)
    chunked.send(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n")
    sent = 0
    while sent < 12 * MIB and chunked.send(b"100000\r\n" + b"x" * MIB + b"\r\n"):
        sent += MIB
        if chunked.poll() or chunked.status:
            break
    wait_for(lambda: chunked.poll() or chunked.status, 10, "413 for the chunked body")
    report["large_bodies"] = {"declared_100MiB": big.status, "chunked_status": chunked.status,
                              "chunked_MiB_sent_before_refusal": sent // MIB}
    assert big.status == 413 and chunked.status == 413

    # 5. many bodies at once: the budget (24 MiB) turns the excess away with 503; memory stays bounded
    peak = [rss_before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    body = b'{"model": "nope", "pad": "' + b"x" * (7 * MIB - 30) + b'"}'
    held = threading.Barrier(12, timeout=30)

    def one() -> int:
        c = Raw(address)
        c.send(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth + b"Connection: close\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode())
        c.send(body[:6 * MIB])
        try:
            held.wait()  # everyone holds 6 MiB in flight at once
        except threading.BrokenBarrierError:
            pass
        c.send(body[6 * MIB:])
        wait_for(lambda: c.poll() or (c.status and b"\r\n\r\n" in c.data), 30, "an answer")
        return c.status

    with ThreadPoolExecutor(12) as pool:
        statuses = Counter(pool.map(lambda _: one(), range(12)))
    done.set()
    watcher.join(5)
    grew = (peak[0] - rss_before) / MIB
    report["concurrent_bodies"] = {"clients": 12, "MiB_each": 7, "status_codes": dict(statuses),
                                   "controller_rss_growth_MiB": round(grew)}
    assert statuses[503] >= 1 and statuses[404] >= 1 and set(statuses) <= {404, 503}, statuses
    assert grew < 150, grew  # 12 x 7 MiB would be 84 MiB of bodies alone; the budget holds 24

    # the controller is fine: alive, answering both ports, its log short and without tracebacks
    assert fleet.controller.poll() is None
    assert fleet.cli("nodes").returncode == 0
    assert http_request(base, "/v1/chat/completions", b'{"model": "nope"}', key) == 404
    log_text = fleet.log("controller")
    report["controller_log"] = {"bytes": len(log_text), "tracebacks": log_text.count("Traceback")}
    with capsys.disabled():
        print("\nhostile HTTP:", json.dumps(report, indent=1))
    assert log_text.count("Traceback") == 0 and len(log_text) < 100_000


def test_descriptor_exhaustion_is_survived_and_logged_briefly(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """With a small open-file limit, floods of connections to both ports: the controller keeps its descriptors
    for work (gRPC and HTTP connections are capped below the limit), repeated accept errors are counted, not
    logged one by one, and both ports answer again once the flood stops."""
    fleet = Fleet(tmp_path, controller_files=256)
    fleet.start_controller()
    try:
        host, port = fleet.http.split(":")
        flood = [Raw((host, int(port))) for _ in range(400)]
        socks: list[socket.socket] = []
        for _ in range(400):
            try:
                socks.append(socket.create_connection(("127.0.0.1", fleet.port), timeout=5))
            except OSError:
                pass
        # HTTP connections beyond the cap are closed as they come; the ones within it wait for their head
        wait_for(lambda: sum(c.poll() for c in flood) >= 300, 60, "the HTTP connections over the cap to be refused")
        assert fleet.controller is not None and fleet.controller.poll() is None
        for s in socks:
            s.close()
        for c in flood:
            c.sock.close()
        wait_for(lambda: fleet.cli("nodes").returncode == 0, 60, "gRPC to answer after the flood")
        key = fleet.cli("apikey", "create").stdout.strip()
        assert http_request(f"http://{fleet.http}", "/v1/chat/completions", b'{"model": "x"}', key) == 404
        log_text = fleet.log("controller")
        errors = [ln for ln in log_text.splitlines() if "out of system resource" in ln or "Too many open" in ln]
        with capsys.disabled():
            print("\ndescriptor flood:", json.dumps({"connections": len(socks) + len(flood), "log_bytes": len(log_text),
                                                    "accept_error_lines": len(errors)}))
        assert len(log_text) < 50_000, len(log_text)
    finally:
        fleet.close()
