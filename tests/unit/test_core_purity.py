"""The pure cores load no I/O machinery: every module under controller/core/ (and the agent's launchers),
imported in a fresh interpreter, pulls in no grpc, database, HTTP, subprocess or socket module, and
installs no logging handler (STYLE.md rule 2). Replaces the per-module checks that each covered a part.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import fleet.controller.core as core

FORBIDDEN = ("grpc", "google.protobuf", "sqlalchemy", "sqlmodel", "aiohttp", "subprocess", "socket",
             "prometheus_client")
PURE = sorted(f"fleet.controller.core.{m.name}" for m in pkgutil.iter_modules(core.__path__)) + ["fleet.agent.engines"]

PROBE = """
import importlib, json, logging, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in {forbidden!r}))
handlers = [type(h).__name__ for lg in [logging.root, *logging.root.manager.loggerDict.values()]
            for h in getattr(lg, "handlers", [])]
print(json.dumps({{"loaded": loaded, "handlers": handlers}}))
"""


def probe(*modules: str) -> dict[str, list[str]]:
    code = PROBE.format(forbidden=FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_every_core_module_is_listed() -> None:
    assert {"placement", "estimate", "catalog", "options", "drain_plan", "whatif", "routing", "liveness",
            "snapshot"} <= {m.rsplit(".", 1)[-1] for m in PURE}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_loads_no_io(module: str) -> None:
    assert probe(module) == {"loaded": [], "handlers": []}


def test_the_probe_notices_io() -> None:
    seen = probe("fleet.controller.store.repository")
    assert "sqlalchemy" in seen["loaded"] and "sqlmodel" in seen["loaded"]
