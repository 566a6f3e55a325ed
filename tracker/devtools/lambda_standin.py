"""A stand-in for CVAT's lambda endpoint, for the UI plugin's tests (Node and a real browser).

It serves what cvat-core's `core.lambda.list()` and `core.lambda.call()` reach, as CVAT's
`cvat/apps/lambda_manager/views.py` does for a Nuclio tracker:

- `GET /api/lambda/functions`: the deployed functions as CVAT lists them (`id`, `kind`, `name`,
  `description`, `labels_v2`, `version`), our tracker among them with kind 'tracker';
- `POST /api/lambda/functions/{id}` with `{task, job, frame, shapes, states}`: reads the task's
  frame `frame` from a folder, unsigns each state (`TimestampSigner(salt="cvat-tracker-state:
  {id}")`, at most 8 hours old; a bad one is CVAT's 400 "Invalid or expired tracker state"),
  calls the function with `{image, shapes, states}` and signs the states of its answer
  (`json.dumps(state, separators=(",", ":"))`). A function's error reaches the browser as CVAT
  passes it on: its status, and as body only requests' text of the error
  ("404 Client Error: Not Found for url: ...", a JSON string): CVAT drops the function's message.

The function is our real tracker service (`tracker.cvat.lambda_protocol.services.build_tracker`),
called in process through `LambdaTracker.handle`, as the Nuclio entry point calls it. Requests are
counted per frame, and each is noted (`calls`: its frame, each shape's type and `frame`, whether
each object came with a state), so that tests see which requests started or prompted objects
again. For the plugin's failure paths, `faults` makes the next request for a frame fail
as a deployment can: states the function does not know (it answers its own 4xx), an error status
(5xx), a dropped connection, a malformed answer, or (random weights never lose an object) an answer
that marks objects outside. It also serves a folder of static files under `/page/` (the browser
test's page and bundle). It listens on 127.0.0.1 only; it is no CVAT.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import mimetypes
import secrets
import string
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from tracker.devtools.loopback_http import LoopbackServer, StandInHandler

STATE_MAX_AGE_S = 8 * 3600  # CVAT's TRACKER_STATE_MAX_AGE
TASK_ID = 1
JOB_ID = 7
FUNCTION_ID = "cvat-sam2-tracker"
_B62 = string.digits + string.ascii_letters


class Service(Protocol):
    def handle(self, body: object) -> tuple[int, dict[str, Any]]: ...


class BadSignatureError(ValueError):
    """A state CVAT did not sign, or signed too long ago."""


class TimestampSigner:
    """Django's `TimestampSigner` format (`value:timestamp:signature`, HMAC-SHA256 keyed by a
    secret and a salt), which CVAT uses for tracker states; the value stays readable text."""

    def __init__(self, secret: bytes, salt: str) -> None:
        self.key = hashlib.sha256(salt.encode() + b"signer" + secret).digest()

    def _signature(self, value: str) -> str:
        digest = hmac.new(self.key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, value: str, now: float | None = None) -> str:
        stamp, number = "", int(time.time() if now is None else now)
        while True:
            number, digit = divmod(number, 62)
            stamp = _B62[digit] + stamp
            if not number:
                break
        signed = f"{value}:{stamp}"
        return f"{signed}:{self._signature(signed)}"

    def unsign(self, signed: str, max_age: float) -> str:
        if not isinstance(signed, str) or signed.count(":") < 2:
            raise BadSignatureError("not a signed value")
        body, signature = signed.rsplit(":", 1)
        if not hmac.compare_digest(signature, self._signature(body)):
            raise BadSignatureError("signature does not match")
        value, stamp = body.rsplit(":", 1)
        age = time.time() - sum(_B62.index(c) * 62**i for i, c in enumerate(reversed(stamp)))
        if age > max_age:
            raise BadSignatureError("signature expired")
        return value


class LambdaStandIn(LoopbackServer):
    """One task (frames in a folder, one job over all of them) and one tracker function."""

    def __init__(self, frames: list[Path], function: Service, static: Path | None = None) -> None:
        self.frames = frames
        self.function = function
        self.static = static
        self.signer = TimestampSigner(secrets.token_bytes(32), f"cvat-tracker-state:{FUNCTION_ID}")
        self.requests: collections.Counter[int] = collections.Counter()
        self.order: list[int] = []  # the frames of the requests, as they came
        self.calls: list[dict[str, Any]] = []  # what each request carried, as they came
        self.faults: dict[int, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}  # what the tests want the page to know (shapes, sizes)
        self._lock = threading.Lock()

    def functions(self) -> list[dict[str, Any]]:
        """As `LambdaFunction.to_dict` lists Nuclio functions: our tracker and a detector."""
        return [
            {"id": FUNCTION_ID, "kind": "tracker", "name": "SAM2 tracker (cvat-sam2-tracker)",
             "description": "SAM2 video tracker", "labels_v2": [], "version": 1},
            {"id": "openvino-omz-public-yolo-v3-tf", "kind": "detector", "name": "YOLO v3",
             "description": "a detector", "labels_v2": [], "version": 1},
        ]  # fmt: skip

    def call(self, function_id: str, data: dict[str, Any]) -> tuple[int, Any]:
        """`FunctionViewSet.call` and `LambdaFunction.invoke` for a tracker, as (status, body)."""
        if function_id != FUNCTION_ID:
            return 404, {"detail": "Not found."}
        if data.get("task") != TASK_ID or data.get("job", JOB_ID) != JOB_ID:
            return 400, f"`{function_id}` lambda function was run with wrong arguments"
        frame = data.get("frame")
        if not isinstance(frame, int) or not 0 <= frame < len(self.frames):
            return 400, "The frame is outside the job range"
        with self._lock:
            self.requests[frame] += 1
            self.order.append(frame)
            self.calls.append(_noted(frame, data))
            fault = self.faults.pop(frame, None)
        try:
            states = [
                None if s is None else json.loads(self.signer.unsign(s, STATE_MAX_AGE_S))
                for s in data.get("states") or []
            ]
        except (BadSignatureError, ValueError):
            return 400, "Invalid or expired tracker state"
        payload = {
            "image": base64.b64encode(self.frames[frame].read_bytes()).decode(),
            "shapes": data.get("shapes") or [],
            "states": states,
        }
        if fault is not None and fault["kind"] == "forget":  # states the function never gave
            payload["states"] = [secrets.token_urlsafe(16) for _ in states]
        if fault is not None and fault["kind"] in ("status", "drop"):
            status, answer = fault.get("status", 0), {"message": fault.get("message", "")}
        else:
            status, answer = self.function.handle(payload)
        if fault is not None and fault["kind"] == "malformed":
            answer = {"shapes": answer.get("shapes", [])[:-1], "states": answer.get("states")}
        if fault is not None and fault["kind"] == "outside":
            answer["outside"] = [i in fault["objects"] for i in range(len(answer["shapes"]))]
        if fault is not None and fault["kind"] == "drop":
            return -1, None
        if status >= 400:
            # requests' HTTPError text, all that CVAT's `return_response` passes on.
            reason = HTTPStatus(status).phrase
            side = "Client" if status < 500 else "Server"
            return status, f"{status} {side} Error: {reason} for url: http://nuclio:32768/"
        answer["states"] = [
            self.signer.sign(json.dumps(s, separators=(",", ":"))) for s in answer["states"]
        ]
        return 200, answer


def _noted(frame: int, data: dict[str, Any]) -> dict[str, Any]:
    """A request as the tests read it: no points, no states, only what says what it asks."""
    shapes = data.get("shapes") or []
    return {
        "frame": frame,
        "shapes": [
            {"type": s.get("type"), "frame": s.get("frame")} if isinstance(s, dict) else s
            for s in shapes
        ],
        "states": [s is not None for s in data.get("states") or []],
    }


class _Handler(StandInHandler):
    server_state: LambdaStandIn

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        standin = self.server_state
        path = self.path.split("?", 1)[0]
        if path == "/api/lambda/functions":
            return self._json(standin.functions())
        if path == "/standin/info":
            with standin._lock:
                requests, order = dict(standin.requests), list(standin.order)
                calls = list(standin.calls)
            described = {"frames": len(standin.frames), "taskId": TASK_ID, "jobId": JOB_ID}
            noted = {"requests": requests, "order": order, "calls": calls}
            return self._json({**described, **noted, **standin.extra})
        if path.startswith("/frames/"):
            index = int(path.rsplit("/", 1)[1])
            return self._send(standin.frames[index].read_bytes(), "image/jpeg")
        if path.startswith("/page/") and standin.static is not None:
            root = standin.static.resolve()
            file = (root / path[len("/page/") :]).resolve()
            if file.is_file() and file.is_relative_to(root):
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                kind = "text/javascript" if file.suffix in (".js", ".mjs") else kind
                return self._send(file.read_bytes(), kind)
        return self._json({"detail": "Not found."}, 404)

    def do_POST(self) -> None:  # noqa: N802
        standin = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?", 1)[0]
        if path.startswith("/api/lambda/functions/"):
            status, answer = standin.call(path.rsplit("/", 1)[1], body)
            if status < 0:  # the connection drops without an answer
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return None
            return self._json(answer, status)
        if path == "/standin/faults":  # {frame: {kind, ...}}
            with standin._lock:
                standin.faults.update({int(k): v for k, v in body.items()})
            return self._json({})
        if path == "/standin/reset":
            with standin._lock:
                standin.requests.clear()
                standin.order.clear()
                standin.calls.clear()
                standin.faults.clear()
            return self._json({})
        return self._json({"detail": "Not found."}, 404)


LambdaStandIn.handler = _Handler  # defined below the stand-in it serves
