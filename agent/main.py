"""`fleet agent run`: probe this machine, join the controller, keep the session open."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from fleet.agent.link import AgentFatal, Link
from fleet.agent.probe import nvml_usage, probe

log = logging.getLogger("fleet.agent")

VERSION = "0.1.0"


async def serve(controller: str, data_dir: Path, join_token: str | None, name: str | None,
                simulate: str | None, models_dir: Path | None, labels: dict[str, str]) -> None:
    node = (name or socket.gethostname()).lower()
    models_dir = (models_dir or data_dir / "models").resolve()
    # Hardware is re-detected on every start: a GPU swapped during maintenance shows up at once.
    found = await asyncio.to_thread(probe, models_dir, node, simulate)
    log.info("probed %d GPU(s) via %s, engines: %s", len(found.gpus), found.gpu_probe,
             ", ".join(f"{e.name} {e.version}" for e in found.engines) or "none")
    usage = None
    if found.gpu_probe == "nvml":
        import pynvml

        def usage() -> dict[str, tuple[int, int, int]]:
            return nvml_usage(pynvml)

    link = Link(controller, data_dir, found, node, join_token, VERSION, usage=usage, labels=labels)
    task = asyncio.create_task(link.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("agent stopping")


def run(**kwargs: Any) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(**kwargs))
    except AgentFatal as e:
        log.error("%s", e.message)
        return e.code
    return 0
