"""A small stand-in for the CVAT server's side of the agent protocol, for the real cvat-cli.

CVAT's agent API is only in CVAT Online/Enterprise, so this serves what `cvat-cli function
create-native` and `function run-agent` call: server info, one task's frames and metadata,
function registration, and a scripted queue of annotation requests whose results it records.
It listens on 127.0.0.1 only.

Run it by hand to try an agent locally (see the README):
    python -m tracker.devtools.cvat_standin --video FOLDER_OF_JPEGS --token SECRET
"""

from __future__ import annotations

import argparse
import collections
import io
import itertools
import json
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import PIL.Image

from tracker.devtools.loopback_http import LoopbackServer, StandInHandler

SERVER_VERSION = "2.80.0"
TASK_ID = 1
CHUNK_SIZE = 36
_NOW = "2026-01-01T00:00:00Z"

#: A scripted request: given the server (and so earlier results), returns the AR's parameters.
RequestScript = Callable[["CvatStandIn"], dict[str, Any]]


class CvatStandIn(LoopbackServer):
    """The server state: one task, registered functions, a request queue and its results."""

    def __init__(self, frames: list[PIL.Image.Image], token: str) -> None:
        self.frames = [self._encode(image) for image in frames]
        self.sizes = [image.size for image in frames]
        self.token = token
        self.functions: dict[int, dict] = {}
        self.queue: collections.deque[tuple[str, RequestScript]] = collections.deque()
        self.completed: dict[str, dict] = {}
        self.failed: dict[str, dict] = {}
        self.updates: list[dict] = []
        self.unauthorized = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @staticmethod
    def _encode(image: PIL.Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless, so the agent sees exactly these pixels
        return buffer.getvalue()

    # -- scripting -------------------------------------------------------------------------------

    def enqueue(self, script: RequestScript | dict) -> str:
        """Queue a request; a callable is evaluated when an agent acquires it."""
        ar_id = f"ar-{next(self._ids)}"
        self.queue.append((ar_id, script if callable(script) else (lambda _, s=script: s)))
        return ar_id

    def init_tracking(self, frame: int, shapes: list[dict]) -> str:
        return self.enqueue(
            {"type": "init_tracking", "task": TASK_ID, "frame": frame, "shapes": shapes}
        )

    def track(self, frame: int, states: Callable[[CvatStandIn], list[str]] | list[str]) -> str:
        def script(server: CvatStandIn) -> dict:
            chosen = states(server) if callable(states) else states
            return {"type": "track", "task": TASK_ID, "frame": frame, "states": chosen}

        return self.enqueue(script)

    def interact(self, frame: int, pos=(), neg=(), box=None) -> str:
        return self.enqueue({"type": "interact", "task": TASK_ID, "frame": frame,
                             "pos_points": [list(p) for p in pos],
                             "neg_points": [list(p) for p in neg],
                             "obj_bbox": [list(c) for c in box] if box else []})  # fmt: skip

    # -- serving ---------------------------------------------------------------------------------

    # -- API -------------------------------------------------------------------------------------

    def task(self) -> dict:
        width, height = self.sizes[0]
        return {
            "id": TASK_ID,
            "name": "synthetic video",
            "size": len(self.frames),
            "mode": "annotation",
            "status": "annotation",
            "dimension": "2d",
            "data": 1,
            "data_chunk_size": CHUNK_SIZE,
            "data_compressed_chunk_type": "imageset",
            "data_original_chunk_type": "imageset",
            "image_quality": 100,
            "created_date": _NOW,
            "updated_date": _NOW,
            "labels": {"url": f"/api/labels?task_id={TASK_ID}", "count": 1},
            "jobs": {"count": 1, "completed": 0, "validation": 0, "url": "/api/jobs"},
            "segment_size": len(self.frames),
            "overlap": 0,
            "owner": None,
            "assignee": None,
            "organization": None,
            "project_id": None,
            "subset": "",
            "bug_tracker": "",
            "url": f"/api/tasks/{TASK_ID}",
            "source_storage": None,
            "target_storage": None,
            "assignee_updated_date": None,
            "guide_id": None,
            "consensus_enabled": False,
            "validation_mode": None,
            "frame_width": width,
            "frame_height": height,
        }

    def data_meta(self) -> dict:
        return {
            "chunk_size": CHUNK_SIZE,
            "size": len(self.frames),
            "image_quality": 100,
            "start_frame": 0,
            "stop_frame": len(self.frames) - 1,
            "frame_filter": "",
            "chunks_updated_date": _NOW,
            "deleted_frames": [],
            "included_frames": None,
            "frames": [
                {"width": w, "height": h, "name": f"{i:05d}.png", "related_files": 0}
                for i, (w, h) in enumerate(self.sizes)
            ],
        }

    def labels(self) -> dict:
        label = {
            "id": 1,
            "name": "object",
            "color": "#ff0000",
            "attributes": [],
            "type": "any",
            "sublabels": [],
            "has_parent": False,
            "task_id": TASK_ID,
            "parent_id": None,
        }
        return {"count": 1, "next": None, "previous": None, "results": [label]}

    def register(self, body: dict) -> dict:
        """Store a function as CVAT does, with its defaults for fields a spec may leave out."""
        defaults = {"min_neg_points": -1, "startswith_box": False, "startswith_box_optional": False}
        with self._lock:
            function_id = len(self.functions) + 1
            self.functions[function_id] = {
                **(defaults if body.get("kind") == "interactor" else {}),
                **body,
                "id": function_id,
                "owner": None,
                "created_date": _NOW,
                "updated_date": _NOW,
            }
            return self.functions[function_id]

    def acquire(self, body: dict) -> dict:
        with self._lock:
            if body.get("request_category") != "interactive" and self.queue:
                ar_id, script = self.queue.popleft()
                return {"ar_assignment": {"ar_id": ar_id, "ar_params": script(self)}}
        return {"ar_assignment": None}


_ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(r"/api/server/about/?"), "about"),
    ("GET", re.compile(r"/api/tasks/(\d+)/?"), "task"),
    ("GET", re.compile(r"/api/tasks/(\d+)/data/meta/?"), "meta"),
    ("GET", re.compile(r"/api/tasks/(\d+)/data/?"), "frame"),
    ("GET", re.compile(r"/api/labels/?"), "labels"),
    ("POST", re.compile(r"/api/functions/?"), "register"),
    ("GET", re.compile(r"/api/functions/(\d+)/?"), "function"),
    ("POST", re.compile(r"/api/functions/queues/function:(\d+)/requests/acquire/?"), "acquire"),
    (
        "POST",
        re.compile(
            r"/api/functions/queues/function:(\d+)/requests/([^/]+)/(complete|fail|update)/?"
        ),
        "result",
    ),  # noqa: E501
]


