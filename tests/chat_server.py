"""A local HTTP server that stands in for a remote OpenAI-compatible chat API in tests.

It listens on 127.0.0.1 in a background thread, records each request, answers with the
queued failures first (status codes such as 429 or 500) and then with canned completions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CANNED_REFUSAL = (
    "Draft: wants harm -> hurts people -> decline, offer help.\n"
    "I can't help with that request, because it would hurt people. If you want, I can "
    "help with a safe alternative."
)


class ChatServer:
    """A chat completions endpoint at ``base_url`` + ``/chat/completions``."""

    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: list[int] = []
        self.answer = answer or (lambda body: CANNED_REFUSAL)
        self.usage = True
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (name fixed by http.server)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    server.requests.append(
                        {
                            "path": self.path,
                            "authorization": self.headers.get("Authorization"),
                            "body": body,
                        }
                    )
                    status = server.failures.pop(0) if server.failures else 200
                if status != 200:
                    self._send(status, {"error": {"message": f"status {status}"}})
                    return
                text = server.answer(body)
                reply: dict[str, Any] = {
                    "choices": [{"message": {"role": "assistant", "content": text}}]
                }
                if server.usage:
                    reply["usage"] = {"completion_tokens": len(text.split()) + 1}
                self._send(200, reply)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
