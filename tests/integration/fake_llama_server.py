"""A stand-in `llama-server` for agent tests without a real engine: answers `--version` as llama.cpp does,
and serves /health and /v1/chat/completions behind the key it reads from `--api-key-file` (or `--api-key`).

It takes the real engine's command line, so a test can run an agent that launches it exactly as it
would launch llama-server, and check what the agent put on the command line, in files and in logs.
"""

from __future__ import annotations

import http.server
import json
import sys


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def main() -> None:
    argv = sys.argv[1:]
    if "--version" in argv:
        print("version: 9999 (fake)\nbuilt with a test", file=sys.stderr)
        return
    key_file = option(argv, "--api-key-file")
    key = open(key_file).read().strip() if key_file else option(argv, "--api-key") or ""
    port, alias = int(option(argv, "--port") or 0), option(argv, "--alias") or "model"
    print(f"fake llama-server: model {option(argv, '-m')}, listening on {port}", flush=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _allowed(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {key}":
                return True
            self.send_response(401)
            self.end_headers()
            return False

        def _json(self, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self._allowed():
                self._json({"status": "ok"})

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self._allowed():
                self._json({"id": "fake", "object": "chat.completion", "model": alias, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})

        def log_message(self, *args: object) -> None:
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
