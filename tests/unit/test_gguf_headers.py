"""Reading GGUF headers: a local file or only its first part, and the hub with ranged reads of the header
only (a real HTTP server on 127.0.0.1 stands in for the hub); what is read is recorded in the operator's
catalog, so the next estimate is exact without a network; offline is not an error."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from fleet.controller.core.catalog import Variant
from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.estimate import total_weight_bytes
from fleet.controller.store.files import catalog_with, shipped_catalog
from fleet.controller.store.gguf_headers import (
    Found,
    HeaderIncomplete,
    find_header,
    header_length,
    parse_prefix,
    read_gguf_header,
    record_size,
    split_parts,
)

FIXTURES = Path(__file__).parent / "gguf_headers"


def write_gguf(fixture: str, path: Path) -> dict:
    """A GGUF file with the fixture's real tensor table and key-values, its data left sparse (no disk)."""
    d = json.loads((FIXTURES / f"{fixture}.json").read_text())
    w = gguf.GGUFWriter(str(path), d["fields"]["general.architecture"])
    for key, value in d["fields"].items():
        if key.startswith(f"{d['fields']['general.architecture']}.") and isinstance(value, int):
            w.add_uint32(key, value)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(2000)])  # a header of some size
    for name, shape, type_, n_bytes in d["tensors"]:
        qt = gguf.GGMLQuantizationType[type_]
        block, size = gguf.GGML_QUANT_SIZES[qt]
        byte_shape = list(reversed(shape))
        byte_shape[-1] = byte_shape[-1] // block * size
        w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), n_bytes, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.truncate(d["file_size"] + 4096)
    return d


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves files under /<repo>/resolve/<revision>/<file> with Range support, counting the bytes it sent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sent = 0
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        m = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<file>.+)$", self.path)
        path = self.server.root / m["repo"] / m["file"] if m else None
        self.server.requests.append(self.path)
        if path is None or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        first, last = 0, size - 1
        r = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if r:
            first, last = int(r[1]), min(int(r[2]), size - 1)
        self.send_response(206 if r else 200)
        self.send_header("Content-Length", str(last - first + 1))
        if r:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        self.wfile.write(data)
        self.server.sent += len(data)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeServer]:
    # online for this test, whatever an earlier test in this process left behind (huggingface_hub reads
    # HF_HUB_OFFLINE once, at import)
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = RangeServer(tmp_path / "hub")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_local_file_and_its_first_part_give_the_same_header(tmp_path: Path):
    d = write_gguf("gemma3-270m-q4_k_m", tmp_path / "m.gguf")
    whole = read_gguf_header(tmp_path / "m.gguf")
    assert whole.tensor_bytes == d["tensor_bytes"]
    assert whole.file_size - whole.data_offset >= d["tensor_bytes"]  # tensors, plus alignment padding
    assert [(t.name, t.type) for t in whole.tensors] == [(n, t) for n, _, t, _ in d["tensors"]]
    first = tmp_path / "m.gguf.part00"
    first.write_bytes((tmp_path / "m.gguf").read_bytes()[:whole.data_offset + 1000])
    assert read_gguf_header(first).tensor_bytes == d["tensor_bytes"]


def test_a_prefix_that_ends_inside_the_header_asks_for_more(tmp_path: Path):
    write_gguf("smollm2-135m-q4_1", tmp_path / "m.gguf")
    data = (tmp_path / "m.gguf").read_bytes()
    end, offset = header_length(data)
    assert end <= offset and offset % 32 == 0
    with pytest.raises(HeaderIncomplete) as e:
        parse_prefix(data[: end // 2], "m.gguf")
    assert e.value.need > end // 2
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: end // 2])
    with pytest.raises(InvalidArgument, match="cut short"):
        read_gguf_header(cut)
    with pytest.raises(InvalidArgument, match="not a GGUF"):
        parse_prefix(b"PK\x03\x04" + bytes(40), "x.zip")


def test_the_hub_is_read_with_ranges_of_the_header_only(tmp_path: Path, hub: RangeServer):
    repo = tmp_path / "hub" / "someone" / "Qwen2.5-Coder-1.5B-Instruct-GGUF"
    repo.mkdir(parents=True)
    d = write_gguf("qwen2.5-coder-1.5b-q4_k_m", repo / "coder-q4_k_m.gguf")
    endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
    v = Variant("q4_k_m", "llama.cpp", "someone/Qwen2.5-Coder-1.5B-Instruct-GGUF", "6.0", 4.81, None, None, 68,
                file="coder-q4_k_m.gguf")
    found = find_header(v, [], endpoint=endpoint)
    assert found is not None and found.where.startswith("hub ")
    assert found.tensor_bytes == d["tensor_bytes"]
    assert hub.sent < 9 * 2**20 < d["file_size"]  # a header's worth, never the 1.1 GB of weights


def test_a_recorded_size_makes_the_next_estimate_exact_offline(tmp_path: Path, hub: RangeServer,
                                                              monkeypatch: pytest.MonkeyPatch):
    cat = shipped_catalog()
    model = cat.get("qwen2.5-coder-1.5b")
    variant = cat.variant(model, "q4_k_m")
    repo = tmp_path / "hub" / variant.source
    repo.mkdir(parents=True)
    d = write_gguf("qwen2.5-coder-1.5b-q4_k_m", repo / variant.file)
    found = find_header(variant, [], endpoint=f"http://127.0.0.1:{hub.server_address[1]}")
    assert found is not None
    path = record_size(tmp_path / "catalog", model, variant, found)
    assert "[[variant]]" in path.read_text()
    # the hub is gone and the machine offline: the recorded size is what the estimate uses
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = catalog_with([tmp_path / "catalog"])
    v2 = again.variant(again.get("qwen2.5-coder-1.5b"), "q4_k_m")
    assert v2.size_bytes == d["tensor_bytes"]
    assert total_weight_bytes(again.get("qwen2.5-coder-1.5b"), v2, again.engines) == d["tensor_bytes"]
    # recording again replaces, never duplicates
    record_size(tmp_path / "catalog", model, variant, Found(found.headers, "file x"))
    assert path.read_text().count("[[variant]]") == 1


def test_offline_or_unreachable_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cat = shipped_catalog()
    v = cat.variant(cat.get("qwen2.5-coder-1.5b"), "q4_k_m")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    # nothing listens on port 9 of loopback: refused at once
    assert find_header(v, [tmp_path], endpoint="http://127.0.0.1:9") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert find_header(v, [tmp_path], endpoint="http://127.0.0.1:9") is None
    assert find_header(replace(v, engine="vllm"), [tmp_path]) is None


def test_a_models_dir_and_split_files(tmp_path: Path):
    cat = shipped_catalog()
    v = cat.variant(cat.get("smollm2-135m"), "q4_1")
    write_gguf("smollm2-135m-q4_1", tmp_path / v.file)
    found = find_header(v, [tmp_path], hub=False)
    assert found is not None and found.where.startswith("file ")
    assert split_parts("M-Q8_0-00001-of-00003.gguf") == [f"M-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert split_parts("one.gguf") == ["one.gguf"]
