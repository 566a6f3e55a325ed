"""CVAT's lambda protocol (Nuclio functions), shared by the Nuclio handlers and the server.

CVAT's `lambda_manager` posts JSON with the frame as base64 of its encoded file (`image`) and
gives the UI only the status code of an error (the body is dropped), so every answer here is
`(status, JSON object)`: 200 with the result, 4xx with a `message` for what the caller can fix,
5xx with a `message` for what the operator must fix. Nothing raises out of `handle`.

Tracker requests (`{"image", "shapes", "states"}`, answered `{"shapes", "states"}` in the same
order): a shape without a state starts an object on this frame, a state continues one (newer
CVATs send `null` shapes or no `shapes` then; older ones repeat the last shape, which is ignored).
A shape is CVAT's legacy `[x1, y1, x2, y2]` rectangle or `{"type", "points"}` for rectangles,
polygons and masks, answered in the same form. A state is a handle (`tracker.cvat.state_store`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cvat_sdk.auto_annotation as cvataa
import PIL.Image
import torch

from tracker.cvat.options import Syntax
from tracker.cvat.shape_tracker import Shape, ShapeTracker, TrackedObject
from tracker.cvat.state_store import (
    Checkout,
    StateConflictError,
    StateDroppedError,
    StateStore,
    StoreUnavailableError,
    UnknownStateError,
)
from tracker.cvat.user_errors import OUT_OF_MEMORY_ADVICE, USER_ERRORS, user_message
from tracker.engine.errors import render

_log = logging.getLogger(__name__)

Answer = tuple[int, dict[str, Any]]


class RequestError(ValueError):
    """A request that cannot be served as sent; `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_STATUS_BY_ERROR: list[tuple[type[BaseException], int]] = [
    (RequestError, 400),
    (UnknownStateError, 404),
    (StateConflictError, 409),
    (StateDroppedError, 410),
    (USER_ERRORS, 400),
    (cvataa.BadFunctionError, 400),  # the agent functions' user errors, where they are reused
    (StoreUnavailableError, 503),
    (torch.OutOfMemoryError, 503),
]


def answered(work: Callable[[], dict[str, Any]]) -> Answer:
    """Run `work`, turning every exception into an error answer (logged, never a traceback)."""
    try:
        return 200, work()
    except Exception as e:
        for kind, status in _STATUS_BY_ERROR:
            if isinstance(e, kind):
                status = getattr(e, "status", status)
                message = user_message(e, Syntax.ENV)  # parameters named as variables
                if isinstance(e, torch.OutOfMemoryError):
                    if torch.cuda.is_initialized():
                        torch.cuda.empty_cache()  # give the failed request's blocks back
                    message = render(OUT_OF_MEMORY_ADVICE["track"], Syntax.ENV.phrase)
                _log.warning("Answered %d: %s", status, message)
                return status, {"message": message}
        _log.exception("Internal error while serving a request")
        return 500, {
            "message": f"Internal error in the SAM2 function ({type(e).__name__}); "
            "its log has the details. Please report it."
        }


def request_object(body: object) -> dict[str, Any]:
    """The request as a dict: Nuclio gives JSON bodies as dicts, others as bytes or text."""
    if isinstance(body, bytes | bytearray | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(f"The request body is not JSON ({e}).") from e
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    return body


def request_image(request: dict[str, Any]) -> tuple[PIL.Image.Image, bytes]:
    """The frame, decoded, and its encoded bytes (the interactor's cache key)."""
    encoded = request.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise RequestError("The request has no image: send the frame as base64 in 'image'.")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError("'image' is not valid base64; send the encoded frame file.") from e
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise RequestError(
            f"'image' is not an image file that can be read ({e}); send a JPEG or PNG frame."
        ) from e
    return image, data


def _list(request: dict[str, Any], key: str) -> list | None:
    value = request.get(key)
    if value is not None and not isinstance(value, list):
        raise RequestError(f"'{key}' must be a list.")
    return value


def _shape(raw: object) -> tuple[Shape, bool]:
    """A request shape and whether it came as a legacy bare rectangle."""
    if isinstance(raw, list):
        return Shape("rectangle", raw), True
    if isinstance(raw, dict) and isinstance(raw.get("type"), str) and "points" in raw:
        if not isinstance(raw["points"], list):
            raise RequestError("A shape's 'points' must be a list of numbers.")
        return Shape(raw["type"], raw["points"]), False
    raise RequestError(
        'A shape must be [x1, y1, x2, y2] or {"type": "rectangle" | "polygon" | "mask", '
        '"points": [...]}.'
    )


def _answer_shape(shape: Shape, legacy: bool) -> object:
    return shape.points if legacy else {"type": shape.type, "points": shape.points}


class LambdaTracker:
    """CVAT's tracker protocol over a `ShapeTracker` and a `StateStore`."""

    def __init__(self, tracker: ShapeTracker, store: StateStore) -> None:
        self.tracker = tracker
        self.store = store

    def handle(self, body: object) -> Answer:
        return answered(lambda: self.track(request_object(body)))

    def track(self, request: dict[str, Any]) -> dict[str, Any]:
        shapes, states = _list(request, "shapes"), _list(request, "states")
        if shapes is None and states is None:
            raise RequestError("The request needs 'shapes' to start objects or 'states'.")
        shapes = [None] * len(states) if shapes is None else shapes
        states = [None] * len(shapes) if states is None else states
        if len(shapes) != len(states):
            raise RequestError(
                f"The request has {len(shapes)} shapes but {len(states)} states; send one state "
                "(or null, to start an object) per shape."
            )
        starts: dict[int, tuple[Shape, bool]] = {}
        for index, (shape, state) in enumerate(zip(shapes, states, strict=True)):
            if state is None:
                if shape is None:
                    raise RequestError(f"Shape {index} has neither points nor a state.")
                starts[index] = _shape(shape)
        image, _ = request_image(request)
        with self._checked_out(states, starts) as checkouts, self.tracker.engine.session():
            frame = self.tracker.encode(image)
            started = {}
            for index, (shape, bare) in starts.items():
                started[index] = self.tracker.start(frame, shape)
                started[index].bare_points = bare
            stepped = self._stepped(frame, checkouts)
            for checkout in checkouts.values():
                checkout.commit()
        answer_shapes: list[object] = []
        answer_states: list[object] = []
        for index, state in enumerate(states):
            if index in started:
                tracked = started[index]
                shape = starts[index][0]
                state = self.store.put(tracked)
            else:
                tracked = checkouts[index].tracked
                shape = stepped[index]
            answer_shapes.append(_answer_shape(shape, tracked.bare_points))
            answer_states.append(state)
        return {"shapes": answer_shapes, "states": answer_states}

    def _stepped(self, frame, checkouts: dict[int, Checkout]) -> dict[int, Shape]:
        """Each object's shape on this frame, all objects stepped together (the engine batches
        those of one memory layout); while SAM2 sees no object, its last shape, since CVAT's AI
        Tools fail on a missing shape (and the object may come back)."""
        tracked: list[TrackedObject] = [checkout.tracked for checkout in checkouts.values()]
        shapes = self.tracker.step_many(frame, tracked) if tracked else []
        return {
            index: shape if shape is not None else obj.last_shape
            for index, shape, obj in zip(checkouts, shapes, tracked, strict=True)
        }

    @contextlib.contextmanager
    def _checked_out(
        self, states: Sequence[object], starts: dict[int, object]
    ) -> Iterator[dict[int, Checkout]]:
        """Every continued object's state, taken before any model work so that an unknown
        handle costs nothing; all are released however the request ends."""
        checkouts: dict[int, Checkout] = {}
        try:
            for index, state in enumerate(states):
                if index not in starts:
                    checkouts[index] = self.store.checkout(state)  # type: ignore[arg-type]
            yield checkouts
        finally:
            for checkout in checkouts.values():
                checkout.close()
