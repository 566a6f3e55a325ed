"""The CVAT tracking function for cvat-cli's agent: shapes in, SAM2 in between, shapes out.

It implements `cvat_sdk.auto_annotation.TrackingFunction` on top of `tracker.cvat.shape_tracker`.
Every error a user can fix is a `BadFunctionError` with a message saying what to do; anything else
would reach the user as "Unknown error".
"""

from __future__ import annotations

import functools

import cvat_sdk.auto_annotation as cvataa
import PIL.Image

from tracker.cvat.agent.base import AgentFunction
from tracker.cvat.agent.frame_batches import FrameBatches
from tracker.cvat.options import TrackerOptions
from tracker.cvat.shape_tracker import (
    SUPPORTED_SHAPE_TYPES,
    Shape,
    ShapeTracker,
    TrackedObject,
)
from tracker.cvat.state_budget import StateBudget, dropped_state_message
from tracker.engine.streaming import FrameFeatures, StreamingSam2


class Sam2TrackingFunction(AgentFunction):
    """SAM2 tracking of masks, polygons and rectangles for cvat-cli's agent."""

    spec = cvataa.TrackingFunctionSpec(supported_shape_types=SUPPORTED_SHAPE_TYPES)
    options_class = TrackerOptions
    stage = "track"

    def __init__(self, options: TrackerOptions) -> None:
        super().__init__(options)
        self.tracker = ShapeTracker(options)
        self.batches = FrameBatches(self.tracker)  # the agent asks for one shape at a time
        # The agent keeps every state for 8 hours with no cap on their number: bound them.
        self.budget = StateBudget(options.max_state_memory_mb * 1024 * 1024)

    @functools.cached_property
    def engine(self) -> StreamingSam2:
        """The model is loaded on first use, so registering the function needs no weights."""
        with self._reported("load"):
            return self.tracker.engine

    def load(self) -> None:
        self.engine  # noqa: B018 - built on first use

    def preprocess_image(
        self, context: cvataa.TrackingFunctionContext, image: PIL.Image.Image
    ) -> FrameFeatures:
        engine = self.engine
        with self._reported("encode"):
            return engine.encode(image)

    def init_tracking_state(
        self,
        context: cvataa.TrackingFunctionShapeContext,
        pp_image: FrameFeatures,
        shape: cvataa.TrackableShape,
    ) -> TrackedObject:
        with self._reported():
            state = self.tracker.start(pp_image, Shape(shape.type, shape.points))
        self.batches.started(pp_image, state)
        self.budget.add(state)
        return state

    def track(
        self,
        context: cvataa.TrackingFunctionShapeContext,
        pp_image: FrameFeatures,
        state: TrackedObject,
    ) -> cvataa.TrackableShape | None:
        with self._reported():
            if state.object_state is None:
                raise dropped_state_message(self.options.max_state_memory_mb)
            shape = self.batches.step(pp_image, state)
        self.budget.touch(state)
        return (
            None if shape is None else cvataa.TrackableShape(type=shape.type, points=shape.points)
        )


def create(**params: object) -> Sam2TrackingFunction:
    """The factory cvat-cli calls with the `-p name=type:value` parameters."""
    return Sam2TrackingFunction.created(params)
