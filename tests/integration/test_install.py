"""`fleet agent|controller install|uninstall` staged under --root, the units checked by the real systemd-analyze.

Never runs a non-staged install through the CLI (this test may run as root on a real machine): the systemctl
path is exercised on the installer functions with a recording runner instead.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fleet.cli import daemons, install, installer
from fleet.cli.config import _options, check_keys, load_config
from fleet.cli.installer import AGENT, CONTROLLER, InstallError

REPO = Path(__file__).resolve().parents[2]
AGENT_ARGS = ["agent", "install", "--controller", "10.0.0.5:50051", "--join-token", "s3cret"]


def make_app() -> typer.Typer:
    app = typer.Typer()
    daemons.register(app)
    install.register(app)   # after daemons, as in fleet.cli.main.AREAS
    return app


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(make_app(), list(args))
    assert result.exit_code == code, result.output
    return result.output


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def staged(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str]) -> int:
        self.calls.append(list(argv))
        return 1 if self.fail_on and self.fail_on in argv else 0


# ---------------------------------------------------------------- staged installs through the CLI

def test_agent_install_writes_config_and_unit(tmp_path: Path) -> None:
    out = cli(*AGENT_ARGS, "--name", "gpu-01", "--models-dir", "/srv/models", "--simulate-gpus", "2xA100-80GB",
              "--root", str(tmp_path))
    assert "staged under" in out
    config = staged(tmp_path, "/etc/fleet/agent.toml")
    unit = staged(tmp_path, "/etc/systemd/system/fleet-agent.service")
    assert mode(config) == 0o600 and mode(config.parent) == 0o700 and mode(unit) == 0o644
    assert tomllib.loads(config.read_text()) == {
        "controller": "10.0.0.5:50051", "join_token": "s3cret", "data_dir": "/var/lib/fleet-agent",
        "name": "gpu-01", "models_dir": "/srv/models", "simulate_gpus": "2xA100-80GB"}
    text = unit.read_text()
    exe = installer.fleet_executable()
    assert exe.is_absolute() and exe.is_file()
    assert f"ExecStart={exe} agent run --config /etc/fleet/agent.toml\n" in text
    assert "ReadWritePaths=/var/lib/fleet-agent /srv/models\n" in text
    assert staged(tmp_path, "/srv/models").is_dir()
    assert "KillMode=process\n" in text and "Type=notify\n" in text and "WatchdogSec=" in text


def test_controller_install_writes_config_and_unit(tmp_path: Path) -> None:
    cli("controller", "install", "--listen", "0.0.0.0:50051", "--root", str(tmp_path))
    config = staged(tmp_path, "/etc/fleet/controller.toml")
    unit = staged(tmp_path, "/etc/systemd/system/fleet-controller.service")
    assert mode(config) == 0o600 and mode(config.parent) == 0o700
    assert tomllib.loads(config.read_text()) == {"data_dir": "/var/lib/fleet", "listen": "0.0.0.0:50051"}
    text = unit.read_text()
    assert f"ExecStart={installer.fleet_executable()} controller run --config %d/controller.toml\n" in text
    assert "User=fleet\n" in text and "StateDirectory=fleet\n" in text


@pytest.mark.parametrize("section, args", [("agent", AGENT_ARGS[2:]), ("controller", ["--listen", "0.0.0.0:1"])])
def test_written_config_keys_are_options_of_the_run_command(tmp_path: Path, section: str, args: list[str]) -> None:
    cli(section, "install", *args, "--root", str(tmp_path))
    run_command = typer.main.get_command(make_app()).commands[section].commands["run"]
    path = staged(tmp_path, f"/etc/fleet/{section}.toml")
    check_keys(load_config(path), sorted(_options(run_command)), path)   # raises on a key `run` does not know


def test_install_is_idempotent_and_updates_on_new_arguments(tmp_path: Path) -> None:
    cli(*AGENT_ARGS, "--root", str(tmp_path))
    config = staged(tmp_path, "/etc/fleet/agent.toml")
    unit = staged(tmp_path, "/etc/systemd/system/fleet-agent.service")
    before = (config.stat().st_mtime_ns, unit.stat().st_mtime_ns)

    out = cli(*AGENT_ARGS, "--root", str(tmp_path))
    assert "nothing changed" in out and "created" not in out and "updated" not in out
    assert (config.stat().st_mtime_ns, unit.stat().st_mtime_ns) == before

    out = cli(*AGENT_ARGS, "--name", "renamed", "--root", str(tmp_path))
    assert "updated" in out and "nothing changed" not in out
    assert tomllib.loads(config.read_text())["name"] == "renamed"
    assert unit.stat().st_mtime_ns == before[1]
    assert mode(config) == 0o600


def test_install_repairs_loosened_permissions(tmp_path: Path) -> None:
    cli(*AGENT_ARGS, "--root", str(tmp_path))
    config = staged(tmp_path, "/etc/fleet/agent.toml")
    config.chmod(0o644)
    config.parent.chmod(0o755)
    assert "updated" in cli(*AGENT_ARGS, "--root", str(tmp_path))
    assert mode(config) == 0o600 and mode(config.parent) == 0o700


def test_uninstall_removes_unit_and_purge_removes_the_rest(tmp_path: Path) -> None:
    cli(*AGENT_ARGS, "--root", str(tmp_path))
    data = staged(tmp_path, "/var/lib/fleet-agent")
    data.mkdir(parents=True)
    (data / "node-credential").write_text("x")
    unit = staged(tmp_path, "/etc/systemd/system/fleet-agent.service")
    config = staged(tmp_path, "/etc/fleet/agent.toml")

    cli("agent", "uninstall", "--root", str(tmp_path))
    assert not unit.exists() and config.exists() and data.exists()   # plain uninstall keeps config and state
    cli("agent", "uninstall", "--purge", "--root", str(tmp_path))
    assert not config.exists() and not data.exists() and not config.parent.exists()
    assert "not installed; nothing changed" in cli("agent", "uninstall", "--purge", "--root", str(tmp_path))


def test_controller_uninstall_purges_the_configured_data_dir(tmp_path: Path) -> None:
    cli("controller", "install", "--data-dir", "/srv/fleet-db", "--root", str(tmp_path))
    data = staged(tmp_path, "/srv/fleet-db")
    assert data.is_dir()
    assert "ReadWritePaths=/var/lib/fleet /srv/fleet-db\n" in \
        staged(tmp_path, "/etc/systemd/system/fleet-controller.service").read_text()
    (data / "fleet.db").write_text("")
    cli("controller", "uninstall", "--purge", "--root", str(tmp_path))
    assert not data.exists() and not staged(tmp_path, "/etc/fleet").exists()


def test_purge_never_deletes_a_shallow_data_dir(tmp_path: Path) -> None:
    cli("controller", "install", "--root", str(tmp_path))
    config = staged(tmp_path, "/etc/fleet/controller.toml")
    config.write_text('data_dir = "/srv"\n')           # an operator's typo must not cost them /srv
    staged(tmp_path, "/srv").mkdir()
    assert "kept" in cli("controller", "uninstall", "--purge", "--root", str(tmp_path))
    assert staged(tmp_path, "/srv").is_dir()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    assert "HOST:PORT" in cli("agent", "install", "--controller", "nohost", "--join-token", "t",
                              "--root", str(tmp_path), code=2)
    assert "--simulate-gpus" in cli(*AGENT_ARGS, "--simulate-gpus", "lots", "--root", str(tmp_path), code=2)
    assert not any(tmp_path.iterdir())


def test_refuses_without_root_unless_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    out = cli(*AGENT_ARGS, code=1)             # not staging, not root: refused before anything is written
    assert "needs root" in out and "--root" in out
    assert "needs root" in cli("controller", "uninstall", code=1)
    cli(*AGENT_ARGS, "--root", str(tmp_path))  # staging needs no root
    with pytest.raises(InstallError, match="needs root"):
        installer.install(AGENT, {}, root=tmp_path / "r", staging=False, executable=installer.fleet_executable(),
                          euid=1000, run=Recorder())
    assert not (tmp_path / "r").exists()


def test_area_must_come_after_daemons() -> None:
    with pytest.raises(RuntimeError, match="after 'daemons'"):
        install.register(typer.Typer())


# ---------------------------------------------------------------- the systemctl path, with a recording runner

def test_real_install_drives_systemctl(tmp_path: Path) -> None:
    exe = installer.fleet_executable()
    run = Recorder()
    installer.install(AGENT, {"controller": "h:1"}, root=tmp_path, staging=False, executable=exe, euid=0, run=run)
    assert run.calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", "fleet-agent.service"],
                         ["systemctl", "restart", "fleet-agent.service"]]
    run.calls.clear()
    installer.install(AGENT, {"controller": "h:1"}, root=tmp_path, staging=False, executable=exe, euid=0, run=run)
    assert run.calls == [["systemctl", "enable", "fleet-agent.service"], ["systemctl", "start", "fleet-agent.service"]]
    run.calls.clear()
    installer.install(AGENT, {"controller": "h:2"}, root=tmp_path, staging=False, executable=exe, euid=0, run=run,
                      start=False)
    assert run.calls == [["systemctl", "daemon-reload"]]   # --no-start: systemd knows the unit, nothing starts

    run.calls.clear()
    installer.uninstall(AGENT, root=tmp_path, staging=False, purge=False, euid=0, run=run)
    assert run.calls == [
        ["systemctl", "kill", "--kill-who=all", "--signal=SIGTERM", "fleet-agent.service"],   # engines too
        ["systemctl", "disable", "--now", "fleet-agent.service"],
        ["systemctl", "daemon-reload"], ["systemctl", "reset-failed", "fleet-agent.service"]]


def test_controller_install_creates_the_service_user_only_when_missing(tmp_path: Path) -> None:
    run = Recorder()
    installer.install(CONTROLLER, {}, root=tmp_path, staging=False, executable=installer.fleet_executable(),
                      euid=0, run=run)
    useradds = [c for c in run.calls if c[0] == "useradd"]
    try:
        import pwd
        pwd.getpwnam("fleet")
        assert useradds == []
    except KeyError:
        assert useradds == [["useradd", "--system", "--user-group", "--home-dir", "/var/lib/fleet",
                             "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "fleet controller",
                             "fleet"]]
    staged_run = Recorder()
    installer.install(CONTROLLER, {}, root=tmp_path / "stage", staging=True,
                      executable=installer.fleet_executable(), euid=0, run=staged_run)
    assert staged_run.calls == []                        # staging touches nothing outside the root


def test_failed_systemctl_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="systemctl restart fleet-agent.service.*failed"):
        installer.install(AGENT, {}, root=tmp_path, staging=False, executable=installer.fleet_executable(),
                          euid=0, run=Recorder(fail_on="restart"))


def test_controller_refuses_an_executable_its_sandbox_hides(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="ProtectHome"):
        installer.install(CONTROLLER, {}, root=tmp_path, staging=True, executable=Path("/home/me/.venv/bin/fleet"),
                          euid=0, run=Recorder())


# ---------------------------------------------------------------- the unit files themselves

def test_units_are_packaged_from_the_one_copy_in_systemd() -> None:
    for daemon in (AGENT, CONTROLLER):
        shipped = (REPO / "systemd" / daemon.unit).read_text()
        assert installer.unit_template(daemon) == shipped
    assert not list(REPO.glob("cli/**/*.service")), "unit files live only in systemd/"



def test_config_values_survive_toml_quoting() -> None:
    odd = 'a "quoted" \\ path\twith\nnewline and \x7f and ü'
    text = installer.render_config(AGENT, {"name": odd, "label": ["x=1", "y=2"], "n": 3, "f": 0.5, "skip": None})
    assert tomllib.loads(text) == {"name": odd, "label": ["x=1", "y=2"], "n": 3, "f": 0.5}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_both_rendered_units(tmp_path: Path) -> None:
    cli(*AGENT_ARGS, "--models-dir", "/srv/models", "--root", str(tmp_path))
    cli("controller", "install", "--data-dir", "/srv/fleet", "--root", str(tmp_path))
    units = [staged(tmp_path, f"/etc/systemd/system/{d.unit}") for d in (AGENT, CONTROLLER)]
    # --man=no: Documentation= lookups need man pages, which minimal machines lack. verify also checks that
    # the ExecStart binary exists, which the rendered (absolute) path guarantees.
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                            capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    assert result.returncode == 0, result.stderr
    # Warnings (unknown keys, bad values) do not change the exit code: any line about our units is a failure.
    assert [line for line in result.stderr.splitlines() if "fleet-" in line] == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    # The check above is only worth something if verify complains about what we could get wrong.
    unit = tmp_path / "fleet-agent.service"
    unit.write_text(installer.render_unit(installer.unit_template(AGENT), installer.fleet_executable())
                    .replace("KillMode=process", "KillMode=procss"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert "fleet-agent.service" in result.stderr
