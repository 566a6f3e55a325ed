"""The SAM2 server's Ray Serve deployment: the Nuclio functions' protocol over HTTP.

`POST /interactor` and `POST /tracker` take and answer exactly the Nuclio functions' JSON, through
the same services (`tracker.cvat.services`), so a Nuclio function in proxy mode only forwards.
`GET /health` needs no token. Every replica builds its own model; with a Redis URL the tracking
states are shared, so any replica serves any step of any object.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from tracker.cvat import services
from tracker.cvat.env_options import interactor_settings, redis_client, tracker_options
from tracker.cvat.lambda_api import LambdaTracker
from tracker.cvat.lambda_interactor import LambdaInteractor
from tracker.cvat.state_store import StoreUnavailableError


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    token: str | None  # None only with --insecure on loopback
    max_body_bytes: int
    replicas: str  # for /health: "2" or "1..4 (autoscaling)"


def _json(status: int, body: Mapping[str, Any], replica: str) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"X-SAM2-Replica": replica},
    )


@serve.deployment(name="sam2", max_ongoing_requests=8)
class Sam2Server:
    """One replica: a tracker and an interactor service on one device."""

    def __init__(self, settings: dict[str, str], limits: ServerLimits) -> None:
        self._settings = settings
        self._limits = limits
        redis = redis_client(settings)
        self._tracker = services.build_tracker(tracker_options(settings), redis)
        self._interactor = services.build_interactor(interactor_settings(settings))
        # Model work is serialised per replica (one device; SAM2's image predictor keeps the
        # current image in itself), off the event loop so /health answers meanwhile.
        self._model_lock = threading.Lock()
        self._replica = f"{socket.gethostname()}:{os.getpid()}"

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        if path == "/health" and method == "GET":
            return _json(200, self.health(), self._replica)
        if not self._authorized(request):
            return _json(
                401,
                {"message": "Send the server's token as 'Authorization: Bearer <token>'."},
                self._replica,
            )
        service = {"/tracker": self._tracker, "/interactor": self._interactor}.get(path)
        if service is None or method != "POST":
            message = "Use POST /tracker, POST /interactor or GET /health."
            return _json(404 if service is None else 405, {"message": message}, self._replica)
        body = await self._body(request)
        if body is None:
            limit_mb = self._limits.max_body_bytes / 2**20
            message = f"The request body is larger than the server's {limit_mb:g} MB limit."
            return _json(413, {"message": message}, self._replica)
        status, answer = await asyncio.to_thread(self._handle, service, body)
        return _json(status, answer, self._replica)

    def health(self) -> dict[str, Any]:
        options = self._tracker.tracker.options.model
        redis = "not configured (states in each replica's memory)"
        store = self._tracker.store
        if hasattr(store, "ping"):
            try:
                store.ping()
                redis = "reachable"
            except StoreUnavailableError as e:
                redis = f"unreachable: {e}"
        return {
            "status": "ok",
            "model": options.reference.describe(),
            "device": str(options.device),
            "replicas": self._limits.replicas,
            "replica": self._replica,
            "redis": redis,
        }

    def _authorized(self, request: Request) -> bool:
        if self._limits.token is None:
            return True
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {self._limits.token}"
        return hmac.compare_digest(sent.encode(), expected.encode())

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None past the limit (checked as it arrives, not after)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limits.max_body_bytes:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._limits.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _handle(
        self, service: LambdaTracker | LambdaInteractor, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self._model_lock:
            return service.handle(body)
