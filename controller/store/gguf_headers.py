"""GGUF headers: read from a local file, the Hugging Face cache, or the hub with ranged reads of the header only.

A header says every tensor's type and shape, so the bytes a GGUF holds are known exactly without its
data: read once, recorded in the operator's catalog (`record_size`), and the next estimate is exact
offline. Decoding is the `gguf` package's; this module only finds where the header ends, so that a
prefix of a file (a ranged read, or the first part of a file split for a package index) is enough.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.controller.core.catalog import LLAMA_CPP, Model, Variant
from fleet.controller.core.catalog_import import GgufHeader, GgufTensor
from fleet.controller.core.errors import InvalidArgument

GGUF_MAGIC = b"GGUF"
FIRST_READ = 8 * 2**20     # tokenizer arrays make most headers 1-10 MB
MAX_HEADER = 256 * 2**20   # no real header is larger; a file that claims so is refused
# GGUF value types -> bytes of one scalar (8 = string, 9 = array are handled apart)
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
SPLIT = re.compile(r"^(?P<stem>.*)-(?P<n>\d{5})-of-(?P<total>\d{5})\.gguf$")


class HeaderIncomplete(Exception):
    """The bytes at hand end before the header does; `need` is a length that should hold it."""

    def __init__(self, need: int) -> None:
        super().__init__(f"need {need} bytes")
        self.need = need


def header_length(prefix: bytes) -> tuple[int, int]:
    """(where the header ends, where the tensor data starts: the end padded to the alignment);
    HeaderIncomplete when `prefix` ends before the header does.

    Walks the key-values and tensor infos by their lengths only; never loops more often than the prefix
    has bytes, so a truncated or hostile header cannot make it spin.
    """
    n = len(prefix)

    def need(at: int) -> None:
        if at > n:
            raise HeaderIncomplete(max(at, 2 * n))

    need(24)
    if prefix[:4] != GGUF_MAGIC:
        raise InvalidArgument("not a GGUF file (no GGUF magic)")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", prefix, 4)
    if version not in (2, 3):
        raise InvalidArgument(f"GGUF version {version} is not supported")
    pos = 24
    alignment = 32

    def string(at: int) -> tuple[int, str]:
        need(at + 8)
        (length,) = struct.unpack_from("<Q", prefix, at)
        if length > MAX_HEADER:
            raise InvalidArgument("GGUF header has a string longer than 256 MiB")
        need(at + 8 + length)
        return at + 8 + length, prefix[at + 8: at + 8 + length].decode("utf-8", "replace")

    def value(at: int, vtype: int) -> tuple[int, Any]:
        if vtype in _SCALAR:
            need(at + _SCALAR[vtype])
            fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[_SCALAR[vtype]]
            return at + _SCALAR[vtype], struct.unpack_from("<" + fmt, prefix, at)[0]
        if vtype == 8:
            return string(at)
        if vtype == 9:
            need(at + 12)
            itype, count = struct.unpack_from("<IQ", prefix, at)
            at += 12
            if itype in _SCALAR:
                need(at + count * _SCALAR[itype])
                return at + count * _SCALAR[itype], None
            if count > n:  # every item takes at least one byte
                raise HeaderIncomplete(max(2 * n, at + count))
            for _ in range(count):
                at, _v = value(at, itype)
            return at, None
        raise InvalidArgument(f"GGUF header has an unknown value type {vtype}")

    for _ in range(n_kv):
        pos, key = string(pos)
        need(pos + 4)
        (vtype,) = struct.unpack_from("<I", prefix, pos)
        pos, v = value(pos + 4, vtype)
        if key == "general.alignment" and isinstance(v, int) and v > 0 and not v & (v - 1):
            alignment = v
    if n_tensors > n:
        raise HeaderIncomplete(max(2 * n, pos + 24 * n_tensors))
    for _ in range(n_tensors):
        pos, _name = string(pos)
        need(pos + 4)
        (dims,) = struct.unpack_from("<I", prefix, pos)
        pos += 4 + 8 * dims + 4 + 8
        need(pos)
    return pos, pos + (-pos % alignment)


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.data) == 1:
        part = f.parts[f.data[0]]
        if f.types and f.types[0].name == "STRING":
            return bytes(part).decode("utf-8", "replace")
        return part.tolist()[0] if hasattr(part, "tolist") else part
    return [f.parts[i].tolist()[0] if hasattr(f.parts[i], "tolist") else f.parts[i] for i in f.data]


# Header keys decoded for the catalog; tokenizer arrays are only counted (they can hold 150k strings).
_WANTED_PREFIXES = ("general.",)


def _decode(path: Path, name: str) -> GgufHeader:
    from gguf import GGUFReader  # heavy (numpy): only what reads GGUF headers pays for it

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{name}: not a readable GGUF file ({e})") from None
    arch = _field(reader, "general.architecture")
    fields: dict[str, Any] = {}
    for key in reader.fields:
        if key.startswith(_WANTED_PREFIXES) or (arch and key.startswith(f"{arch}.")):
            fields[key] = _field(reader, key)
    if "token_embd.weight" not in {t.name for t in reader.tensors}:
        fields["tokenizer.ggml.tokens"] = _field(reader, "tokenizer.ggml.tokens")
    tensors = tuple(GgufTensor(t.name, tuple(int(x) for x in t.shape), int(t.n_elements), int(t.n_bytes),
                               t.tensor_type.name, int(t.data_offset) - int(reader.data_offset))
                    for t in reader.tensors)
    return GgufHeader(name, fields, tensors, int(reader.data_offset))


def parse_prefix(prefix: bytes, name: str, total_size: int | None = None) -> GgufHeader:
    """A header from the first bytes of a GGUF file; HeaderIncomplete when they end before the header does.

    The `gguf` package reads files, so the prefix goes into a sparse file as long as the real one: the
    tensor data it stands for costs no disk and is never read.
    """
    end, data_offset = header_length(prefix)
    with tempfile.NamedTemporaryFile(prefix="fleet-gguf-", suffix=".gguf") as f:
        f.write(prefix[:end])
        f.truncate(max(total_size or 0, data_offset + 2**40))  # unknown length: a terabyte of nothing
        f.flush()
        return _decode(Path(f.name), name)


def read_gguf_header(path: Path) -> GgufHeader:
    """A local GGUF file's key-values and tensor table (no tensor data is read). The file may be only the
    first part of a GGUF (a download cut short, a package index's first chunk): the header is enough."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(FIRST_READ)
            while True:
                try:
                    return parse_prefix(prefix, str(path), size)
                except HeaderIncomplete as e:
                    if len(prefix) >= size or e.need > MAX_HEADER:
                        raise InvalidArgument(f"{path}: the GGUF header is cut short "
                                              f"({size} bytes, header needs {e.need})") from None
                    f.seek(0)
                    prefix = f.read(e.need)
    except OSError as e:
        raise InvalidArgument(f"{path}: cannot read ({e.strerror or e})") from None


# ---------------------------------------------------------------- the hub


Fetch = Callable[[str, int], tuple[bytes, int | None]]  # url, bytes wanted -> (first bytes, whole length)


def http_fetch(timeout: float = 10.0) -> Fetch:
    """Ranged GETs through huggingface_hub's HTTP session (its headers, token and proxy settings)."""

    def fetch(url: str, length: int) -> tuple[bytes, int | None]:
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers

        headers = {**build_hf_headers(), "Range": f"bytes=0-{length - 1}"}
        with get_session().stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as r:
            r.raise_for_status()
            total: int | None = None
            content_range = r.headers.get("content-range", "")
            if r.status_code == 206 and "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
                total = int(content_range.rsplit("/", 1)[1])
            elif r.status_code == 200 and r.headers.get("content-length", "").isdigit():
                total = int(r.headers["content-length"])
            data = bytearray()
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) >= length:  # a server that ignores Range: stop after the header
                    break
            return bytes(data[:length]), total

    return fetch


