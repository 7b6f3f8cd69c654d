"""The catalog's files: the shipped data (package data under fleet/controller/data) and the folders where
operators add models (`fleet models add`). The only place catalog data is read (GGUF headers:
fleet.controller.store.gguf_headers, re-exported here for the CLI).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from fleet.controller.core.catalog import Catalog, Model, Quants, load_catalog
from fleet.controller.core.catalog_import import model_to_toml, slug
from fleet.controller.store.gguf_headers import read_gguf_header


def default_catalog_dir() -> Path:
    """Where `fleet models add` writes and every catalog reader also looks: $FLEET_CATALOG_DIR or ~/.local/share."""
    env = os.environ.get("FLEET_CATALOG_DIR")
    return Path(env).expanduser() if env else Path("~/.local/share/fleet/catalog").expanduser()


class CatalogFiles:
    """A CatalogSource over the shipped package data and operator folders (later folders win a name clash)."""

    def __init__(self, extra_dirs: Sequence[Path] = ()) -> None:
        self.extra_dirs = [Path(d).expanduser() for d in extra_dirs]

    def text(self, name: str) -> str:
        return resources.files("fleet.controller").joinpath("data", name).read_text()

    def model_files(self) -> Iterator[tuple[str, str]]:
        shipped = resources.files("fleet.controller").joinpath("data", "models")
        for f in sorted(shipped.iterdir(), key=lambda p: p.name):
            if f.name.endswith(".toml"):
                yield "shipped", f.read_text()
        for d in self.extra_dirs:
            if d.is_dir():
                for path in sorted(d.glob("*.toml")):
                    yield str(path), path.read_text()

    def stamp(self) -> tuple[float, ...]:
        """Changes when an operator adds or edits a model file: the cue to load the catalog again."""
        out: list[float] = []
        for d in self.extra_dirs:
            try:
                out.append(d.stat().st_mtime)
                out.extend(p.stat().st_mtime for p in d.glob("*.toml"))
            except OSError:
                out.append(-1.0)
        return tuple(out)


@cache
def shipped_catalog() -> Catalog:
    """The catalog as shipped, read once per process."""
    return load_catalog(CatalogFiles())


def catalog_with(extra_dirs: Iterable[Path]) -> Catalog:
    """The shipped catalog plus the models in `extra_dirs` (missing folders are skipped)."""
    dirs = [d for d in extra_dirs if Path(d).expanduser().is_dir()]
    return load_catalog(CatalogFiles(dirs)) if dirs else shipped_catalog()


def write_model(model: Model, catalog_dir: Path, quants: Quants) -> Path:
    """Save an operator's model as DIR/<slug>.toml (the catalog picks it up on its next load)."""
    catalog_dir = Path(catalog_dir).expanduser()
    catalog_dir.mkdir(parents=True, exist_ok=True)
    path = catalog_dir / f"{slug(model.name)}.toml"
    path.write_text(model_to_toml(model, quants))
    return path


__all__ = ["CatalogFiles", "catalog_with", "default_catalog_dir", "read_gguf_header", "shipped_catalog", "write_model"]
