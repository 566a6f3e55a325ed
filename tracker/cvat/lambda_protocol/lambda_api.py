"""CVAT's tracker protocol (Nuclio functions and the server) over a `ShapeTracker` and a store.

Tracker requests (`{"image", "shapes", "states"}`, answered `{"shapes", "states"}` in the same
order): a shape without a state starts an object on this frame, a state continues one (newer
CVATs send `null` shapes or no `shapes` then; older ones repeat the last shape, which is ignored).
A shape is CVAT's legacy `[x1, y1, x2, y2]` rectangle or `{"type", "points"}` for rectangles,
polygons and masks, answered in the same form. A state is a token `<handle>.<version>`
(`tracker.cvat.stores.state_store`).

The answer also has `outside`, a boolean per shape: true where SAM2 sees no object on this frame.
CVAT's AI Tools read only `shapes` and `states` and fail on a missing shape, so `shapes` then
repeats the object's last shape; clients that can mark an object outside (our UI plugin's
annotation action) read `outside` instead.

Every object is stepped exactly once per version: a request commits all its objects or none, and
a request repeated after its answer was lost (a proxy's retry, a timeout, a duplicate sent at the
same time) finds its objects one version on, stepped onto the same frame, and is answered as the
first time from what was stored, without stepping. A state older than that (the object moved on
to another frame since) is refused with 409, and nothing of the request is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, NamedTuple

import PIL.Image

from tracker.cvat.lambda_protocol.lambda_envelope import (
    Answer,
    RequestError,
    answer_shape,
    answered,
    request_object,
    tracker_request,
)
from tracker.cvat.shape_tracker import Shape, ShapeTracker
from tracker.cvat.stores.state_store import (
    Record,
    StaleStateError,
    StateConflictError,
    StateStore,
    Stored,
    Transaction,
    UnknownStateError,
    conflict_message,
    new_handle,
    parse_token,
    stale_message,
    token,
    unknown_state_message,
)


class _Answered(NamedTuple):
    handle: str
    stored: Stored
    shape: Shape | None


class LambdaTracker:
    """CVAT's tracker protocol over a `ShapeTracker` and a `StateStore`."""

    def __init__(self, tracker: ShapeTracker, store: StateStore) -> None:
        self.tracker = tracker
        self.store = store

    def handle(self, body: object) -> Answer:
        return answered(lambda: self.track(request_object(body)))

    def track(self, request: dict[str, Any]) -> dict[str, Any]:
        """Step or start the request's objects, or answer a repeat as the first time. A conflict
        (a commit of one of its objects met while reading or committing) is tried once more as
        a repeat; `StoreConnectionLostError` (nothing saved, 503) is never taken for one."""
        checked = tracker_request(request, self.tracker.options.limits)
        image = checked.image
        continued = {i: parse_token(s) for i, s in enumerate(checked.states) if s is not None}
        _refuse_twice_named(continued)
        prompted = {i: continued.pop(i) for i in checked.again}
        digest = hashlib.blake2b(checked.data, digest_size=16).hexdigest()
        work = _Work(checked.starts, checked.again, checked.frames, prompted)
        try:
            answers = self._attempt(image, digest, work, continued, may_step=True)
        except StaleStateError:
            raise
        except StateConflictError as conflict:
            # Something committed first. If it was this very request (sent twice at once, or the
            # original of this retry committing while it read), its objects are now one version
            # on, stepped onto this frame: answer as it was answered.
            try:
                answers = self._attempt(image, digest, work, continued, may_step=False)
            except StateConflictError:
                raise conflict from None
        return {
            "shapes": [answer_shape(a.shape, a.stored.bare_points) for a in answers],
            "states": [token(a.handle, a.stored.version) for a in answers],
            "outside": [a.stored.outside for a in answers],
        }

    def _attempt(
        self,
        image: PIL.Image.Image,
        digest: str,
        work: _Work,
        continued: dict[int, tuple[str, int]],
        may_step: bool,
    ) -> list[_Answered]:
        """One transaction: steps what is at the version sent, answers repeats from the store,
        and commits every new version together."""
        answers: dict[int, _Answered] = {}
        watched = [handle for handle, _ in (*continued.values(), *work.prompted.values())]
        with self.store.transaction(watched) as tx:
            to_step, repeated = _plan(tx, continued, digest)
            if to_step and not may_step:
                raise StateConflictError(conflict_message())
            records = self._stepped(tx, image, digest, work, to_step, answers)
            lasts = tx.last_shapes(list(repeated.values())) if repeated else {}
            for index, handle in repeated.items():
                answers[index] = _Answered(handle, tx.stored(handle), lasts[handle])
            if records:
                tx.commit(records)
        return [answers[index] for index in sorted(answers)]

    def _stepped(
        self,
        tx: Transaction,
        image: PIL.Image.Image,
        digest: str,
        work: _Work,
        to_step: dict[int, str],
        answers: dict[int, _Answered],
    ) -> dict[str, Record]:
        """Starts and steps on this frame (one encoder pass, all steps in one batch call)."""
        if not work.starts and not work.again and not to_step:
            return {}  # a repeated request: no model work at all
        earlier = {i: _prompt_again(tx, i, work) for i in work.again}
        handles = [*to_step.values(), *(handle for handle, _ in work.prompted.values())]
        tracked = tx.states(handles)
        begun: dict[int, tuple[Shape, Record]] = {}  # new records: starts and prompts again
        with self.tracker.engine.session():
            frame = self.tracker.encode(image)
            for index, (shape, bare) in work.starts.items():
                obj = self.tracker.start(frame, shape)
                at = work.frames.get(index)
                stored = Stored(0, shape.type, obj.width, obj.height, bare, digest, prompt_frame=at)
                begun[index] = shape, Record(stored, obj)
            for index, shape in work.again.items():
                handle, (distance, walk) = work.prompted[index][0], earlier[index]
                obj = self.tracker.start(frame, shape, tracked[handle], distance)
                stored = Stored(0, shape.type, obj.width, obj.height, False, digest,
                                prompt_frame=work.frames[index], walk=walk,
                                offset=obj.object_state.frame_idx)  # fmt: skip
                begun[index] = shape, Record(stored, obj)
            objects = [tracked[handle] for handle in to_step.values()]
            shapes = self.tracker.step_many(frame, objects) if objects else []
        records: dict[str, Record] = {}
        for index, (shape, record) in begun.items():
            answers[index] = _Answered(new_handle(), record.stored, shape)
            records[answers[index].handle] = record
        # Lost from sight: answered with its last shape, which a store may read only now.
        unknown = [handle for handle in to_step.values() if tracked[handle].last_shape is None]
        for handle, last in (tx.last_shapes(unknown) if unknown else {}).items():
            tracked[handle].last_shape = last
        for (index, handle), obj, shape in zip(to_step.items(), objects, shapes, strict=True):
            before = tx.stored(handle)
            stored = dataclasses.replace(
                before, version=before.version + 1, digest=digest, outside=shape is None
            )
            answers[index] = _Answered(handle, stored, obj.last_shape)
            records[handle] = Record(stored, obj)
        return records


