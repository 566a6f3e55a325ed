"""The CVAT tracking function: shapes in, SAM2 in between, shapes of the same type out.

It implements `cvat_sdk.auto_annotation.TrackingFunction` on top of `tracker.engine`. Every error a
user can fix is a `BadFunctionError` with a message saying what to do; anything else would reach
the user as "Unknown error".
"""

from __future__ import annotations

import dataclasses
import functools

import cvat_sdk.auto_annotation as cvataa
import PIL.Image

from tracker import shapes
from tracker.engine import FrameFeatures, ObjectState, Prediction, StreamingSam2
from tracker.options import TrackerOptions
from tracker.state_budget import StateBudget
from tracker.user_errors import reported_to_user

SUPPORTED_SHAPE_TYPES = ("mask", "polygon", "rectangle")


@dataclasses.dataclass(eq=False)
class TrackingState:
    """One tracked shape: the engine's state (None once dropped by the budget) and its type."""

    object_state: ObjectState | None
    shape_type: str

    def nbytes(self) -> int:
        return self.object_state.nbytes() if self.object_state is not None else 0

    def release(self) -> None:
        self.object_state = None


class Sam2TrackingFunction:
    """SAM2 tracking of masks, polygons and rectangles for cvat-cli's agent."""

    spec = cvataa.TrackingFunctionSpec(supported_shape_types=SUPPORTED_SHAPE_TYPES)

    def __init__(self, options: TrackerOptions) -> None:
        self.options = options
        self.budget = StateBudget(options.max_state_memory_mb * 1024 * 1024)

    @functools.cached_property
    def engine(self) -> StreamingSam2:
        """The model is loaded on first use, so registering the function needs no weights."""
        with reported_to_user():
            return StreamingSam2(self.options.model.load(), dtype=self.options.model.dtype)

    def preprocess_image(
        self, context: cvataa.TrackingFunctionContext, image: PIL.Image.Image
    ) -> FrameFeatures:
        with reported_to_user():
            return self.engine.encode(image)

    def init_tracking_state(
        self,
        context: cvataa.TrackingFunctionShapeContext,
        pp_image: FrameFeatures,
        shape: cvataa.TrackableShape,
    ) -> TrackingState:
        width, height = pp_image.width, pp_image.height
        with reported_to_user():
            if shape.type == "rectangle":
                # A box is SAM2's own prompt for "the object in here": it segments the object and
                # tracks that. Filling the rectangle as a mask would instead make SAM2 track a
                # rectangle of object and background alike, and its boxes would drift with it.
                box = shapes.box_from_rectangle(shape.points, width, height)
                object_state, _ = self.engine.start_from_box(pp_image, box)
            elif shape.type == "polygon":
                mask = shapes.mask_from_polygon(shape.points, width, height)
                object_state, _ = self.engine.start_from_mask(pp_image, mask)
            elif shape.type == "mask":
                mask = shapes.mask_from_rle(shape.points, width, height)
                object_state, _ = self.engine.start_from_mask(pp_image, mask)
            else:
                raise shapes.ShapeError(
                    f"Shapes of type {shape.type!r} cannot be tracked; "
                    f"use one of: {', '.join(SUPPORTED_SHAPE_TYPES)}."
                )
        state = TrackingState(object_state, shape.type)
        self.budget.add(state)
        return state

    def track(
        self,
        context: cvataa.TrackingFunctionShapeContext,
        pp_image: FrameFeatures,
        state: TrackingState,
    ) -> cvataa.TrackableShape | None:
        if state.object_state is None:
            raise cvataa.BadFunctionError(
                "This object's tracking state was dropped to keep the agent's memory within "
                f"max_state_memory_mb={self.options.max_state_memory_mb}; run the tracker again "
                "from the current frame (or start the agent with a larger max_state_memory_mb)."
            )
        prediction = self.engine.step(pp_image, state.object_state)
        self.budget.touch(state)
        return self._shape(prediction, state.shape_type)

    def _shape(self, prediction: Prediction, shape_type: str) -> cvataa.TrackableShape | None:
        """The tracked shape in its original type, or None when SAM2 says the object is gone."""
        if not prediction.present:
            return None
        mask = prediction.mask()
        if not mask.any():
            return None
        if shape_type == "mask":
            points = shapes.rle_from_mask(mask)
        elif shape_type == "polygon":
            points = shapes.polygon_from_mask(mask, self.options.polygon_tolerance)
        else:
            points = shapes.rectangle_from_mask(mask)
        return cvataa.TrackableShape(type=shape_type, points=points)


def create(**params: object) -> Sam2TrackingFunction:
    """The factory cvat-cli calls with the `-p name=type:value` parameters."""
    with reported_to_user():
        return Sam2TrackingFunction(TrackerOptions.from_params(params))
