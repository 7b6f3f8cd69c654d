"""Weight resolution against a models dir and a pre-populated Hugging Face cache (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.agent.weights import WeightsMissing, resolve


def populate_hf_cache(cache: Path, repo: str, files: dict[str, bytes], revision: str = "0" * 40) -> Path:
    """Lay out a hub cache exactly as huggingface_hub writes it (refs/main -> snapshots/<rev>/...)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return cache


def test_models_dir_first(tmp_path: Path, hf_cache: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.Q4_1.gguf").write_bytes(b"GGUF")
    assert resolve("org/m-GGUF", "m.Q4_1.gguf", models) == models / "m.Q4_1.gguf"
    absolute = tmp_path / "custom.gguf"
    absolute.write_bytes(b"GGUF")
    assert resolve(str(absolute), "", models) == absolute


def test_hf_cache_file_and_snapshot(tmp_path: Path, hf_cache: Path) -> None:
    snap = populate_hf_cache(hf_cache, "org/m-GGUF", {"m.Q4_1.gguf": b"GGUF"})
    assert resolve("org/m-GGUF", "m.Q4_1.gguf", tmp_path).resolve() == (snap / "m.Q4_1.gguf").resolve()
    snap2 = populate_hf_cache(hf_cache, "org/m-AWQ", {"config.json": b"{}", "model.safetensors": b"x"})
    assert resolve("org/m-AWQ", "", tmp_path).resolve() == snap2.resolve()


def test_missing_offline_says_where_it_looked(tmp_path: Path, hf_cache: Path) -> None:
    with pytest.raises(WeightsMissing) as e:
        resolve("org/absent-GGUF", "x.gguf", tmp_path)
    assert str(tmp_path) in str(e.value) and "HF_HUB_OFFLINE" in str(e.value) and "x.gguf" in str(e.value)
