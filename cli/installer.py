"""Install the agent or the controller as a systemd service: render the unit, write the config, tell systemd.

Everything is computed first and written only where it differs, so a second run with the same arguments
changes nothing (and says so). `root` is where "/" is: "/" for a real install, a staging directory for
packaging and tests (`--root`), in which case nothing outside it is touched: no systemctl, no useradd.

The unit templates are the repository's `systemd/` folder, packaged as `fleet.systemd` (the only copy).
Rendering only rewrites the ExecStart executable to the fleet that runs the install and appends extra
writable paths (a custom models or data dir) to ReadWritePaths.
"""

from __future__ import annotations

import importlib.resources
import os
import pwd
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE_EXECUTABLE = "/usr/local/bin/fleet"
UNIT_DIR = Path("/etc/systemd/system")
CONFIG_DIR = Path("/etc/fleet")
SERVICE_USER = "fleet"
# The controller's unit has ProtectHome=yes: an executable under these is invisible to the service.
HIDDEN_BY_PROTECT_HOME = (Path("/home"), Path("/root"), Path("/run/user"))

Runner = Callable[[Sequence[str]], int]


class InstallError(Exception):
    """The install cannot proceed; the message says why and what to do."""


@dataclass(frozen=True)
class Daemon:
    section: str       # "agent" | "controller": the `fleet <section> run` command and config name
    unit: str          # systemd unit file name
    state_dir: Path    # the unit's StateDirectory=, the default data dir
    user: str | None   # the dedicated user the unit runs as (None: root, see the unit for why)

    @property
    def config(self) -> Path:
        return CONFIG_DIR / f"{self.section}.toml"

    @property
    def env_file(self) -> Path:
        return CONFIG_DIR / f"{self.section}.env"


AGENT = Daemon("agent", "fleet-agent.service", Path("/var/lib/fleet-agent"), None)
CONTROLLER = Daemon("controller", "fleet-controller.service", Path("/var/lib/fleet"), SERVICE_USER)


@dataclass(frozen=True)
class Change:
    path: Path
    action: str        # created | updated | unchanged | removed | absent | kept (too shallow to delete safely)

    @property
    def changed(self) -> bool:
        return self.action in ("created", "updated", "removed")


# ---------------------------------------------------------------- rendering (pure)

def unit_template(daemon: Daemon) -> str:
    return (importlib.resources.files("fleet.systemd") / daemon.unit).read_text()


def _plain_path(path: Path, what: str) -> str:
    # systemd splits ExecStart= and ReadWritePaths= on whitespace; quoting them is not worth the risk.
    text = str(path)
    if not path.is_absolute() or re.search(r"\s", text):
        raise InstallError(f"{what} {text!r} must be an absolute path without spaces")
    return text


def render_unit(template: str, executable: Path, writable: Sequence[Path] = ()) -> str:
    exe = _plain_path(executable, "the fleet executable")
    out, replaced = [], 0
    for line in template.splitlines(keepends=True):
        if line.startswith(f"ExecStart={TEMPLATE_EXECUTABLE} "):
            line = line.replace(TEMPLATE_EXECUTABLE, exe, 1)
            replaced += 1
        elif line.startswith("ReadWritePaths=") and writable:
            line = line.rstrip("\n") + "".join(f" {_plain_path(p, 'path')}" for p in writable) + "\n"
        out.append(line)
    if replaced != 1:
        raise InstallError(f"unit template has {replaced} ExecStart={TEMPLATE_EXECUTABLE} lines, expected 1")
    return "".join(out)


def _toml_string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return '"' + "".join(escapes.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                         for c in text) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def render_config(daemon: Daemon, settings: dict[str, Any]) -> str:
    """The config file: a header and one `key = value` line per setting given (None values are left out, so
    the run command's own default applies)."""
    lines = [f"# fleet {daemon.section} settings, written by `fleet {daemon.section} install`.",
             f"# Keys are the options of `fleet {daemon.section} run --help` (underscores). Flags and FLEET_*",
             f"# variables (e.g. in {daemon.env_file}) override this file.", ""]
    lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items() if value is not None]
    return "\n".join(lines) + "\n"


def fleet_executable() -> Path:
    """The `fleet` script of the interpreter running now (the installed package), else the one on PATH. Not
    resolved through symlinks: a venv's python links to the system interpreter, its scripts stay in the venv."""
    beside = Path(sys.executable).parent / "fleet"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("fleet")
    if found:
        return Path(found).absolute()
    raise InstallError("cannot find the fleet executable (not beside the Python interpreter, not on PATH)")


# ---------------------------------------------------------------- the file system, under root

def under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def write_file(path: Path, content: str, mode: int, dir_mode: int | None = None) -> Change:
    """Write `content` with `mode` unless the file already is exactly that. `dir_mode` is enforced on the
    parent (created if missing); None leaves an existing parent's mode alone (e.g. /etc/systemd/system)."""
    parent_fixed = False
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=dir_mode or 0o755)
    if dir_mode is not None and _mode(path.parent) != dir_mode:
        path.parent.chmod(dir_mode)
        parent_fixed = True
    if path.is_file() and path.read_text() == content:
        if _mode(path) == mode and not parent_fixed:
            return Change(path, "unchanged")
        path.chmod(mode)
        return Change(path, "updated")
    existed = path.exists()
    # Write a sibling with the final mode, then rename: a reader never sees a half-written file or a secret
    # with the umask's permissions.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return Change(path, "updated" if existed else "created")


