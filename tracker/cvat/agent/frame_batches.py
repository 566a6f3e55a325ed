"""One batch per frame for cvat-cli's agent, which asks for one tracked shape at a time.

The agent's worker runs one job per frame: `preprocess_image`, then `track` for each state, one
after the other, and the function never sees the list. But the objects it tracked together on
the previous frame are, almost always, the ones it asks for on this frame. So at the first
`track` call of a frame, `FrameBatches` steps that object and every other object of its cohort
(those last stepped, or started, on the same frame as it) as one batch,
`ShapeTracker.step_many`, and keeps each other object's result until the agent asks for it. A
result advances its object's state only when handed out: an object the agent does not ask for
on this frame keeps its state, and its unclaimed result (one memory entry more than its state,
not counted by the state budget) is dropped as soon as the agent moves on to another frame.
The benchmark (`benchmarks/compare_with_upstream.py`: "ours" is this, "single" each object
stepped on its own) measures the gain.
"""

from __future__ import annotations

import dataclasses
import weakref

from tracker.cvat.shape_tracker import Shape, ShapeTracker, TrackedObject
from tracker.engine.streaming import FrameFeatures, ObjectState


@dataclasses.dataclass
class _Ahead:
    """An object's step onto the cohort's frame, computed from its state `base` before it was
    asked for: `stepped` is the object's copy that `ShapeTracker.step_many` advanced."""

    base: ObjectState
    stepped: TrackedObject
    shape: Shape | None


class _Cohort:
    """The objects last stepped (or started) on one frame, and the steps computed ahead onto
    that frame for objects not yet asked for (they die with the cohort's frame)."""

    def __init__(self, frame: FrameFeatures) -> None:
        self.frame = weakref.ref(frame)
        self.members: weakref.WeakSet[TrackedObject] = weakref.WeakSet()
        self.ahead: weakref.WeakKeyDictionary[TrackedObject, _Ahead] = weakref.WeakKeyDictionary()


class FrameBatches:
    def __init__(self, tracker: ShapeTracker) -> None:
        self.tracker = tracker
        self._current: _Cohort | None = None  # the newest frame's: the agent goes frame by frame
        self._cohort: weakref.WeakKeyDictionary[TrackedObject, _Cohort] = (
            weakref.WeakKeyDictionary()
        )

    def started(self, frame: FrameFeatures, obj: TrackedObject) -> None:
        """`obj` was started on `frame`: objects started on one frame are batched from the next."""
        self._join(self._cohort_on(frame), obj)

    def step(self, frame: FrameFeatures, obj: TrackedObject) -> Shape | None:
        """`ShapeTracker.step(frame, obj)`, with the cohort of `obj` stepped along as one batch
        when this is the first of them asked for on `frame`."""
        current = self._cohort_on(frame)
        ahead = current.ahead.pop(obj, None)
        if ahead is not None and ahead.base is obj.object_state:
            obj.object_state, obj.last_shape = ahead.stepped.object_state, ahead.stepped.last_shape
            self._join(current, obj)
            return ahead.shape
        others = [o for o in self._cohort_of(obj) if o is not obj and self._can_join(o, current)]
        copies = [dataclasses.replace(o) for o in others]  # `step_many` gives each a new state
        try:
            shapes = self.tracker.step_many(frame, [obj, *copies])
        except RuntimeError:  # e.g. out of memory for the batch: this object alone decides
            if not copies:
                raise
            shapes = [self.tracker.step(frame, obj)]  # `obj` is unchanged by the failed batch
        for other, copy, shape in zip(others, copies, shapes[1:], strict=False):
            current.ahead[other] = _Ahead(other.object_state, copy, shape)
        self._join(current, obj)
        return shapes[0]

    def _cohort_of(self, obj: TrackedObject) -> list[TrackedObject]:
        cohort = self._cohort.get(obj)
        return [] if cohort is None else list(cohort.members)

    @staticmethod
    def _can_join(other: TrackedObject, current: _Cohort) -> bool:
        """Live, of this frame's size, and not stepped onto this frame already."""
        frame = current.frame()
        if other.object_state is None or frame is None:
            return False
        if (other.width, other.height) != (frame.width, frame.height):
            return False
        return other not in current.ahead and other not in current.members

    def _cohort_on(self, frame: FrameFeatures) -> _Cohort:
        """The cohort of `frame`, a new one (and the old one's results dropped) for a new frame."""
        if self._current is None or self._current.frame() is not frame:
            self._current = _Cohort(frame)
        return self._current

    def _join(self, cohort: _Cohort, obj: TrackedObject) -> None:
        previous = self._cohort.get(obj)
        if previous is not None and previous is not cohort:
            previous.members.discard(obj)
        cohort.members.add(obj)
        self._cohort[obj] = cohort
