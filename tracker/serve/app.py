"""The SAM2 server's Ray Serve deployment: the Nuclio functions' protocol over HTTP.

`POST /interactor` and `POST /tracker` take and answer exactly the Nuclio functions' JSON, through
the same services (`tracker.cvat.lambda_protocol.services`), so a Nuclio function in proxy
mode only forwards.
`GET /health` needs no token and says only that a replica is ready; with the token it adds the
model, device, replicas and whether Redis answers (asked off the event loop, with the store's
own timeout). A request is admitted only if it can be computed before its deadline, given the
work queued ahead of it (`admission`); otherwise it is answered 503 at once, with Retry-After.
Every replica builds its own model and warms it (one tracker start and step, one
click, on a small blank frame) before Ray Serve routes anything to it, so that no user waits for
a first pass. With a Redis URL the tracking states are shared, so any replica serves any step of
any object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import io
import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from tracker.cvat.env_options import interactor_settings, redis_client, tracker_options
from tracker.cvat.lambda_protocol import services, timeouts
from tracker.cvat.lambda_protocol.lambda_api import LambdaTracker
from tracker.cvat.lambda_protocol.lambda_interactor import LambdaInteractor
from tracker.cvat.stores.state_store import MemoryStateStore, StoreUnavailableError
from tracker.cvat.user_errors import replica_busy_message
from tracker.serve.admission import Admission, Refusal, StepEstimate


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    token: str | None  # None only with --insecure on loopback
    max_body_bytes: int
    replicas: str  # for /health: "2" or "1..4 (autoscaling)"
    request_timeout_s: float = timeouts.SERVER_REQUEST_TIMEOUT_S  # serve --request-timeout


def _json(
    status: int, body: Mapping[str, Any], replica: str | None = None, **headers: str
) -> Response:
    """An answer; `replica` (host:pid, named only to callers with the token) in a header."""
    headers = headers if replica is None else {**headers, "X-SAM2-Replica": replica}
    return Response(json.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)  # fmt: skip


def _blank_frame() -> str:
    """A small black PNG in base64, as CVAT sends frames."""
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def warm_up(tracker: LambdaTracker, interactor: LambdaInteractor) -> None:
    """One tracker start and step and one click on a blank frame, through the services' own
    code (the start's state in a throwaway store: nothing reaches Redis). The first passes of
    a fresh process are the slow ones; a replica takes them before it is routed requests."""
    image = _blank_frame()
    scratch = LambdaTracker(tracker.tracker, MemoryStateStore(64))
    status, answer = scratch.handle({"image": image, "shapes": [[8, 8, 40, 40]]})
    if status == 200:
        status, answer = scratch.handle({"image": image, "states": answer["states"]})
    if status != 200:
        raise RuntimeError(f"The model's warm-up failed: {answer.get('message')}")
    status, answer = interactor.handle({"image": image, "pos_points": [[20, 20]], "neg_points": []})
    if status != 200:
        raise RuntimeError(f"The model's warm-up failed: {answer.get('message')}")


@serve.deployment(name="sam2", max_ongoing_requests=8)
class Sam2Server:
    """One replica: a tracker and an interactor service on one device."""

    def __init__(self, settings: dict[str, str], limits: ServerLimits) -> None:
        self._settings = settings
        self._limits = limits
        redis = redis_client(settings)
        self._tracker = services.build_tracker(tracker_options(settings), redis)
        self._interactor = services.build_interactor(interactor_settings(settings))
        started = time.monotonic()  # Ray Serve routes requests to a replica once this ends
        warm_up(self._tracker, self._interactor)
        warm_up_s = time.monotonic() - started
        self._warm_up_s = round(warm_up_s, 2)
        # Model work takes turns per replica (one device; SAM2's image predictor keeps the
        # current image in itself), each in its own thread so /health answers meanwhile. The
        # warm-up took the first, slowest passes: a start that errs long for the estimate.
        budget = timeouts.admission_budget(limits.request_timeout_s)
        self._admission = Admission(budget, StepEstimate(max(warm_up_s, 0.1)))
        self._replica = f"{socket.gethostname()}:{os.getpid()}"
        self._receiving = 0  # bodies being received (only the event loop touches it)

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        authorized = self._authorized(request)
        if path == "/health" and method == "GET":
            if not authorized:
                return _json(200, {"status": "ready"})  # all an unauthenticated caller needs
            return _json(200, await asyncio.to_thread(self.health), self._replica)
        if not authorized:
            message = "Send the server's token as 'Authorization: Bearer <token>'."
            return _json(401, {"message": message})
        service = {"/tracker": self._tracker, "/interactor": self._interactor}.get(path)
        if service is None or method != "POST":
            message = "Use POST /tracker, POST /interactor or GET /health."
            return _json(404 if service is None else 405, {"message": message}, self._replica)
        arrived = self._admission.clock()  # its deadline counts from here
        self._receiving += 1
        try:
            body = await self._body(request)
        finally:
            self._receiving -= 1
        if body is None:
            limit_mb = self._limits.max_body_bytes / 2**20
            message = f"The request body is larger than the server's {limit_mb:g} MB limit."
            return _json(413, {"message": message}, self._replica)
        outcome = await self._compute(service, body, arrived)
        if isinstance(outcome, Refusal):
            message = replica_busy_message(outcome.ahead, outcome.retry_after_s, outcome.waited)
            return _json(503, {"message": message}, self._replica,
                         **{"Retry-After": str(outcome.retry_after_s)})  # fmt: skip
        status, answer = outcome
        return _json(status, answer, self._replica)

    async def _compute(
        self, service: LambdaTracker | LambdaInteractor, body: bytes, arrived: float
    ) -> tuple[int, dict[str, Any]] | Refusal:
        """The service's answer, computed in a thread of its own when admitted, else the
        refusal. Cancelled (Ray Serve's request timeout), a request that has not begun computing
        never will; one computing goes on in its thread and counts until it ends."""
        ticket = self._admission.admit(arrived)
        if isinstance(ticket, Refusal):
            return ticket
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(outcome: Any, error: BaseException | None) -> None:
            if done.done():  # the coroutine was cancelled meanwhile
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(outcome)

        def work() -> None:
            try:
                outcome, error = self._admission.run(ticket, lambda: service.handle(body)), None
            except BaseException as e:  # noqa: BLE001 - handed to the coroutine
                outcome, error = None, e
            with contextlib.suppress(RuntimeError):  # the event loop has closed
                loop.call_soon_threadsafe(settle, outcome, error)

        try:
            threading.Thread(target=work, name="sam2-request", daemon=True).start()
        except BaseException:
            self._admission.cancel(ticket)
            raise
        try:
            return await done
        except asyncio.CancelledError:
            self._admission.cancel(ticket)
            raise

    def health(self) -> dict[str, Any]:
        """The details, for callers with the token: run in a thread, since pinging Redis may
        wait for the store's socket timeout."""
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
            "status": "ready",
            "model": options.reference.describe(),
            "device": str(options.device),
            "replicas": self._limits.replicas,
            "replica": self._replica,
            "redis": redis,
            # POSTs being received, admitted and waiting for their turn, or computing (also
            # after Ray Serve gave up on them: counted until their thread ends)
            "requests_in_progress": self._receiving + self._admission.in_progress(),
            "requests_waiting": self._admission.waiting(),
            "request_estimate_s": round(self._admission.estimate.seconds, 3),
            "warm_up_s": self._warm_up_s,  # the first passes that no user waited for
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
