"""CVAT's lambda protocol envelope, shared by the Nuclio functions and the server: request bodies,
frames and answers.

CVAT's `lambda_manager` posts JSON with the frame as base64 of its encoded file (`image`) and
gives the UI only the status code of an error (the body is dropped), so every answer here is
`(status, JSON object)`: 200 with the result, 4xx with a `message` for what the caller can fix,
5xx with a `message` for what the operator must fix. Nothing raises out of `answered`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import cvat_sdk.auto_annotation as cvataa
import PIL.Image

from tracker.cvat.options import RequestLimits, Syntax
from tracker.cvat.shape_tracker import Shape
from tracker.cvat.stores.state_store import (
    StateConflictError,
    StateDroppedError,
    StoreConnectionLostError,
    StoreUnavailableError,
    UnknownStateError,
)
from tracker.cvat.user_errors import (
    USER_ERRORS,
    OutOfMemoryReportedError,
    StageOutOfMemoryError,
    memory_stage,
    user_message,
)
from tracker.engine.errors import Parameter

_log = logging.getLogger(__name__)

Answer = tuple[int, dict[str, Any]]

#: CVAT's requests nest 4 deep (`{"shapes": [{"points": [...]}]}`); Python's parser recurses
#: once per level and fails past about 1,000 levels with RecursionError, which is no 4xx.
MAX_JSON_DEPTH = 32
#: What PIL may open: the formats CVAT sends frames in, and nothing else (no decoder that runs
#: another program, like EPS's Ghostscript). Video frames come as PNG, compressed image chunks
#: as JPEG, and an image task's original quality as the files uploaded (`FrameProvider.get_frame`
#: returns their bytes): TIFF, BMP and WebP too. (PIL's JPEG opener also opens cameras' MPO.)
FRAME_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP")
FORMATS_ADVICE = "send a JPEG or PNG frame (TIFF, BMP and WebP are read too)"
PIL.Image.init()  # registers every format: `open(formats=...)` looks up names it has not loaded


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
    (OutOfMemoryReportedError, 503),  # from the agent functions' code, where it is reused
    (cvataa.BadFunctionError, 400),  # the agent functions' user errors, likewise
    (StoreConnectionLostError, 503),  # nothing saved: run it again (a proxy asks again)
    (StoreUnavailableError, 503),
    (StageOutOfMemoryError, 503),
]


def answered(work: Callable[[], dict[str, Any]]) -> Answer:
    """Run `work`, turning every exception into an error answer (logged, never a traceback)."""
    try:
        with memory_stage("track"):  # unless a deeper stage (encoding a frame) named it
            return 200, work()
    except Exception as e:
        for kind, status in _STATUS_BY_ERROR:
            if isinstance(e, kind):
                status = getattr(e, "status", status)
                message = user_message(e, Syntax.ENV)  # parameters named as variables
                if isinstance(e, StageOutOfMemoryError):
                    message = e.advice(Syntax.ENV)
                _log.warning("Answered %d: %s", status, message)
                return status, {"message": message}
        _log.exception("Internal error while serving a request")
        return 500, {
            "message": f"Internal error in the SAM2 function ({type(e).__name__}); "
            "its log has the details. Please report it."
        }


def _nested_deeper_than(value: object, limit: int) -> bool:
    """Whether lists and objects in `value` nest more than `limit` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))  # type: ignore[union-attr]
    return False


def _too_deep() -> RequestError:
    return RequestError(
        f"The request's JSON nests deeper than {MAX_JSON_DEPTH} levels; CVAT's requests nest 4."
    )


