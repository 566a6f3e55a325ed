"""Drive our Nuclio functions as Nuclio and CVAT's lambda_manager do, without Docker.

The handlers run under the `nuclio-sdk` package's own test platform (`Context`, `Event`,
`Response`, `init_context` once per context); bodies are built as `lambda_manager` builds them:
the frame as base64 of its encoded file, states JSON-encoded on the way out and decoded on the way
back (as CVAT's signer carries them through the browser).
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import nuclio_sdk
import nuclio_sdk.test

from tracker.cvat import shapes
from tracker.cvat.stores.state_store import parse_token, token

SERVERLESS = Path(__file__).parent.parent / "serverless" / "sam2"
_instances = itertools.count()


def load_entry(kind: str):
    """The `main.py` of serverless/sam2/<kind>/nuclio, imported afresh as each Nuclio worker
    process imports it (under a name of its own: the platform finds `init_context` by name)."""
    path = SERVERLESS / kind / "nuclio" / "main.py"
    name = f"nuclio_main_{kind}_{next(_instances)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def frame_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("utf-8")


class NuclioFunction:
    """One deployed function instance: a fresh platform context runs `init_context` again, as a
    restarted function or another replica would."""

    def __init__(self, kind: str) -> None:
        self.module = load_entry(kind)
        self.platform = nuclio_sdk.test.Platform()

    @property
    def context(self) -> nuclio_sdk.Context:
        return self.platform._get_handler_context(self.module.handler)

    def call(self, body: Any, content_type: str = "application/json") -> tuple[int, dict]:
        event = nuclio_sdk.Event(body=body, content_type=content_type)
        response = self.platform.call_handler(self.module.handler, event)
        assert isinstance(response, nuclio_sdk.Response)
        assert response.content_type == "application/json"
        return response.status_code, json.loads(response.body)


def signed(states: list) -> list:
    """What comes back from the browser: CVAT signs `json.dumps(state)` and `json.loads` it."""
    return [None if s is None else json.loads(json.dumps(s, separators=(",", ":"))) for s in states]


def box_prompt(video) -> list[float]:
    """A rectangle a little larger than the first object on frame 0 (CVAT's legacy form)."""
    x1, y1, x2, y2 = shapes.rectangle_from_mask(video.masks[0])
    return [x1 - 3, y1 - 3, x2 + 3, y2 + 3]


def stepped(states: list) -> list:
    """The states of the same objects one step on (`<handle>.<version>`)."""
    tokens = [parse_token(s) for s in states]
    return [token(handle, version + 1) for handle, version in tokens]


def tracker_body(frame: Path, shapes: list | None, states: list | None) -> dict:
    body: dict[str, Any] = {"image": frame_b64(frame)}
    if shapes is not None:
        body["shapes"] = shapes
    if states is not None:
        body["states"] = signed(states)
    return body


def track_frames(functions: list[NuclioFunction], video, first_shapes: list, frames: int) -> list:
    """Start `first_shapes` on frame 0, then step frames 1.. through `functions` in turn (as
    replicas would take them); the answered shapes of each stepped frame."""
    status, answer = functions[0].call(tracker_body(video.frames[0], first_shapes, None))
    assert status == 200, answer
    states = answer["states"]
    assert all(len(json.dumps(s)) < 1024 for s in states), "states travel through the browser"
    results = []
    for index in range(1, frames):
        function = functions[index % len(functions)]
        # Newer CVATs send no shapes when continuing; the older UI sends the last ones.
        status, answer = function.call(tracker_body(video.frames[index], None, states))
        assert status == 200, answer
        assert answer["states"] == stepped(states)
        states = answer["states"]
        results.append(answer["shapes"])
    return results


def lambda_manager_body(frame: Path, ui: dict, supported_shape_types: bool = True) -> dict:
    """The body CVAT 2.73.0's lambda_manager posts a tracker for the UI's call `ui` (cvat-core's
    `lambda.call` data: `{"type", "frame", "shapes"?, "states"?, "job"}`), as
    `cvat/apps/lambda_manager/views.py` (ac6e63b96, lines 554-592) builds it in `invoke`:
    no `states` (`init_tracking`) becomes `states: []`; no `shapes` (`track`, 2.40+) becomes
    `shapes: [None] * len(states)`; both (a 2.26-2.39 UI) pass as sent. `prepare_shape` keeps a
    `{"type", "points"}` shape for a function that declares `supported_shape_types` and sends
    only its points otherwise (the legacy form). States come back JSON-decoded (`signed`)."""
    if "states" not in ui:
        shapes, states = ui["shapes"], []
    elif "shapes" not in ui:
        states = ui["states"]
        shapes = [None] * len(states)
    else:
        shapes, states = ui["shapes"], ui["states"]

    def prepare(shape: dict | None) -> object:
        if shape is None or supported_shape_types:
            return shape
        return shape["points"]

    return {
        "image": frame_b64(frame),
        "shapes": [prepare(s) for s in shapes],
        "states": signed(states),
    }


def ui_points(answer: dict, supported_shape_types: bool = True) -> list[list[float]]:
    """What the AI Tools read back: lambda_manager wraps legacy answers' points as rectangles
    (views.py lines 677-681), and tools-control.tsx's `trackedRectangleMapper` (lines 184-200,
    applied at 1048) reads `.points` of every answered shape."""
    shapes = answer["shapes"]
    if not supported_shape_types:
        shapes = [None if p is None else {"type": "rectangle", "points": p} for p in shapes]
    return [shape["points"] for shape in shapes]
