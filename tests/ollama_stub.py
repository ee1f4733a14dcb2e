"""A small Ollama-protocol server for tests: /api/tags, /api/show, /api/chat on 127.0.0.1.

``replies`` is a list of callables ``(request_json) -> str | dict`` used in order for /api/chat
(the last one repeats): a string is the reply's content, a dict the whole reply message (e.g.
with ``tool_calls``); a callable may sleep (slow model). Every /api/chat request body is kept
in ``requests``. ``missing_model`` makes /api/chat answer 404 like Ollama does for a model that
is not pulled.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = Callable[[dict], str | dict]


class OllamaStub:
    def __init__(self, replies: list[Reply], models: tuple[str, ...] = ("stub:latest",),
                 missing_model: bool = False):
        self.replies, self.models, self.missing_model = replies, models, missing_model
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                """Silence the per-request log lines of BaseHTTPRequestHandler."""

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_GET(self):  # noqa: N802 (http.server API)
                if self.path == "/api/tags":
                    self._send(200, {"models": [{"model": m, "name": m, "size": 1}
                                                for m in stub.models]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path == "/api/show":
                    self._send(200, {"model_info": None, "capabilities": ["completion", "tools"],
                                     "details": {"family": "stub", "parameter_size": "1B",
                                                 "quantization_level": "Q4_0"}})
                elif self.path == "/api/chat":
                    if stub.missing_model:
                        self._send(404, {"error": f"model \"{body.get('model')}\" not found, "
                                                  "try pulling it first"})
                        return
                    k = len(stub.requests)
                    stub.requests.append(body)
                    reply = stub.replies[min(k, len(stub.replies) - 1)](body)
                    message = reply if isinstance(reply, dict) else {"role": "assistant",
                                                                     "content": reply}
                    self._send(200, {"model": body.get("model"), "created_at":
                                     "2026-01-01T00:00:00Z", "done": True, "done_reason": "stop",
                                     "message": message, "prompt_eval_count": 10,
                                     "eval_count": 10})
                else:
                    self._send(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OllamaStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
