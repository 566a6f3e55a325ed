"""A stand-in server's plumbing: an HTTP server on 127.0.0.1 in a daemon thread, whose request
handler reaches the stand-in's state as `server_state` (shared by the CVAT stand-ins)."""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


class StandInHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON or raw bytes."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
        pass

    def _json(self, payload: Any, status: int = HTTPStatus.OK) -> None:
        self._send(json.dumps(payload).encode(), "application/json", status)

    def _send(self, data: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LoopbackServer:
    """Subclasses set `handler`; `start` serves on a free loopback port, `stop` ends it."""

    handler: ClassVar[type[StandInHandler]]
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        state = self

        class Handler(self.handler):  # type: ignore[name-defined, misc]
            server_state = state

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