def hub_header(repo: str, file: str, *, revision: str = "main", endpoint: str | None = None,
               fetch: Fetch | None = None) -> GgufHeader:
    """The header of `file` in hub repo `repo`, read with ranged requests (a few MB, never the weights)."""
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo, file, revision=revision, endpoint=endpoint)
    fetch = fetch or http_fetch()
    want = FIRST_READ
    while True:
        prefix, total = fetch(url, want)
        try:
            return parse_prefix(prefix, f"{repo}/{file}", total)
        except HeaderIncomplete as e:
            if len(prefix) < want or e.need > MAX_HEADER:
                raise InvalidArgument(f"{repo}/{file}: the GGUF header does not fit in "
                                      f"{len(prefix)} bytes") from None
            want = e.need


# ---------------------------------------------------------------- finding a variant's file


def split_parts(file: str) -> list[str]:
    """All parts of a split GGUF (`X-00001-of-00003.gguf`), or just `file`."""
    m = SPLIT.match(file)
    if not m:
        return [file]
    total = int(m["total"])
    return [f"{m['stem']}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1)]


@dataclass(frozen=True)
class Found:
    """A variant's GGUF headers (one per split part) and where they were read."""

    headers: tuple[GgufHeader, ...]
    where: str

    @property
    def tensor_bytes(self) -> int:
        return sum(h.tensor_bytes for h in self.headers)


def _local_file(variant: Variant, dirs: list[Path]) -> list[Path] | None:
    names = split_parts(variant.file) if variant.file else []
    src = Path(variant.source).expanduser() if variant.source.startswith(("/", "~")) else None
    if src is not None and src.is_file():
        return [src]
    for d in ([src] if src is not None and src.is_dir() else []) + dirs:
        for base in (d, d / variant.source.replace("/", "--"), d / variant.source.rsplit("/", 1)[-1]):
            paths = [base / n for n in names]
            if paths and all(p.is_file() for p in paths):
                return paths
    return None


def _hf_cached(variant: Variant) -> list[Path] | None:
    if "/" not in variant.source or variant.source.startswith(("/", "~")) or not variant.file:
        return None
    from huggingface_hub import try_to_load_from_cache

    paths = []
    for name in split_parts(variant.file):
        hit = try_to_load_from_cache(repo_id=variant.source, filename=name)
        if not isinstance(hit, str):
            return None
        paths.append(Path(hit))
    return paths


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def find_header(variant: Variant, dirs: list[Path] | None = None, *, hub: bool = True,
                endpoint: str | None = None, fetch: Fetch | None = None) -> Found | None:
    """The variant's GGUF header from a local file (`dirs`), the Hugging Face cache, or the hub (headers only);
    None when none is reachable (offline, no such file): the estimate then models the file instead."""
    if variant.engine != LLAMA_CPP:
        return None
    for paths, where in ((_local_file(variant, list(dirs or [])), "file"), (_hf_cached(variant), "hf cache")):
        if paths:
            try:
                return Found(tuple(read_gguf_header(p) for p in paths), f"{where} {paths[0]}")
            except InvalidArgument:
                continue
    if not hub or hub_offline() or "/" not in variant.source or variant.source.startswith(("/", "~")) \
            or not variant.file.endswith(".gguf"):
        return None
    try:
        headers = tuple(hub_header(variant.source, name, endpoint=endpoint, fetch=fetch)
                        for name in split_parts(variant.file))
    except Exception:  # offline, no such repo or file, a proxy in the way: all mean "not reachable now"
        return None
    return Found(headers, f"hub {variant.source}/{variant.file}")


# ---------------------------------------------------------------- recording what was read

MEASURED_FILE = "measured-sizes.toml"


def record_size(catalog_dir: Path, model: Model, variant: Variant, found: Found) -> Path:
    """Write the variant's exact size into DIR/measured-sizes.toml, so the next estimate is exact offline.

    One `[[variant]]` entry per (model, quant, engine, source, file); a newer reading replaces the older.
    """
    catalog_dir = Path(catalog_dir).expanduser()
    catalog_dir.mkdir(parents=True, exist_ok=True)
    path = catalog_dir / MEASURED_FILE
    entries: list[dict[str, Any]] = []
    if path.exists():
        try:
            entries = list(tomllib.loads(path.read_text()).get("variant", []))
        except tomllib.TOMLDecodeError:
            entries = []
    key = (model.name, variant.quant, variant.engine, variant.source, variant.file)
    entries = [e for e in entries if (e.get("model"), e.get("quant"), e.get("engine"), e.get("source"),
                                      e.get("file")) != key]
    entries.append({"model": model.name, "quant": variant.quant, "engine": variant.engine, "source": variant.source,
                    "file": variant.file, "size_bytes": found.tensor_bytes,
                    "file_bytes": sum(h.file_size for h in found.headers), "measured": found.where})
    lines = ["# Written by fleet: exact GGUF sizes read from file headers (tensor bytes), so that estimates",
             "# need no network. Safe to delete; fleet reads the headers again when they are reachable.", ""]
    for e in sorted(entries, key=lambda e: (e["model"], e["quant"], e["source"], e["file"])):
        lines += ["[[variant]]", *(f"{k} = {_toml(v)}" for k, v in e.items()), ""]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
