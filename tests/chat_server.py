"""A real OpenAI-compatible chat server on 127.0.0.1 for the LLM tests: it answers
``POST /v1/chat/completions`` (and ``/chat/completions``) with whatever the test queued."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str = ""
    status: int = 200
    delay_s: float = 0.0


@dataclass
class ChatServer:
    replies: deque[Reply] = field(default_factory=deque)
    otherwise: Reply = field(default_factory=lambda: Reply("{}"))  # once the queued replies are used up
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path not in ("/v1/chat/completions", "/chat/completions"):
                    self.send_error(404)
                    return
                server.requests.append(json.loads(body))
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = server.replies.popleft() if server.replies else server.otherwise
                time.sleep(reply.delay_s)
                if reply.status != 200:
                    payload = {"error": {"message": "boom", "type": "server_error"}}
                else:
                    payload = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": server.requests[-1].get("model", "test"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: that is the timeout test

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reply(self, content: str = "", status: int = 200, delay_s: float = 0.0) -> None:
        self.replies.append(Reply(content, status, delay_s))

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
