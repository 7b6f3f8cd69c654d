"""The pure cores never import grpc, sqlmodel, subprocess or logging (STYLE.md rule 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("grpc", "sqlmodel", "sqlalchemy", "subprocess", "logging")


@pytest.mark.parametrize("module", ["fleet.controller.core.catalog", "fleet.controller.core.estimate"])
def test_core_module_imports_nothing_impure(module):
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
