"""The fleet's expected demand mix (data/workload.toml): what `pack` keeps room for.

Parsed here from the text the catalog source supplies; pure.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property

GIB = 1024**3


@dataclass(frozen=True)
class Workload:
    """The fleet's expected demand: (per_gpu_bytes, tp, weight, min_compute_capability) per common variant.

    The capability matters: memory on an H100 is usable by fp8 variants, memory on an A100 is not, so
    a model that runs anywhere should not take the H100 first. Weights are integers.
    """

    classes: tuple[tuple[int, int, int, str], ...]

    def __hash__(self) -> int:
        # Part of every memoised fit's key, looked up hundreds of times per placement: hash the 18-odd
        # classes once, not on every lookup. (An explicit __hash__ is kept by the frozen dataclass.)
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(self.classes)



def parse_workload(text: str) -> Workload:
    raw = tomllib.loads(text)
    classes = tuple((int(round(float(c["per_gpu_gib"]) * GIB)), int(c["tp"]), int(c["weight"]),
                     str(c.get("min_compute_capability", ""))) for c in raw["class"])
    return Workload(tuple(sorted(classes)))
