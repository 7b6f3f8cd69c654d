"""Regenerate fleet.proto's Python modules in proto/ (imported as fleet.proto.*).

    python scripts/gen_proto.py           # rewrite the generated modules
    python scripts/gen_proto.py --check   # exit 1 if the committed modules are stale (CI)
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("fleet_pb2.py", "fleet_pb2.pyi", "fleet_pb2_grpc.py")


def generate(out: Path) -> None:
    # Map proto/ to the virtual path fleet/proto so generated imports read `from fleet.proto import ...`.
    include = resources_include()
    code = protoc.main([
        "protoc",
        f"-Ifleet/proto={ROOT / 'proto'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        "fleet/proto/fleet.proto",
    ])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def resources_include() -> str:
    import grpc_tools

    return str(Path(grpc_tools.__file__).parent / "_proto")


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        made = Path(tmp) / "fleet" / "proto"
        stale = [n for n in GENERATED if not (ROOT / "proto" / n).exists()
                 or not filecmp.cmp(made / n, ROOT / "proto" / n, shallow=False)]
        if check:
            if stale:
                print(f"generated modules are stale: {', '.join(stale)}; run: python scripts/gen_proto.py")
                return 1
            print("generated modules are up to date")
            return 0
        for name in GENERATED:
            shutil.copyfile(made / name, ROOT / "proto" / name)
        print(f"wrote {', '.join('proto/' + n for n in GENERATED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
