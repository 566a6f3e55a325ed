"""CVAT's tracker protocol (Nuclio functions and the server) over a `ShapeTracker` and a store.

Tracker requests (`{"image", "shapes", "states"}`, answered `{"shapes", "states"}` in the same
order): a shape without a state starts an object on this frame, a state continues one (newer
CVATs send `null` shapes or no `shapes` then; older ones repeat the last shape, which is ignored).
A shape is CVAT's legacy `[x1, y1, x2, y2]` rectangle or `{"type", "points"}` for rectangles,
polygons and masks, answered in the same form. A state is a handle (`tracker.cvat.state_store`).

The answer also has `outside`, a boolean per shape: true where SAM2 sees no object on this frame.
CVAT's AI Tools read only `shapes` and `states` and fail on a missing shape, so `shapes` then
repeats the object's last shape; clients that can mark an object outside (our UI plugin's
annotation action) read `outside` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from tracker.cvat.lambda_envelope import (
    Answer,
    answer_shape,
    answered,
    request_object,
    tracker_request,
)
from tracker.cvat.shape_tracker import Shape, ShapeTracker, TrackedObject
from tracker.cvat.state_store import Checkout, StateStore


class LambdaTracker:
    """CVAT's tracker protocol over a `ShapeTracker` and a `StateStore`."""

    def __init__(self, tracker: ShapeTracker, store: StateStore) -> None:
        self.tracker = tracker
        self.store = store

    def handle(self, body: object) -> Answer:
        return answered(lambda: self.track(request_object(body)))

    def track(self, request: dict[str, Any]) -> dict[str, Any]:
        states, starts, image = tracker_request(request, self.tracker.options.limits)
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
        answer_outside: list[bool] = []
        for index, state in enumerate(states):
            if index in started:
                tracked = started[index]
                shape: Shape | None = starts[index][0]
                state = self.store.put(tracked)
            else:
                tracked = checkouts[index].tracked
                shape = stepped[index]
            answer_outside.append(shape is None)
            shape = shape if shape is not None else tracked.last_shape
            answer_shapes.append(answer_shape(shape, tracked.bare_points))
            answer_states.append(state)
        return {"shapes": answer_shapes, "states": answer_states, "outside": answer_outside}

    def _stepped(self, frame, checkouts: dict[int, Checkout]) -> dict[int, Shape | None]:
        """Each object's shape on this frame (None while SAM2 sees no object), all objects
        stepped together (the engine batches those of one memory layout)."""
        tracked: list[TrackedObject] = [checkout.tracked for checkout in checkouts.values()]
        shapes = self.tracker.step_many(frame, tracked) if tracked else []
        return dict(zip(checkouts, shapes, strict=True))

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