class _Work(NamedTuple):
    """A request's shapes: starts, prompts again (beside the state of the object each prompts
    again, by index) and the client's frame numbers."""

    starts: dict[int, tuple[Shape, bool]]
    again: dict[int, Shape]
    frames: dict[int, int]
    prompted: dict[int, tuple[str, int]]


def _prompt_again(tx: Transaction, index: int, work: _Work) -> tuple[int, int]:
    """The distance from the object's newest prompt and the walk's direction, checked: an object
    is prompted again at its newest version, further along one walk, when its frames are known."""
    handle, version = work.prompted[index]
    stored, at = tx.stored(handle), work.frames[index]
    _check_newest(stored, version)
    if stored.prompt_frame is None:
        raise RequestError(
            f"Object {index} cannot be prompted again: it was started from a shape without "
            'its "frame"; send the frame number in the shape that starts it.'
        )
    distance = at - stored.prompt_frame
    walk = (distance > 0) - (distance < 0)
    if walk == 0:
        raise RequestError(
            f"Object {index} was prompted on frame {at} already; prompt it again on another "
            "frame, or start it anew."
        )
    if stored.walk and walk != stored.walk:
        way = "after" if stored.walk > 0 else "before"
        raise RequestError(
            f"Object {index} can be prompted again only on a frame {way} frame "
            f"{stored.prompt_frame}, its newest prompt, further along the way it is tracked; "
            "start it anew to track it the other way."
        )
    return abs(distance), walk


def _refuse_twice_named(continued: dict[int, tuple[str, int]]) -> None:
    """One object twice in a request would be stepped twice onto one frame: refuse it."""
    first: dict[str, int] = {}
    for index, (handle, _) in continued.items():
        if handle in first:
            raise RequestError(
                f"Shapes {first[handle]} and {index} continue the same object; send each "
                "object's state once per request."
            )
        first[handle] = index


def _plan(
    tx: Transaction, continued: dict[int, tuple[str, int]], digest: str
) -> tuple[dict[int, str], dict[int, str]]:
    """Which objects to step (at the version sent) and which this request already stepped
    (one version on, onto this very frame); any other version refuses the whole request."""
    to_step, repeated = {}, {}
    for index, (handle, version) in continued.items():
        stored = tx.stored(handle)
        if stored.version == version + 1 and stored.digest == digest:
            repeated[index] = handle
        else:
            _check_newest(stored, version)
            to_step[index] = handle
    return to_step, repeated


def _check_newest(stored: Stored, version: int) -> None:
    """Refuse a state sent at any version but the object's newest, `stored`: an older one is
    stale (409: the object moved on since), a newer one was never given out (404)."""
    if stored.version > version:
        raise StaleStateError(stale_message())
    if stored.version < version:
        raise UnknownStateError(unknown_state_message())
