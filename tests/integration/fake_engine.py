"""A stand-in process for supervisor tests: serves /health on a port, or crashes at once when told to.

Real engines are tested in tests/e2e; this exercises the supervisor's process handling in seconds.
"""

from __future__ import annotations

import http.server
import sys


def main() -> None:
    port, key, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "serve"
    print(f"fake engine starting on {port} ({mode})", flush=True)
    if mode == "crash":
        print("fatal: out of memory (pretend)", flush=True)
        sys.exit(3)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ok = self.path == "/health" and self.headers.get("Authorization") == f"Bearer {key}"
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