def remove(path: Path) -> Change:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return Change(path, "absent")
    return Change(path, "removed")


def read_settings(path: Path) -> dict[str, Any]:
    """An existing config file's settings ({} if it is missing or unreadable: uninstall must still work)."""
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


# ---------------------------------------------------------------- install / uninstall

def check_privileges(staging: bool, euid: int) -> None:
    if not staging and euid != 0:
        raise InstallError("installing a service needs root: run it with sudo, or stage the files under "
                           "--root DIR (packaging)")


def _systemctl(run: Runner, *args: str) -> int:
    return run(["systemctl", *args])


def install(daemon: Daemon, settings: dict[str, Any], *, root: Path, staging: bool, executable: Path,
            writable: Sequence[Path] = (), start: bool = True, euid: int, run: Runner) -> list[Change]:
    """Write the config and the unit under `root`; unless staging, reload systemd and (start) enable and
    (re)start the service. `writable` are extra ReadWritePaths (created here). Returns what changed."""
    check_privileges(staging, euid)
    if daemon.user and any(executable.is_relative_to(p) for p in HIDDEN_BY_PROTECT_HOME):
        raise InstallError(f"{executable} is under {', '.join(map(str, HIDDEN_BY_PROTECT_HOME))}, which the "
                           f"{daemon.unit} sandbox hides (ProtectHome=yes): install fleet system-wide, e.g. in "
                           f"/opt/fleet/venv, and run that one's `fleet {daemon.section} install`")
    unit = render_unit(unit_template(daemon), executable, writable)
    if daemon.user and not staging:
        _ensure_user(daemon, run)
    changes = [write_file(under(root, daemon.config), render_config(daemon, settings), 0o600, 0o700),
               write_file(under(root, UNIT_DIR / daemon.unit), unit, 0o644)]
    for path in writable:
        _ensure_dir(under(root, path), daemon.user if not staging else None)
    if not staging:
        changed = any(c.changed for c in changes)
        if changed:
            _check(_systemctl(run, "daemon-reload"), "systemctl daemon-reload")
        if start:
            _check(_systemctl(run, "enable", daemon.unit), f"systemctl enable {daemon.unit}")
            # restart picks up a changed config or unit; start is a no-op when it already runs.
            verb = "restart" if changed else "start"
            _check(_systemctl(run, verb, daemon.unit), f"systemctl {verb} {daemon.unit}")
    return changes


def uninstall(daemon: Daemon, *, root: Path, staging: bool, purge: bool, euid: int, run: Runner) -> list[Change]:
    """Stop and disable the service (unless staging) and remove its unit; with purge also its config, env
    file and data dir. The `fleet` user stays (files it owned may remain, and removing system users is not
    done by packages either)."""
    check_privileges(staging, euid)
    config = under(root, daemon.config)
    data_dir = Path(str(read_settings(config).get("data_dir", daemon.state_dir)))
    if not staging:
        if daemon is AGENT:
            # KillMode=process leaves engines running on stop (so a restart adopts them); uninstalling must
            # not leave orphans, so signal the whole cgroup first. Fails harmlessly when nothing runs.
            _systemctl(run, "kill", "--kill-who=all", "--signal=SIGTERM", daemon.unit)
        _systemctl(run, "disable", "--now", daemon.unit)   # non-zero when not loaded: fine, we are removing it
    changes = [remove(under(root, UNIT_DIR / daemon.unit))]
    if purge:
        changes += [remove(config), remove(under(root, daemon.env_file))]
        # data_dir comes from an editable file: never rmtree "/", "/var" or "/srv" because of a typo there.
        deep_enough = data_dir.is_absolute() and len(data_dir.parts) >= 3
        changes.append(remove(under(root, data_dir)) if deep_enough else Change(data_dir, "kept"))
        config_dir = under(root, CONFIG_DIR)
        if config_dir.is_dir() and not any(config_dir.iterdir()):
            changes.append(remove(config_dir))
    if not staging and changes[0].changed:
        _check(_systemctl(run, "daemon-reload"), "systemctl daemon-reload")
        _systemctl(run, "reset-failed", daemon.unit)
    return changes


def _check(code: int, what: str) -> None:
    if code != 0:
        raise InstallError(f"`{what}` failed (exit {code}); see `journalctl -xe`")


def _ensure_user(daemon: Daemon, run: Runner) -> None:
    assert daemon.user
    try:
        pwd.getpwnam(daemon.user)
        return
    except KeyError:
        pass
    _check(run(["useradd", "--system", "--user-group", "--home-dir", str(daemon.state_dir), "--no-create-home",
                "--shell", "/usr/sbin/nologin", "--comment", f"fleet {daemon.section}", daemon.user]),
           f"useradd --system {daemon.user}")


def _ensure_dir(path: Path, owner: str | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if owner:
        # A custom controller data dir: StateDirectory= only manages /var/lib/fleet, so hand this one over.
        shutil.chown(path, owner, owner)
        path.chmod(0o700)


def run_command(argv: Sequence[str]) -> int:
    """The real runner: inherit stdout/stderr so systemctl's own messages reach the operator."""
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
        return 127
