"""How the parts of a multi-node replica start together: who waits for whom, who is told which address.

Pure: the shell (app/gang.py, rpc/convert.py) hands in what the nodes last reported and gets back, per
part, whether to hold and what its peers are; it also says when a gang must restart.

- llama.cpp: the rpc-server parts start at once; the main (llama-server --rpc host:port,...) is held until
  every rpc-server of the current epoch listens, and is told their addresses, in rank order.
- vLLM: the main allocates its rendezvous port (--master-port) and reports it while held; the followers
  (--headless) are held until the main reports that address in the current epoch and runs no older engine;
  the main is held until every follower runs, so followers start first.
- A part that crashed in the current epoch ends it: a new epoch restarts every part, in that order.
- A part on a declared node (planning only) reports `declared` instead of running: to the gang it has
  started, so a gang over declared nodes is accounted as a whole instead of holding its main forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fleet.controller.core.replica_states import DECLARED, SERVING

LLAMA_CPP = "llama.cpp"
VLLM = "vllm"

RUNNING = ("starting", SERVING, DECLARED)
LISTENING = (SERVING, DECLARED)  # an rpc-server the main may be told about


@dataclass(frozen=True)
class PartState:
    """A part as its node last reported it (rank 0: the main)."""

    rank: int
    node: str
    state: str = "pending"
    address: str = ""  # rpc-server: where it listens; vLLM main: its rendezvous host:port
    epoch: int = 0  # the gang epoch it runs (or holds) in
    restarts: int = 0
    devices: int = 1  # devices it gives the replica: its GPUs, or 1 (its CPU)


@dataclass(frozen=True)
class PartLaunch:
    rank: int
    hold: bool
    peers: tuple[str, ...] = ()  # llama.cpp main: rpc-server addresses by rank
    master_address: str = ""  # vLLM followers: the main's rendezvous address
    waiting_for: str = field(default="", compare=False)  # why it holds, for the operator (not a change)


def role(engine: str, rank: int) -> str:
    return "main" if rank == 0 else ("rpc" if engine == LLAMA_CPP else "follower")


def launches(engine: str, epoch: int, parts: Sequence[PartState]) -> list[PartLaunch]:
    """Per part (sorted by rank, the main first): hold or go, and the addresses it needs."""
    ranked = sorted(parts, key=lambda p: p.rank)
    main, others = ranked[0], ranked[1:]
    out: list[PartLaunch] = []
    if engine == LLAMA_CPP:
        waiting = [p for p in others if not (p.epoch == epoch and p.state in LISTENING and p.address)]
        words = ", ".join(f"rpc-server on {p.node} ({p.state})" for p in waiting)
        out.append(PartLaunch(0, bool(waiting), () if waiting else tuple(p.address for p in others),
                              waiting_for=words))
        out += [PartLaunch(p.rank, False) for p in others]
        return out
    # The main holds its rendezvous port in this epoch and runs no older engine (held, or already started).
    main_ready = main.epoch == epoch and bool(main.address) and main.state in ("pending", *RUNNING)
    waiting = [p for p in others if not (p.epoch == epoch and p.state in RUNNING)]
    words = ", ".join(f"follower on {p.node} ({p.state})" for p in waiting)
    out.append(PartLaunch(0, bool(waiting), waiting_for=words))
    for p in others:
        out.append(PartLaunch(p.rank, not main_ready, master_address=main.address if main_ready else "",
                              waiting_for="" if main_ready else f"the main on {main.node} ({main.state})"))
    return out


def crashed(before: PartState, after: PartState, epoch: int) -> bool:
    """Did this report show the part's engine dying in the current epoch (a restart the gang must follow)?

    A part its agent gave up on (failed) is not restarted again: the replica is failed, as on one node.
    """
    return after.epoch == epoch and after.restarts > before.restarts and after.state != "failed"


def tensor_split(main_devices: Sequence[int], parts: Sequence[Sequence[int]]) -> tuple[float, ...]:
    """llama.cpp's --tensor-split over every device, in its order: the rpc-servers' devices (by rank), then the
    main's own GPUs; proportions of the memory reserved on each (bytes per device)."""
    devices = [b for part in parts for b in part] + list(main_devices)
    total = sum(devices) or 1
    return tuple(round(b / total, 4) for b in devices)


def offloaded_layers(layers: int, main_bytes: int, part_bytes: Sequence[int]) -> int:
    """llama.cpp main on CPU: -ngl, the layers (of n + 1 with the output layer) the rpc-servers take; the main's
    own RAM keeps the rest, in proportion to what each reserved."""
    total = main_bytes + sum(part_bytes)
    if total <= 0:
        return layers + 1
    share = sum(part_bytes) / total
    return max(1, min(layers + 1, round((layers + 1) * share)))
