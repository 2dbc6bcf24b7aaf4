"""A real HTTP server on 127.0.0.1 for feed tests, with per-path scripted replies.

Each path is given a list of replies: request ``n`` to the path gets reply
``n``, and the last reply repeats. A reply may also be computed from the
query string. Every request is recorded (path and parsed query).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    Attributes:
        body: the bytes sent (before truncation).
        status: the HTTP status code.
        content_type: the Content-Type header.
        delay: seconds to wait before answering (to make the client time out).
        content_length: the Content-Length header; default the body's length.
            A larger value, with the connection closed after the body, is a
            truncated response; -1 sends none (the body ends when the connection
            closes).
        headers: more headers.
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "text/csv; charset=utf-8"
    delay: float = 0.0
    content_length: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


Route = list[Reply] | Callable[[dict[str, str]], Reply]


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    path: str
    query: dict[str, str]


class FeedServer:
    """A threaded HTTP server on a free local port, answering scripted replies."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, path: str, *replies: Reply) -> None:
        """Answer ``path`` with ``replies`` in turn, the last one repeating."""
        self.routes[path] = list(replies)

    def route_by_query(self, path: str, reply: Callable[[dict[str, str]], Reply]) -> None:
        """Answer ``path`` with ``reply(query)``."""
        self.routes[path] = reply

    def requests_to(self, path: str) -> list[Request]:
        """The requests received for ``path``, in order."""
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str, query: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(Request(path, query))
            count = sum(request.path == path for request in self.requests)
        route = self.routes.get(path)
        if route is None:
            return Reply(b"no such path\n", status=404, content_type="text/plain")
        if callable(route):
            return route(query)
        return route[min(count, len(route)) - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
                reply = server._answer(parts.path, query)
                if reply.delay:
                    time.sleep(reply.delay)
                length = len(reply.body) if reply.content_length is None else reply.content_length
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    if length >= 0:
                        self.send_header("Content-Length", str(length))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if length != len(reply.body):
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    self.wfile.write(reply.body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timed out)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler
