"""Imports point down: core <- store <- app <- rpc/http; agent, controller and cli do not import each other.

Every `import` and `from ... import` in every module (function bodies included) is checked against the
rules of docs/ARCHITECTURE.md, so a shortcut across layers fails here with the file and line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"common": "fleet.common", "agent": "fleet.agent", "controller": "fleet.controller", "cli": "fleet.cli",
           "proto": "fleet.proto"}
STDLIB = set(sys.stdlib_module_names)

# module prefix -> (allowed fleet prefixes, forbidden third-party top-level packages)
CORE = ("fleet.common", "fleet.controller.core")
STORE = (*CORE, "fleet.controller.store")
APP = (*STORE, "fleet.controller.app")
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("fleet.controller.core", CORE, ("grpc", "google", "sqlmodel", "sqlalchemy", "aiohttp", "prometheus_client")),
    ("fleet.controller.store", STORE, ("grpc", "google", "aiohttp")),
    ("fleet.controller.app", APP, ("grpc", "google", "aiohttp")),
    ("fleet.controller.rpc", (*APP, "fleet.controller.rpc", "fleet.controller.tls", "fleet.proto"), ("aiohttp",)),
    ("fleet.controller.http", (*APP, "fleet.controller.http"), ("grpc", "google")),
    ("fleet.controller.tls", ("fleet.common",), ()),
    ("fleet.controller.main", ("fleet.common", "fleet.controller"), ()),
    ("fleet.controller", ("fleet.common",), ()),  # the package itself, and any new top-level module
    ("fleet.common", ("fleet.common",), ("grpc", "google", "sqlmodel", "sqlalchemy", "aiohttp")),
    ("fleet.agent", ("fleet.agent", "fleet.common", "fleet.proto"), ()),
    # The entry point: starts either daemon; offline verbs use the pure core and the catalog files.
    ("fleet.cli", ("fleet.cli", "fleet.common", "fleet.proto", "fleet.controller.main", "fleet.controller.core",
                   "fleet.controller.store.files", "fleet.controller.store.migrate",
                   "fleet.controller.store.gguf_headers", "fleet.agent.main",
                   "fleet.agent.probe", "fleet.agent.engine_install"), ()),
]


def modules() -> list[tuple[str, Path]]:
    out = []
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join([package, *parts]), path))
    return out


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            # `from fleet.controller.app import drain` imports the module fleet.controller.app.drain
            found += [(node.lineno, f"{name}.{a.name}" if name.startswith("fleet") else name) for a in node.names]
    return found


def rule_for(module: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    best = None
    for prefix, allowed, forbidden in RULES:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, allowed, forbidden)
    return None if best is None else (best[1], best[2])


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


ALL = modules()


@pytest.mark.parametrize("module,path", ALL, ids=[m for m, _ in ALL])
def test_imports_point_down(module: str, path: Path) -> None:
    rule = rule_for(module)
    if rule is None:
        return  # fleet.proto: generated
    allowed, forbidden = rule
    wrong = []
    for line, name in imports(module, path):
        top = name.split(".")[0]
        if top == "fleet":
            # a name imported from a package may be a module or an attribute: allowed if either is
            if not (_under(name, allowed) or _under(name.rsplit(".", 1)[0], allowed)):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
        elif top in forbidden:
            wrong.append(f"{path.relative_to(REPO)}:{line} imports {name} ({top} is not allowed in this layer)")
    assert not wrong, "\n".join(wrong)


def test_the_rules_cover_every_folder() -> None:
    uncovered = [m for m, _ in ALL if rule_for(m) is None and not m.startswith("fleet.proto")]
    assert uncovered == []


def test_a_shortcut_across_layers_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from fleet.controller.rpc.convert import node_message\nimport grpc\n")
    names = [n for _, n in imports("fleet.controller.core.bad", bad)]
    allowed, forbidden = rule_for("fleet.controller.core.bad")  # type: ignore[misc]
    assert not _under("fleet.controller.rpc.convert.node_message", allowed)
    assert "grpc" in names and "grpc" in forbidden
