"""A small Ollama-protocol server for tests: /api/tags, /api/show, /api/chat on 127.0.0.1.

It enforces what Ollama enforces: ``/api/show`` and ``/api/chat`` answer 404 for a model that
is not pulled; a model without the ``tools`` capability refuses a request with ``tools``
(HTTP 400 "does not support tools"), one without ``completion`` (an embedding model) refuses
to chat; and under a JSON-schema ``format`` no tool calls come back (the grammar forces the
schema: a scripted tool call is dropped and counted in ``refused_tool_calls``). ``/api/show``
gives capabilities and the context length (``<arch>.context_length``), ``/api/tags`` the
digest. ``stream: true`` answers newline-delimited JSON chunks, word by word.

``replies`` is a list of callables ``(request_json) -> str | dict | Fail | DROP`` used in order
for /api/chat (the last one repeats): a string is the reply's content, a dict the whole reply
message (e.g. with ``tool_calls``), :class:`Fail` an HTTP error, :data:`DROP` closes the
connection without an answer; a callable may sleep (slow model). Every /api/chat request body
is kept in ``requests``. ``serial=True`` serves one chat at a time (``OLLAMA_NUM_PARALLEL=1``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fail:
    code: int
    message: str


DROP = object()
Reply = Callable[[dict], "str | dict | Fail | object"]


class OllamaStub:
    def __init__(self, replies: list[Reply], models: tuple[str, ...] = ("stub:latest",),
                 missing_model: bool = False,
                 capabilities: dict[str, list[str]] | None = None,
                 context_length: int = 8192, serial: bool = False,
                 tags_body: bytes | None = None, stream_delay_s: float = 0.0):
        self.replies, self.models, self.missing_model = replies, models, missing_model
        self.capabilities = capabilities or {}
        self.context_length, self.tags_body = context_length, tags_body
        self.stream_delay_s = stream_delay_s
        self.requests: list[dict] = []
        self.digests: dict[str, str] = {}  # set one to simulate a re-pulled model
        self.refused_tool_calls = 0
        self.lock = threading.Lock() if serial else contextlib.nullcontext()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                """Silence the per-request log lines of BaseHTTPRequestHandler."""

            def _send(self, code: int, body: dict | bytes) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_GET(self):  # noqa: N802 (http.server API)
                if self.path == "/api/tags":
                    self._send(200, stub.tags_body or {"models": [
                        {"model": m, "name": m, "size": 1, "digest": stub.digest(m)}
                        for m in stub.models]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                name = stub.known(body.get("model", ""))
                if self.path == "/api/show":
                    if name is None:
                        self._send(404, {"error": f"model '{body.get('model')}' not found"})
                        return
                    self._send(200, {
                        "model_info": {"general.architecture": "stub",
                                       "stub.context_length": stub.context_length},
                        "capabilities": stub.caps(name), "modified_at": "2026-01-01T00:00:00Z",
                        "details": {"family": "stub", "parameter_size": "1B",
                                    "quantization_level": "Q4_0"}})
                elif self.path == "/api/chat":
                    with stub.lock:
                        self._chat(body, name)
                else:
                    self._send(404, {"error": "not found"})

            def _chat(self, body: dict, name: str | None) -> None:
                if stub.missing_model or name is None:
                    self._send(404, {"error": f"model \"{body.get('model')}\" not found, "
                                              "try pulling it first"})
                    return
                caps = stub.caps(name)
                if "completion" not in caps:
                    self._send(400, {"error": f"\"{name}\" does not support chat"})
                    return
                if body.get("tools") and "tools" not in caps:
                    self._send(400, {"error": f"registry.ollama.ai/library/{name} does not "
                                              "support tools"})
                    return
                k = len(stub.requests)
                stub.requests.append(body)
                reply = stub.replies[min(k, len(stub.replies) - 1)](body)
                if reply is DROP:
                    self.close_connection = True
                    return
                if isinstance(reply, Fail):
                    self._send(reply.code, {"error": reply.message})
                    return
                message = dict(reply) if isinstance(reply, dict) else {"role": "assistant",
                                                                       "content": reply}
                message.setdefault("role", "assistant")
                message.setdefault("content", "")
                if body.get("format") and message.pop("tool_calls", None):
                    stub.refused_tool_calls += 1  # a schema format suppresses tool calls
                prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 3
                counts = {"prompt_eval_count": prompt + 1,
                          "eval_count": len(message["content"]) // 3 + 1}
                head = {"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z"}
                if not body.get("stream"):
                    self._send(200, {**head, "done": True, "done_reason": "stop",
                                     "message": message, **counts})
                    return
                self._stream(head, message, counts)

            def _stream(self, head: dict, message: dict, counts: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                words = [w + " " for w in message["content"].split(" ")] if \
                    message["content"] else []
                chunks = [{**head, "done": False, "message": {"role": "assistant",
                                                              "content": w}} for w in words]
                if message.get("tool_calls"):
                    chunks.append({**head, "done": False, "message": {
                        "role": "assistant", "content": "", "tool_calls": message["tool_calls"]}})
                chunks.append({**head, "done": True, "done_reason": "stop",
                               "message": {"role": "assistant", "content": ""}, **counts})
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for c in chunks:
                        self.wfile.write(json.dumps(c).encode() + b"\n")
                        self.wfile.flush()
                        time.sleep(stub.stream_delay_s)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def known(self, model: str) -> str | None:
        """The listed name of ``model`` (``name`` or ``name:latest``), None if not pulled."""
        for m in self.models:
            if model in (m, m.removesuffix(":latest")):
                return m
        return None

    def caps(self, name: str) -> list[str]:
        return self.capabilities.get(name, ["completion", "tools"])

    def digest(self, name: str) -> str:
        import hashlib

        return self.digests.get(name) or hashlib.sha256(name.encode()).hexdigest()

    def __enter__(self) -> OllamaStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
