"""Config precedence: flag > environment > config file > default, on a tiny app built like `fleet agent run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from fleet.cli import config as cfg
from fleet.cli.config import AgentConfigOpt


def make_app() -> typer.Typer:
    app = typer.Typer()
    agent = typer.Typer()
    app.add_typer(agent, name="agent")

    @agent.command("run")
    def run(
        config: AgentConfigOpt = None,
        controller: Annotated[str, typer.Option(envvar="FLEET_CONTROLLER")] = "127.0.0.1:50051",
        name: Annotated[str | None, typer.Option()] = None,
        heartbeat: Annotated[float, typer.Option()] = 5.0,
        data_dir: Annotated[Path, typer.Option()] = Path("/default"),
        label: Annotated[list[str], typer.Option()] = [],  # noqa: B006
    ) -> None:
        print(json.dumps({"controller": controller, "name": name, "heartbeat": heartbeat,
                          "data_dir": str(data_dir), "label": label}))

    return app


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(cfg.DEFAULT_PATHS, "agent", tmp_path / "absent.toml")
    for var in ("FLEET_CONTROLLER", "FLEET_AGENT_CONTROLLER", "FLEET_AGENT_NAME", "FLEET_AGENT_HEARTBEAT"):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, env: dict[str, str] | None = None, code: int = 0):
        result = CliRunner().invoke(make_app(), ["agent", "run", *args], env=env)
        assert result.exit_code == code, result.output
        return json.loads(result.stdout) if code == 0 else result.output
    return run


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_file(invoke) -> None:
    assert invoke() == {"controller": "127.0.0.1:50051", "name": None, "heartbeat": 5.0, "data_dir": "/default",
                        "label": []}


def test_flag_beats_env_beats_file_beats_default(invoke, tmp_path: Path) -> None:
    f = write(tmp_path / "agent.toml", 'controller = "file:1"\nname = "file-name"\nheartbeat = 7\n'
                                       'data-dir = "/from/file"\nlabel = ["zone=a", "rack=3"]\n')
    env = {"FLEET_CONTROLLER": "env:1", "FLEET_AGENT_NAME": "env-name"}
    got = invoke("--config", str(f), "--controller", "flag:1", env=env)
    assert got["controller"] == "flag:1"          # flag beats env and file
    assert got["name"] == "env-name"              # env (auto FLEET_AGENT_*) beats file
    assert got["heartbeat"] == 7.0                # file beats default
    assert got["data_dir"] == "/from/file"        # dashes accepted in keys
    assert got["label"] == ["zone=a", "rack=3"]   # arrays for repeatable options
    assert invoke("--config", str(f), env=env)["controller"] == "env:1"   # the option's own envvar beats the file


def test_default_file_used_only_if_it_exists(invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke()["name"] is None
    monkeypatch.setitem(cfg.DEFAULT_PATHS, "agent", write(tmp_path / "default.toml", 'name = "from-default"\n'))
    assert invoke()["name"] == "from-default"


def test_explicit_missing_file_is_an_error(invoke, tmp_path: Path) -> None:
    out = invoke("--config", str(tmp_path / "nope.toml"), code=2)
    assert "cannot read config file" in out


def test_unknown_key_names_it_and_the_valid_ones(invoke, tmp_path: Path) -> None:
    out = invoke("--config", str(write(tmp_path / "a.toml", 'nmae = "x"\n')), code=2)
    assert "unknown key(s) nmae" in out
    assert "valid keys: controller, data_dir, heartbeat, label, name" in out


def test_bad_value_and_bad_toml(invoke, tmp_path: Path) -> None:
    out = invoke("--config", str(write(tmp_path / "a.toml", 'heartbeat = "soon"\n')), code=2)
    assert "heartbeat = 'soon'" in out
    out = invoke("--config", str(write(tmp_path / "b.toml", "name = \n")), code=2)
    assert "not valid TOML" in out