def request_object(body: object) -> dict[str, Any]:
    """The request as a dict: Nuclio gives JSON bodies as dicts, others as bytes or text."""
    if isinstance(body, bytes | bytearray | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(f"The request body is not JSON ({e}).") from e
        except RecursionError as e:
            raise _too_deep() from e
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    if _nested_deeper_than(body, MAX_JSON_DEPTH):
        raise _too_deep()
    return body


def limit_error(what: str, name: str, limit: int) -> RequestError:
    """A request past one of `RequestLimits`: the message names the limit and its setting."""
    return RequestError(
        f"{what}, past this function's limit of {limit:,} "
        f"({Syntax.ENV.phrase(Parameter(name))}, the server's --{name.replace('_', '-')})."
    )


def request_image(request: dict[str, Any], limits: RequestLimits) -> tuple[PIL.Image.Image, bytes]:
    """The frame, decoded, and its encoded bytes (the interactor's cache key).

    Its size is read from the header (PIL opens lazily) and checked against the pixel limit
    before any pixel is decoded."""
    encoded = request.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise RequestError("The request has no image: send the frame as base64 in 'image'.")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError("'image' is not valid base64; send the encoded frame file.") from e
    megapixels = limits.max_frame_megapixels
    try:
        image = PIL.Image.open(io.BytesIO(data), formats=FRAME_FORMATS)
    except PIL.Image.DecompressionBombError as e:
        what = f"The frame is larger than PIL decodes safely ({e})"
        raise limit_error(what, "max_frame_megapixels", megapixels) from e
    except (OSError, ValueError) as e:
        raise RequestError(
            f"'image' is not an image file that can be read ({e}); {FORMATS_ADVICE}."
        ) from e
    if image.width * image.height > megapixels * 1_000_000:
        size = f"{image.width}x{image.height} ({image.width * image.height / 1e6:.1f} megapixels)"
        raise limit_error(f"The frame is {size}", "max_frame_megapixels", megapixels)
    try:
        image.load()
    except (OSError, ValueError) as e:
        raise RequestError(
            f"'image' is not an image file that can be read ({e}); send a JPEG or PNG frame."
        ) from e
    return image, data


def request_list(request: dict[str, Any], key: str) -> list | None:
    value = request.get(key)
    if value is not None and not isinstance(value, list):
        raise RequestError(f"'{key}' must be a list.")
    return value


def request_shape(raw: object) -> tuple[Shape, bool]:
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


class TrackerRequest(NamedTuple):
    """A tracker request, checked: its states (None where an object starts), the shapes that
    start objects (by index; with whether each came as a bare rectangle), the frame and its
    encoded bytes; the shapes that prompt an object again (by index, beside its state), and the
    client's frame number of each shape that carries one (`"frame"`)."""

    states: list[object]
    starts: dict[int, tuple[Shape, bool]]
    image: PIL.Image.Image
    data: bytes
    again: dict[int, Shape]
    frames: dict[int, int]


def shape_frame(raw: object) -> int | None:
    """The frame number a shape dict carries (`"frame"`, as in CVAT's own shape objects)."""
    frame = raw.get("frame") if isinstance(raw, dict) else None
    if frame is None:
        return None
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        raise RequestError("A shape's 'frame' must be a frame number (an integer >= 0).")
    return frame


def tracker_request(request: dict[str, Any], limits: RequestLimits) -> TrackerRequest:
    """The request checked before any work; past a limit of `limits` it is refused whole.

    The bodies CVAT's `lambda_manager` builds: `init_tracking` as n shapes and `states: []`
    (every shape starts); `track` as n states and `shapes: [None] * n` (2.40+) or the previous
    frame's shapes (2.26-2.39 UIs; a shape beside a state is ignored: a state continues). A shape
    dict carrying its `"frame"` beside a state (which no CVAT UI sends) prompts that object again
    on this frame, which is that frame."""
    shapes, states = request_list(request, "shapes"), request_list(request, "states")
    if shapes is None and states is None:
        raise RequestError("The request needs 'shapes' to start objects or 'states'.")
    shapes = [None] * len(states) if shapes is None else shapes  # type: ignore[arg-type]
    # CVAT's lambda_manager (every release) sends an AI Tools `init_tracking` as `states: []`
    # beside its shapes: an empty list of states starts every shape.
    states = states or [None] * len(shapes)
    if len(shapes) != len(states):
        raise RequestError(
            f"The request has {len(shapes)} shapes but {len(states)} states; send one state "
            "(or null, to start an object) per shape."
        )
    if len(states) > limits.max_objects:
        what = f"The request carries {len(states):,} objects"
        raise limit_error(what, "max_objects", limits.max_objects)
    starts: dict[int, tuple[Shape, bool]] = {}
    again: dict[int, Shape] = {}
    frames = {i: f for i, shape in enumerate(shapes) if (f := shape_frame(shape)) is not None}
    for index, (shape, state) in enumerate(zip(shapes, states, strict=True)):
        if state is None and shape is None:
            raise RequestError(f"Shape {index} has neither points nor a state.")
        if state is None or index in frames:  # a state beside a framed shape: prompted again
            parsed = request_shape(shape)
            points = len(parsed[0].points) // 2
            if parsed[0].type == "polygon" and points > limits.max_polygon_points:
                what = f"Polygon {index} has {points:,} points"
                raise limit_error(what, "max_polygon_points", limits.max_polygon_points)
            if state is None:
                starts[index] = parsed
            else:
                again[index] = parsed[0]
    image, data = request_image(request, limits)
    return TrackerRequest(states, starts, image, data, again, frames)


def answer_shape(shape: Shape, legacy: bool) -> object:
    return shape.points if legacy else {"type": shape.type, "points": shape.points}
