"""What the edge checks before anything reaches a use case: names, sizes, counts, string lengths, characters.

A request that fails here gets one INVALID_ARGUMENT saying what to change, and changes nothing. The
bounds on numbers keep every sum the controller makes (a node's, the fleet's) inside the 64-bit fields
and columns it is stored and sent in: no value from an agent can break `fleet capacity` for everyone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fleet.controller.core.errors import InvalidArgument
from fleet.controller.core.replica_states import STATES
from fleet.proto import fleet_pb2 as pb

NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
# An IPv4/IPv6 address or a DNS name: what other nodes dial to reach a part of a multi-node replica.
ADDRESS = re.compile(r"^[A-Za-z0-9.:%_-]{1,253}$")
MAX_NODES = 16
DEPLOYMENT_NAME = NODE_NAME
# NVML: GPU-<uuid>, MIG-<uuid> or MIG-GPU-<uuid>/<gi>/<ci>; declared GPUs: GPU-<uuid5>.
GPU_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
COMPUTE_CAPABILITY = re.compile(r"^(\d{1,2}\.\d{1,2})?$")
WORD = re.compile(r"^[a-z0-9._-]{0,32}$")  # gpu_probe, engine names
ENDPOINT = re.compile(r"^https?://[A-Za-z0-9._\[\]:-]{1,255}:\d{1,5}$")
PART_ADDRESS = re.compile(r"^[A-Za-z0-9._\[\]:%-]{1,255}:\d{1,5}$")  # where a part of a multi-node replica listens
REPLICA_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{0,127}$")

MAX_GPUS = 64
MAX_STR = 256
MAX_REPLICAS = 64
MAX_ENGINES = 8
MAX_LABELS = 64
MAX_PATH = 1024
MAX_GPU_MEMORY = 2**40  # 1 TiB: several times the largest GPU made
MAX_RAM = 2**48  # 256 TiB
MAX_DISK = 2**56  # 64 PiB
MAX_CPUS = 2**16
REPLICA_STATES = frozenset(STATES)  # one list: `declared` (a declared node's replica) included


def validate_node_name(name: str) -> str:
    name = name.strip().lower()
    if not NODE_NAME.match(name):
        raise InvalidArgument(
            f"invalid node name {name[:80]!r}: use 1-63 lowercase letters, digits, '-' or '.', starting and ending "
            "with a letter or digit (pass --name)"
        )
    return name


def _text(what: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"inventory: {what} is {len(value)} characters; at most {limit}")
    if not value.isprintable():
        raise InvalidArgument(f"inventory: {what} {value[:40]!r} has control characters")


def _number(what: str, value: int, low: int, high: int, unit: str = "") -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{what} {value} is out of range ({low}..{high}{unit})")


def _gpu_uuid(where: str, uuid: str) -> None:
    if not uuid:
        raise InvalidArgument(f"{where} has a GPU without a UUID")
    if not GPU_UUID.match(uuid):
        raise InvalidArgument(f"{where}: GPU UUID {uuid[:40]!r} is not a UUID (letters, digits, '-', '.', ':', '/'; "
                              "at most 128)")


def _usage(where: str, uuid: str, used: int, utilization: int, temperature: int) -> None:
    _gpu_uuid(where, uuid)
    _number(f"{where}: GPU {uuid} memory_used", used, 0, MAX_GPU_MEMORY, " bytes")
    _number(f"{where}: GPU {uuid} utilization", utilization, 0, 100, " %")
    _number(f"{where}: GPU {uuid} temperature", temperature, -1, 200, " C")


def _unique(where: str, uuids: Iterable[str]) -> None:
    seen: set[str] = set()
    for u in uuids:
        if u in seen:
            raise InvalidArgument(f"{where} lists GPU {u} twice")
        seen.add(u)


def validate_inventory(inv: pb.Inventory) -> None:
    """Every field an agent reports about its machine, bounded; raises one InvalidArgument naming the field."""
    if len(inv.gpus) > MAX_GPUS:
        raise InvalidArgument(f"inventory reports {len(inv.gpus)} GPUs; at most {MAX_GPUS} per node")
    if len(inv.engines) > MAX_ENGINES:
        raise InvalidArgument(f"inventory reports {len(inv.engines)} engines; at most {MAX_ENGINES}")
    if len(inv.labels) > MAX_LABELS:
        raise InvalidArgument(f"inventory has {len(inv.labels)} labels; at most {MAX_LABELS}")
    _text("hostname", inv.hostname, 253)
    _text("models_dir", inv.models_dir, MAX_PATH)
    _text("agent_version", inv.agent_version, 64)
    if not WORD.match(inv.gpu_probe):
        raise InvalidArgument(f"inventory: gpu_probe {inv.gpu_probe[:40]!r} is not a probe name")
    _number("inventory: cpu_count", inv.cpu_count, 0, MAX_CPUS)
    _number("inventory: ram_total", inv.ram_total, 0, MAX_RAM, " bytes")
    _number("inventory: ram_available", inv.ram_available, 0, MAX_RAM, " bytes")
    _number("inventory: disk_total", inv.disk_total, 0, MAX_DISK, " bytes")
    _number("inventory: disk_free", inv.disk_free, 0, MAX_DISK, " bytes")
    for g in inv.gpus:
        _usage("inventory", g.uuid, g.memory_used, g.utilization, g.temperature)
        _number(f"inventory: GPU {g.uuid} memory_total", g.memory_total, 0, MAX_GPU_MEMORY, " bytes")
        _number(f"inventory: GPU {g.uuid} index", g.index, 0, 1023)
        _text(f"GPU {g.uuid} name", g.name, 128)
        _text(f"GPU {g.uuid} driver", g.driver, 64)
        if not COMPUTE_CAPABILITY.match(g.compute_capability):
            raise InvalidArgument(f"inventory: GPU {g.uuid} compute_capability {g.compute_capability[:20]!r} "
                                  "is not MAJOR.MINOR")
    _unique("inventory", (g.uuid for g in inv.gpus))
    for e in inv.engines:
        if not WORD.match(e.name):
            raise InvalidArgument(f"inventory: engine name {e.name[:40]!r} is not an engine name")
        _text(f"engine {e.name} version", e.version, 64)
        _text(f"engine {e.name} path", e.path, MAX_PATH)
    for k, v in inv.labels.items():
        if not LABEL_KEY.match(k):
            raise InvalidArgument(f"inventory: label key {k[:80]!r}: 1-63 letters, digits, '.', '_', '/' or '-'")
        _text(f"label {k}", v, 253)
    if inv.advertise_address and not ADDRESS.match(inv.advertise_address):
        raise InvalidArgument(f"inventory: advertise address {inv.advertise_address[:64]!r} is not an IP address "
                              "or host name")


def validate_heartbeat(hb: pb.Heartbeat) -> None:
    if len(hb.gpus) > MAX_GPUS:
        raise InvalidArgument(f"heartbeat reports {len(hb.gpus)} GPUs; at most {MAX_GPUS} per node")
    for u in hb.gpus:
        _usage("heartbeat", u.uuid, u.memory_used, u.utilization, u.temperature)
    _unique("heartbeat", (u.uuid for u in hb.gpus))
    _number("heartbeat: ram_available", hb.ram_available, 0, MAX_RAM, " bytes")
    _number("heartbeat: disk_free", hb.disk_free, 0, MAX_DISK, " bytes")


def validate_replica_report(report: pb.ReplicaReport) -> None:
    """A node's replica states; endpoints must be plain http(s)://host:port (the gateway forwards to them)."""
    for r in report.replicas:
        if not REPLICA_ID.match(r.id):
            raise InvalidArgument(f"replica report: {r.id[:80]!r} is not a replica id")
        if r.state not in REPLICA_STATES:
            raise InvalidArgument(f"replica report: state {r.state[:40]!r} of {r.id} is not a replica state")
        if r.endpoint and not ENDPOINT.match(r.endpoint):
            raise InvalidArgument(f"replica report: endpoint {r.endpoint[:80]!r} of {r.id} is not http(s)://HOST:PORT")
        if r.address and not PART_ADDRESS.match(r.address):
            raise InvalidArgument(f"replica report: address {r.address[:80]!r} of {r.id} is not HOST:PORT")


