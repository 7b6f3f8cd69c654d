"""Where a replica's weights are on this node: a models directory, the Hugging Face cache, or a download.

GGUF (llama.cpp) resolves to one file; a vLLM model resolves to a directory (a local folder or an HF
snapshot). A download checks free disk first and reports its progress through `progress`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("fleet.agent")


class WeightsMissing(Exception):
    """The weights are not on this node and cannot be fetched; the message says where we looked."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _local(source: str, file: str, models_dir: Path) -> Path | None:
    candidates = []
    if source and (source.startswith("/") or source.startswith("~")):
        p = Path(source).expanduser()
        candidates.append(p / file if file and p.is_dir() else p)
    names = [file] if file else []
    if source:
        names += [source, source.replace("/", "--"), source.rsplit("/", 1)[-1]]
    candidates += [models_dir / n for n in names if n]
    for c in candidates:
        if c.exists():
            return c
    return None


def _hf_cached(source: str, file: str) -> Path | None:
    if "/" not in source or source.startswith("/"):
        return None
    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    if file:
        hit = try_to_load_from_cache(repo_id=source, filename=file)
        return Path(hit) if isinstance(hit, str) else None
    try:
        return Path(snapshot_download(repo_id=source, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _download(source: str, file: str, models_dir: Path, progress: Callable[[str], None]) -> Path:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    info = HfApi().model_info(source, files_metadata=True)
    files = [s for s in info.siblings or [] if not file or s.rfilename == file]
    need = sum(s.size or 0 for s in files)
    free = shutil.disk_usage(models_dir).free
    if need and need * 1.05 > free:
        raise WeightsMissing(f"{source}{'/' + file if file else ''} needs {need / 2**30:.1f} GiB; only "
                             f"{free / 2**30:.1f} GiB free at {models_dir}")
    progress(f"downloading {source} ({need / 2**30:.1f} GiB)")
    if file:
        return Path(hf_hub_download(repo_id=source, filename=file))
    return Path(snapshot_download(repo_id=source))


def resolve(source: str, file: str, models_dir: Path, progress: Callable[[str], None] = lambda _m: None) -> Path:
    """The local path of these weights, downloading them when allowed; WeightsMissing says why not."""
    found = _local(source, file, models_dir) or _hf_cached(source, file)
    if found is not None:
        return found
    what = f"{source}{' file ' + file if file else ''}"
    if offline() or "/" not in source or source.startswith("/"):
        raise WeightsMissing(
            f"weights for {what} are not on this node: looked in {models_dir} and the Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'})"
            + ("; downloads are off (HF_HUB_OFFLINE=1)" if offline() else "")
            + ". Copy the files into the models directory, then place again.")
    try:
        return _download(source, file, models_dir, progress)
    except WeightsMissing:
        raise
    except Exception as e:  # network, auth, missing repo: all mean "not here"
        raise WeightsMissing(f"cannot download {what}: {e}") from e
