"""What the edge checks before anything reaches a use case: names, sizes, counts and string lengths.

A request that fails here gets one INVALID_ARGUMENT saying what to change, and changes nothing.
"""

from __future__ import annotations

import re

from fleet.controller.core.errors import InvalidArgument
from fleet.proto import fleet_pb2 as pb

NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
DEPLOYMENT_NAME = NODE_NAME
MAX_GPUS = 64
MAX_STR = 256
MAX_REPLICAS = 64


def validate_node_name(name: str) -> str:
    name = name.strip().lower()
    if not NODE_NAME.match(name):
        raise InvalidArgument(
            f"invalid node name {name!r}: use 1-63 lowercase letters, digits, '-' or '.', starting and ending "
            "with a letter or digit (pass --name)"
        )
    return name


def validate_inventory(inv: pb.Inventory) -> None:
    if len(inv.gpus) > MAX_GPUS:
        raise InvalidArgument(f"inventory reports {len(inv.gpus)} GPUs; at most {MAX_GPUS} per node")
    strings = [inv.hostname, inv.models_dir, inv.agent_version, inv.gpu_probe]
    for g in inv.gpus:
        strings += [g.uuid, g.name, g.compute_capability, g.driver]
        if not g.uuid:
            raise InvalidArgument("inventory has a GPU without a UUID")
    for e in inv.engines:
        strings += [e.name, e.version, e.path]
    for k, v in inv.labels.items():
        strings += [k, v]
    if any(len(s) > MAX_STR * 4 for s in strings):
        raise InvalidArgument("inventory has a string longer than 1024 characters")
    if len({g.uuid for g in inv.gpus}) != len(inv.gpus):
        raise InvalidArgument("inventory lists the same GPU UUID twice")


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
