"""Issue 7: >= 10,000 malformed or hostile messages to every method of Agent, Fleet and Admin, over TLS,
with and without credentials, against a real controller subprocess.

Holds: the controller stays up, still answers ListNodes, and no table changes. Calls that a credential
would let through are made invalid on purpose (a poison field appended to the payload: protobuf merges
it last), so "no state change" is a real assertion and not luck; read-only methods get anything.
The numbers (messages per service and credential, status codes, duration) go to the test output.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
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
from tests.integration.harness import Fleet

MAX_MESSAGE = 4 * 1024 * 1024
RANDOM_PER_METHOD_AND_CRED = 120
HYPOTHESIS_EXAMPLES = 2500
NODE = "fuzz-node"

# Methods that change nothing whatever they are sent; every other method must have a poison below.
READ_ONLY = {"ListNodes", "DescribeNode", "Capacity", "Stats", "ListDeployments", "DescribeDeployment", "Logs",
             "Plan", "ListTokens", "ListEvents", "Status", "Observed"}
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


def snapshot(db_path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(db_path)
    try:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(repr(r) for r in db.execute(f'SELECT * FROM "{t}"')) for t in tables}
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
    assert not [u for u in unknown if u.split()[0] in {"CreateToken", "ListTokens", "RevokeToken", "RemoveNode"}]


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
