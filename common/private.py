"""Files only this user may read: data dirs 0700, secrets and state 0600, enforced at every start.

A directory the operator created beforehand (0755) or a file an older release wrote (0644) is
tightened, not trusted: the controller's database holds engine API keys, the agent's state files too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed, and make it 0700 whatever it was."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path, create: bool = False) -> None:
    """Make `path` 0600; with `create`, create it empty first (so what later opens it inherits the mode)."""
    if create and not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    try:
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def private_tree(root: Path, files: Iterable[str] = ("*",)) -> None:
    """Every directory under `root` 0700 and every regular file matching `files` 0600 (symlinks left alone)."""
    private_dir(root)
    for pattern in files:
        for p in root.rglob(pattern):
            if p.is_symlink():
                continue
            if p.is_dir():
                private_dir(p)
            elif p.is_file():
                private_file(p)


def write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically; never widen permissions on the way."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, FILE_MODE)  # an older tmp file left behind keeps its mode through O_TRUNC
    os.replace(tmp, path)