def validate_place(req: pb.PlaceRequest) -> None:
    if not req.model or len(req.model) > 200:
        raise InvalidArgument("name a model (see `fleet models`)")
    if req.name and not DEPLOYMENT_NAME.match(req.name):
        raise InvalidArgument(f"invalid deployment name {req.name!r}: 1-63 lowercase letters, digits, '-' or '.'")
    if not 1 <= (req.replicas or 1) <= MAX_REPLICAS:
        raise InvalidArgument(f"--replicas must be between 1 and {MAX_REPLICAS}")
    if req.device not in ("", "gpu", "cpu"):
        raise InvalidArgument("--device is gpu or cpu")
    if req.strategy not in ("", "pack", "spread"):
        raise InvalidArgument("--strategy is pack or spread")
    if req.context > 10_000_000 or req.tp > 64 or req.max_moves > 64:
        raise InvalidArgument("--context or --tp out of range")
    if req.nodes > MAX_NODES:
        raise InvalidArgument(f"--nodes must be between 1 and {MAX_NODES}")
    if len(req.labels) > 32 or any(len(k) > 63 or len(v) > 63 for k, v in req.labels.items()):
        raise InvalidArgument("at most 32 labels, keys and values up to 63 characters")
    for text in (req.quant, req.engine, req.node, req.gpu_type):
        if len(text) > 100:
            raise InvalidArgument("an argument is longer than 100 characters")


def validate_observed(req: pb.ObservedRequest) -> None:
    if not req.model or len(req.model) > 200:
        raise InvalidArgument("name a model (see `fleet models`)")
    if any(len(t) > 100 for t in (req.quant, req.engine, req.gpu_type)):
        raise InvalidArgument("an argument is longer than 100 characters")
    if not req.quant or not req.engine or not req.context:
        raise InvalidArgument("quant, engine and context are needed to look up observations")
    if req.context > 10_000_000 or req.tp > 64:
        raise InvalidArgument("--context or --tp out of range")
