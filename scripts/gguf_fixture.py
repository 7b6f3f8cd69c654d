"""Write a real GGUF file's tensor table as a small JSON fixture for the GGUF rules tests.

    python scripts/gguf_fixture.py FILE.gguf OUT.json --source "where the file came from"

FILE may be only the first part of a GGUF (a package index's first chunk): the header is enough.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fleet.controller.store.gguf_headers import read_gguf_header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--source", required=True, help="where the file came from (package and path)")
    args = ap.parse_args()
    h = read_gguf_header(args.file)
    fields = {k: v for k, v in h.fields.items() if not isinstance(v, list) or len(v) <= 64}
    out = {
        "source": args.source,
        "file_size": h.file_size,
        "tensor_bytes": h.tensor_bytes,
        "fields": fields,
        "tensors": [[t.name, list(t.shape), t.type, t.n_bytes] for t in h.tensors],
    }
    args.out.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"{args.out}: {len(h.tensors)} tensors, {h.tensor_bytes} tensor bytes, file {h.file_size} bytes")


if __name__ == "__main__":
    main()
