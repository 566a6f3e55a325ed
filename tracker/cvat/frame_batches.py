"""One batch per frame for cvat-cli's agent, which asks for one tracked shape at a time.

The agent's worker runs one job per frame: `preprocess_image`, then `track` for each state, one
after the other, and the function never sees the list. But the objects it tracked together on
the previous frame are, almost always, the ones it asks for on this frame. So at the first
`track` call of a frame, `FrameBatches` steps that object and every other object of its cohort
(those last stepped, or started, on the same frame as it) as one batch,
`ShapeTracker.step_many`, and keeps each other object's result until the agent asks for it. A
result advances its object's state only when handed out: an object the agent does not ask for
on this frame keeps its state, and its unclaimed result (one memory entry more than its state,
not counted by the state budget) is dropped when the object is stepped on another frame or its
state is dropped.

The benchmark (`benchmarks/compare_with_upstream.py`: "ours" is this, "single" each object
stepped on its own) shows the gain on the CPU at 256 px, per frame against upstream's: 4 objects,
0.86x to 0.87x instead of 0.90x to 0.91x with one thread, 0.80x to 0.87x instead of 0.90x to
0.95x with two; 16 objects with two threads, 0.76x to 0.81x instead of 0.85x to 0.97x.
"""

from __future__ import annotations

import dataclasses
import weakref

from tracker.cvat.shape_tracker import Shape, ShapeTracker, TrackedObject
from tracker.engine.streaming import FrameFeatures, ObjectState


class _Cohort:
    """The objects last stepped (or started) on one frame."""

    def __init__(self, frame: FrameFeatures) -> None:
        self.frame = weakref.ref(frame)
        self.members: weakref.WeakSet[TrackedObject] = weakref.WeakSet()


@dataclasses.dataclass
class _Ahead:
    """An object's step onto `frame`, computed from its state `base` before it was asked for:
    `stepped` is the object's copy that `ShapeTracker.step_many` advanced."""

    frame: weakref.ref[FrameFeatures]
    base: ObjectState
    stepped: TrackedObject
    shape: Shape | None

    @staticmethod
    def of(obj: TrackedObject, frame: FrameFeatures) -> _Ahead | None:
        """The step of `obj` computed ahead onto `frame`, if there is one."""
        ahead = obj.ahead
        return ahead if isinstance(ahead, _Ahead) and ahead.frame() is frame else None


class FrameBatches:
    def __init__(self, tracker: ShapeTracker) -> None:
        self.tracker = tracker
        self._current: _Cohort | None = None  # the newest frame's: the agent goes frame by frame
        self._cohort: weakref.WeakKeyDictionary[TrackedObject, _Cohort] = (
            weakref.WeakKeyDictionary()
        )

    def started(self, frame: FrameFeatures, obj: TrackedObject) -> None:
        """`obj` was started on `frame`: objects started on one frame are batched from the next."""
        self._join(frame, obj)

    def step(self, frame: FrameFeatures, obj: TrackedObject) -> Shape | None:
        """`ShapeTracker.step(frame, obj)`, with the cohort of `obj` stepped along as one batch
        when this is the first of them asked for on `frame`."""
        ahead, obj.ahead = _Ahead.of(obj, frame), None
        if ahead is not None and ahead.base is obj.object_state:
            obj.object_state, obj.last_shape = ahead.stepped.object_state, ahead.stepped.last_shape
            self._join(frame, obj)
            return ahead.shape
        others = [o for o in self._cohort_of(obj) if o is not obj and self._can_join(o, frame)]
        copies = [dataclasses.replace(o, object_state=o.object_state.fork()) for o in others]
        try:
            shapes = self.tracker.step_many(frame, [obj, *copies])
        except RuntimeError:  # e.g. out of memory for the batch: this object alone decides
            if not copies:
                raise
            shapes = [self.tracker.step(frame, obj)]
        for other, copy, shape in zip(others, copies, shapes[1:], strict=False):
            other.ahead = _Ahead(weakref.ref(frame), other.object_state, copy, shape)
        self._join(frame, obj)
        return shapes[0]

    def _cohort_of(self, obj: TrackedObject) -> list[TrackedObject]:
        cohort = self._cohort.get(obj)
        return [] if cohort is None else list(cohort.members)

    @staticmethod
    def _can_join(other: TrackedObject, frame: FrameFeatures) -> bool:
        """Live, of this frame's size, and not stepped onto this frame already."""
        if other.object_state is None or (other.width, other.height) != (frame.width, frame.height):
            return False
        return _Ahead.of(other, frame) is None

    def _join(self, frame: FrameFeatures, obj: TrackedObject) -> None:
        if self._current is None or self._current.frame() is not frame:
            self._current = _Cohort(frame)
        previous = self._cohort.get(obj)
        if previous is not None and previous is not self._current:
            previous.members.discard(obj)
        self._current.members.add(obj)
        self._cohort[obj] = self._current
