"""The OpenAI gateway for real on loopback: the official `openai` client, a real Controller over SQLite,
fake OpenAI-compatible engines that check their keys."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import REGISTRY

from tests.integration.gateway_client import chat_through_gateway
from tests.integration.harness import wait_for
from tests.integration.http_harness import ADMIN_TOKEN, GIB, HttpFleet, free_port

REPLY = "hello from the engine"


@pytest.fixture
def hf(tmp_path: Path) -> Iterator[HttpFleet]:
    f = HttpFleet(tmp_path / "ctl")
    f.add_node("n1", [("GPU-n1-0", "A100-80GB", 80 * GIB)])
    f.add_node("n2", [("GPU-n2-0", "A100-80GB", 80 * GIB)])
    f.add_deployment("chat")
    try:
        yield f
    finally:
        f.close()


def client(hf: HttpFleet, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=hf.base + "/v1", api_key=key or hf.client_key, max_retries=0, timeout=10)


def raw(url: str, body: dict[str, Any] | None = None, key: str | None = None,
        method: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_openai_client_unchanged_streaming_and_not(hf: HttpFleet) -> None:
    e = hf.engine("e1", "sk-replica-1", reply=REPLY)
    hf.add_replica("chat-0", "chat", "n1", endpoint=e.endpoint, api_key="sk-replica-1")
    before = sample("fleet_gateway_requests_total", deployment="chat", code="200")

    text, streamed = asyncio.run(chat_through_gateway(hf.base, hf.client_key, "chat"))

    assert text == REPLY and streamed == REPLY
    # the engine saw its own key, never the client's
    assert set(e.seen_auth) == {"Bearer sk-replica-1"}
    assert [r["model"] for r in e.requests] == ["chat", "chat"]
    assert sample("fleet_gateway_requests_total", deployment="chat", code="200") == before + 2

    c = client(hf)
    assert [m.id for m in c.models.list().data] == ["chat"]
    assert c.completions.create(model="chat", prompt="hi").choices[0].text == REPLY
    emb = c.embeddings.create(model="chat", input=["a", "b"])
    assert [d.embedding for d in emb.data] == [[0.25, 0.5, 0.0], [0.25, 0.5, 1.0]]


def test_sse_passes_through_unchanged_chunk_by_chunk(hf: HttpFleet) -> None:
    e = hf.engine("e1", "k1", reply="one two three", gap=0.2)
    hf.add_replica("chat-0", "chat", "n1", endpoint=e.endpoint, api_key="k1")
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    def read_stream(url: str, key: str) -> tuple[list[float], bytes]:
        req = urllib.request.Request(url, data=json.dumps(body).encode())
        req.add_header("Authorization", f"Bearer {key}")
        req.add_header("Content-Type", "application/json")
        start, times, data = time.monotonic(), [], b""
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            while chunk := resp.read1(65536):
                times.append(time.monotonic() - start)
                data += chunk
        return times, data

    times, through = read_stream(hf.base + "/v1/chat/completions", hf.client_key)
    _, direct = read_stream(e.endpoint + "/v1/chat/completions", "k1")
    # Events arrive as the engine sends them: the first well before the last (2 gaps of 0.2 s).
    assert times[0] < 0.15 and times[-1] > 0.35, times
    assert through.count(b"data: ") == direct.count(b"data: ") == 5
    # byte for byte, apart from the engine's timestamps
    strip = lambda b: [json.loads(x[6:]) | {"created": 0} if x != b"data: [DONE]" else x  # noqa: E731
                       for x in b.strip().split(b"\n\n")]
    assert strip(through) == strip(direct)


def test_client_key_required_and_revocable(hf: HttpFleet) -> None:
    e = hf.engine("e1", "k1")
    hf.add_replica("chat-0", "chat", "n1", endpoint=e.endpoint, api_key="k1")
    status, _, body = raw(hf.base + "/v1/chat/completions", {"model": "chat", "messages": []})
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(hf, key="sk-fleet-not-a-key").chat.completions.create(model="chat", messages=[])
    with pytest.raises(openai.AuthenticationError):
        client(hf, key="sk-replica-key-is-not-a-client-key").models.list()
    assert e.requests == []  # refused before anything reached an engine


def test_unknown_model_404_and_no_healthy_replica_503(hf: HttpFleet) -> None:
    e = hf.engine("e1", "k1")
    c = client(hf)
    with pytest.raises(openai.NotFoundError, match="deployments: chat"):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])

    # a deployment without a healthy replica: starting, failed, on an offline node, or being drained
    hf.add_node("gone", [], alive=False)
    hf.add_replica("chat-0", "chat", "n1", endpoint=e.endpoint, api_key="k1", state="starting")
    hf.add_replica("chat-1", "chat", "gone", endpoint=e.endpoint, api_key="k1", state="healthy", ordinal=1)
    hf.add_replica("chat-2", "chat", "n2", endpoint=e.endpoint, api_key="k1", state="healthy", desired="stop",
                   ordinal=2)
    status, headers, body = raw(hf.base + "/v1/chat/completions", {"model": "chat", "messages": []}, hf.client_key)
    assert status == 503 and headers["Content-Type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert err["code"] == "no_healthy_replica" and "chat" in err["message"]
    with pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert c.models.list().data == []  # /v1/models lists only what can answer
    assert e.requests == []

    hf.set_replica("chat-0", state="healthy")
    assert c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]).choices
    assert [m.id for m in c.models.list().data] == ["chat"]


def test_connect_failure_retried_on_another_replica(hf: HttpFleet) -> None:
    e = hf.engine("e1", "k1")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    # "chat-0" sorts first, so it is tried first
    hf.add_replica("chat-0", "chat", "n1", endpoint=dead, api_key="k0")
    hf.add_replica("chat-1", "chat", "n2", endpoint=e.endpoint, api_key="k1", ordinal=1)
    before = sample("fleet_gateway_errors_total", deployment="chat", reason="connect")

    status, headers, body = raw(hf.base + "/v1/chat/completions",
                                {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}, hf.client_key)

    assert status == 200, body
    assert headers["X-Fleet-Replica"] == "chat-1"
    assert sample("fleet_gateway_errors_total", deployment="chat", reason="connect") == before + 1

    hf.set_replica("chat-1", endpoint=dead)  # both dead: 503, not a hang or a 500
    status, _, body = raw(hf.base + "/v1/chat/completions", {"model": "chat", "messages": []}, hf.client_key)
    assert status == 503 and "refused the connection" in json.loads(body)["error"]["message"]


def test_least_outstanding_requests(hf: HttpFleet) -> None:
    a = hf.engine("a", "ka")
    b = hf.engine("b", "kb")
    hf.add_replica("chat-a", "chat", "n1", endpoint=a.endpoint, api_key="ka")
    hf.add_replica("chat-b", "chat", "n2", endpoint=b.endpoint, api_key="kb", ordinal=1)
    c = client(hf)

    def ask(content: str) -> str:
        r = c.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": content}])
        return r.headers["X-Fleet-Replica"]

    held: list[str] = []
    slow = threading.Thread(target=lambda: held.append(ask("hold")))
    slow.start()
    wait_for(lambda: a.held + b.held > 0, 30, "the held request to reach an engine", interval=0.02)
    busy, idle = (a, b) if a.held else (b, a)
    # While one replica holds a request, every new one goes to the other.
    served = [ask("quick") for _ in range(4)]
    assert served == [f"chat-{idle.name}"] * 4
    assert len(idle.requests) == 4 and len(busy.requests) == 1

    hf.loop.run(busy.release())
    slow.join(10)
    assert held == [f"chat-{busy.name}"]
    # Idle again: sequential traffic is spread by requests sent, not piled on one replica.
    assert [ask("quick") for _ in range(3)] == [f"chat-{busy.name}"] * 3


def test_engine_refusing_fleets_key_is_a_502_not_the_clients_fault(hf: HttpFleet) -> None:
    e = hf.engine("e1", "the-right-key")
    hf.add_replica("chat-0", "chat", "n1", endpoint=e.endpoint, api_key="a-stale-key")
    status, _, body = raw(hf.base + "/v1/chat/completions", {"model": "chat", "messages": []}, hf.client_key)
    assert status == 502 and json.loads(body)["error"]["code"] == "upstream_auth"


def test_no_key_management_over_http(hf: HttpFleet) -> None:
    # `fleet apikey` uses the Admin gRPC service (TLS-verified, like every verb); HTTP has no admin API.
    for method in ("GET", "POST", "DELETE"):
        status, _, _ = raw(hf.base + "/admin/apikeys" + ("/tests" if method == "DELETE" else ""),
                           {"name": "x"} if method == "POST" else None, ADMIN_TOKEN, method=method)
        assert status in (404, 405), method


def test_viewer_keys_do_not_call_the_gateway(hf: HttpFleet) -> None:
    e = hf.engine("e1", "k1")
    hf.add_replica("chat-0", "chat", "n1", endpoint=e.endpoint, api_key="k1")
    with pytest.raises(openai.AuthenticationError):
        client(hf, hf.viewer_key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert not e.requests


def test_draining_replica_gets_no_new_requests(hf: HttpFleet) -> None:
    a = hf.engine("a", "ka")
    b = hf.engine("b", "kb")
    hf.add_replica("chat-a", "chat", "n1", endpoint=a.endpoint, api_key="ka")
    hf.add_replica("chat-b", "chat", "n2", endpoint=b.endpoint, api_key="kb", ordinal=1)
    c = client(hf)
    ask = lambda: c.chat.completions.with_raw_response.create(  # noqa: E731
        model="chat", messages=[{"role": "user", "content": "hi"}]).headers["X-Fleet-Replica"]
    assert sorted(ask() for _ in range(2)) == ["chat-a", "chat-b"]
    # A drain (or remove) marks the replica desired "stop" before its agent is told: from that commit on,
    # while the engine still runs and reports healthy, it gets nothing new.
    hf.set_replica("chat-a", desired="stop")
    assert [ask() for _ in range(4)] == ["chat-b"] * 4
    assert len(a.requests) == 1