class _Handler(StandInHandler):
    server_state: CvatStandIn

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        state = self.server_state
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        route = next(
            (
                (name, m.groups())
                for verb, pattern, name in _ROUTES
                if verb == method and (m := pattern.fullmatch(unquote(split.path)))
            ),
            None,
        )
        if route is None:
            return self._json({"detail": "Not found."}, HTTPStatus.NOT_FOUND)
        name, groups = route
        if name != "about" and self.headers.get("Authorization") != f"Bearer {state.token}":
            state.unauthorized += 1
            return self._json(
                {"detail": "Authentication credentials were not provided."}, HTTPStatus.UNAUTHORIZED
            )
        if groups and name in ("task", "meta", "frame") and int(groups[0]) != TASK_ID:
            return self._json({"detail": "Not found."}, HTTPStatus.NOT_FOUND)

        if name == "about":
            return self._json(
                {
                    "name": "CVAT stand-in",
                    "description": "tests",
                    "version": SERVER_VERSION,
                    "logo_url": "",
                    "subtitle": "",
                }
            )
        if name == "task":
            return self._json(state.task())
        if name == "meta":
            return self._json(state.data_meta())
        if name == "frame":
            number = int(query.get("number", -1))
            if query.get("type") != "frame" or not 0 <= number < len(state.frames):
                return self._json({"detail": "Bad frame request."}, HTTPStatus.BAD_REQUEST)
            return self._send(state.frames[number], "image/png")
        if name == "labels":
            return self._json(state.labels())
        if name == "register":
            return self._json(state.register(body), HTTPStatus.CREATED)
        if name == "function":
            function = state.functions.get(int(groups[0]))
            if function is None:
                return self._json({"detail": "Not found."}, HTTPStatus.NOT_FOUND)
            return self._json(function)
        if name == "acquire":
            return self._json(state.acquire(body))
        _, ar_id, outcome = groups
        with state._lock:
            if outcome == "update":
                state.updates.append({"ar_id": ar_id, **body})
            else:
                (state.completed if outcome == "complete" else state.failed)[ar_id] = body
        return self._json({})


CvatStandIn.handler = _Handler  # defined below the stand-in it serves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True, help="a folder of frames (sorted)")
    parser.add_argument("--token", default="local-token", help="the CVAT_ACCESS_TOKEN to accept")
    parser.add_argument("--box", required=True, help="x1,y1,x2,y2 of the object on frame 0")
    args = parser.parse_args()
    frames = [PIL.Image.open(p) for p in sorted(args.video.iterdir()) if p.is_file()]
    server = CvatStandIn(frames, args.token).start()
    box = [float(v) for v in args.box.split(",")]
    init = server.init_tracking(0, [{"type": "rectangle", "points": box}])
    for frame in range(1, len(frames)):
        server.track(frame, lambda s: s.completed[init]["states"])
    print(
        f"CVAT stand-in at {server.url} (token {args.token!r}) with {len(server.queue)} "
        "requests queued; run an agent against it, Ctrl+C to stop",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        for ar_id, result in {**server.completed, **server.failed}.items():
            print(ar_id, json.dumps({k: v for k, v in result.items() if k != "agent_id"}))
        server.stop()


if __name__ == "__main__":
    main()
