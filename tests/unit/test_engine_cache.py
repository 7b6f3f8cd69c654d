"""One rule for the engine cache: an agent looks in its own DATA_DIR/engines first, then the shared cache;
`fleet engine install --data-dir D` means the same D as `fleet agent run --data-dir D`, and without flags it
installs where the installed agent (/etc/fleet/agent.toml) looks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.agent import engine_install as ei
from fleet.agent.probe import probe_engines
from fleet.cli import config
from fleet.cli.engine import engine_cache
from fleet.cli.main import register_areas

app = register_areas()


def fake_llama(cache: Path, version: str) -> Path:
    """A completed llama.cpp install in `cache`: scripts that answer --version like llama-server, and the
    rpc-server beside it (a build without one is not complete: `fleet engine install` would rebuild it)."""
    vdir = cache / "llama.cpp" / version
    (vdir / "bin").mkdir(parents=True)
    binary = vdir / "bin" / "llama-server"
    for path in (binary, vdir / ei.RPC_SERVER):
        path.write_text(f"#!/bin/sh\necho 'version: {version} (abc)' >&2\n")
        path.chmod(0o755)
    (vdir / "fleet-engine.json").write_text("{}")
    return binary


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No engine on PATH, an empty shared cache, no installed agent config."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("FLEET_ENGINES_DIR", str(tmp_path / "shared"))
    monkeypatch.setitem(config.DEFAULT_PATHS, "agent", tmp_path / "etc" / "agent.toml")


def test_the_agent_finds_an_engine_installed_with_its_own_data_dir(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a1"
    binary = fake_llama(ei.agent_engines_dir(agent_dir), "0.3.36")
    assert [(e.name, e.path) for e in probe_engines(data_dir=agent_dir)] == [("llama.cpp", str(binary))]
    assert probe_engines(data_dir=tmp_path / "other") == (), "another agent's cache is not this one's"


def test_the_agents_own_cache_comes_before_the_shared_one(tmp_path: Path) -> None:
    fake_llama(tmp_path / "shared", "0.3.40")
    own = fake_llama(ei.agent_engines_dir(tmp_path / "a1"), "0.3.36")
    found = probe_engines(data_dir=tmp_path / "a1")
    assert [e.path for e in found] == [str(own)]
    assert [e.version for e in probe_engines(data_dir=tmp_path / "a2")] == ["0.3.40"], "the shared cache is a fallback"


def test_where_fleet_engine_install_puts_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine_cache(tmp_path / "exact", tmp_path / "a1")[0] == tmp_path / "exact"
    assert engine_cache(None, tmp_path / "a1")[0] == tmp_path / "a1" / "engines"
    assert engine_cache(None, None) == (tmp_path / "shared", "$FLEET_ENGINES_DIR")
    monkeypatch.delenv("FLEET_ENGINES_DIR")
    assert engine_cache(None, None) == (Path.home() / ".cache" / "fleet" / "engines", "the shared cache")
    # an installed agent (`sudo fleet agent install` wrote /etc/fleet/agent.toml): its data dir, not root's HOME
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "agent.toml").write_text('controller = "10.0.0.5:50051"\ndata_dir = "/srv/fleet-agent"\n')
    where, why = engine_cache(None, None)
    assert where == Path("/srv/fleet-agent/engines") and str(etc / "agent.toml") in why
    (etc / "agent.toml").write_text('controller = "10.0.0.5:50051"\n')
    assert engine_cache(None, None)[0] == Path("/var/lib/fleet-agent/engines"), "the unit's StateDirectory"


def test_engine_install_and_list_with_the_agents_data_dir(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a1"
    binary = fake_llama(ei.agent_engines_dir(agent_dir), ei.DEFAULT_VERSIONS["llama.cpp"])
    runner = CliRunner()
    out = runner.invoke(app, ["engine", "install", "llama.cpp", "--data-dir", str(agent_dir)])
    assert out.exit_code == 0 and "cached" in out.output and str(binary) in out.output.replace("\n", ""), out.output
    out = runner.invoke(app, ["engine", "list", "--data-dir", str(agent_dir), "-o", "json"])
    assert out.exit_code == 0, out.output
    assert [r["path"] for r in json.loads(out.stdout)] == [str(binary)]
