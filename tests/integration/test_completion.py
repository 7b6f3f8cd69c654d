"""Shell completion: `fleet --install-completion` writes a script the shell loads, and that script completes
fleet's commands and options (bash for real; zsh's protocol, and zsh itself where it is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FLEET_BIN = str(Path(sys.executable).parent / "fleet")


def env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            **extra}


def complete_in_bash(home: Path, line: str) -> list[str]:
    """Load ~/.bashrc as an interactive bash would, then ask the installed completion for `line`."""
    words = line.split(" ")
    script = (f"source {home}/.bashrc; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
              f"COMP_CWORD={len(words) - 1}; _fleet_completion fleet; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env(home), timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion_installs_and_completes(tmp_path: Path) -> None:
    # run from bash, as a user would: typer detects the shell it was started from
    r = subprocess.run(["bash", "-c", f"{FLEET_BIN} --install-completion"], capture_output=True, text=True,
                       timeout=120, env=env(tmp_path))
    assert r.returncode == 0 and "bash completion installed" in r.stdout, r.stdout + r.stderr
    assert "source" in (tmp_path / ".bashrc").read_text()
    assert complete_in_bash(tmp_path, "fleet dr") == ["drain"]
    assert {"events", "estimate", "engine"} <= set(complete_in_bash(tmp_path, "fleet e"))
    assert "--deadline" in complete_in_bash(tmp_path, "fleet drain --d")
    assert complete_in_bash(tmp_path, "fleet sta") == ["status"]


def test_zsh_completion_installs_and_speaks_zsh(tmp_path: Path) -> None:
    # Outside zsh the shell is named explicitly (typer detects the running shell otherwise).
    r = subprocess.run([FLEET_BIN, "--install-completion", "zsh"], capture_output=True, text=True, timeout=120,
                       env=env(tmp_path, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"))
    assert r.returncode == 0 and "zsh completion installed" in r.stdout, r.stdout + r.stderr
    assert "compinit" in (tmp_path / ".zshrc").read_text() and (tmp_path / ".zfunc" / "_fleet").is_file()
    answer = subprocess.run([FLEET_BIN], capture_output=True, text=True, timeout=120,
                            env=env(tmp_path, _FLEET_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="fleet dr"))
    assert '"drain":"Take nodes out for maintenance' in answer.stdout, answer.stdout + answer.stderr
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: its own loading of ~/.zfunc/_fleet is not exercised here")
    loaded = subprocess.run(["zsh", "-i", "-c", "whence -w _fleet"], capture_output=True, text=True, timeout=120,
                            env=env(tmp_path))
    assert "function" in loaded.stdout, loaded.stdout + loaded.stderr
