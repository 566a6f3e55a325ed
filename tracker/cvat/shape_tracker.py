"""CVAT shapes tracked by the streaming engine: the one code path under every tracker entry point.

The agent function (`tracker.cvat.agent.tracking`), the CVAT lambda protocol behind the Nuclio
functions and the server (`tracker.cvat.lambda_protocol.lambda_api`) and the CLI all start and step
objects here, so shapes are decoded, checked and encoded the same way whichever way CVAT reaches us.
Errors a user can fix are the `ValueError` subclasses listed in `tracker.cvat.user_errors`; each
entry point turns them into its protocol's kind of error.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import PIL.Image

from tracker.cvat import shapes
from tracker.cvat.options import TrackerOptions
from tracker.cvat.user_errors import memory_stage
from tracker.engine.frames import FrameError, to_rgb
from tracker.engine.results import on_host
from tracker.engine.streaming import FrameFeatures, ObjectState, Prediction, StreamingSam2

SUPPORTED_SHAPE_TYPES = ("mask", "polygon", "rectangle")

# `to_rgb` (a frame in 8-bit RGB as SAM2 sees it, 16-bit greyscale too) is re-exported for the
# entry points to draw on: they know this layer, not the engine.
__all__ = ["SUPPORTED_SHAPE_TYPES", "Shape", "ShapeTracker", "TrackedObject", "to_rgb"]


class Shape(NamedTuple):
    """A CVAT shape: its type and its points in CVAT's format for that type."""

    type: str
    points: list[float]


@dataclasses.dataclass(eq=False)
class TrackedObject:
    """One tracked shape: the engine's state (None once dropped by a budget), its type, the size
    of the frames it is tracked on, and its last shape (what CVAT's AI Tools are answered while
    SAM2 sees no object: they cannot take a missing shape). What one protocol alone needs of an
    object lives in that protocol's adapter."""

    object_state: ObjectState | None
    shape_type: str
    width: int
    height: int
    last_shape: Shape | None = None

    def nbytes(self) -> int:
        return self.object_state.nbytes() if self.object_state is not None else 0

    def release(self) -> None:
        self.object_state = None


class ShapeTracker:
    """Starts objects from CVAT shapes and steps them, answering shapes of the same type."""

    def __init__(self, options: TrackerOptions) -> None:
        self.options = options

    @property
    def model_key(self) -> str:
        """What a stored state must have been made with to be stepped here."""
        model = self.options.model
        size = model.image_size or "native"
        return f"{model.reference.describe()}|{model.reference.config_name}|{size}"

    @functools.cached_property
    def engine(self) -> StreamingSam2:
        """Built on first use, so that checking the options needs no weights."""
        return StreamingSam2(
            self.options.model.load(),
            dtype=self.options.model.dtype,
            max_conditioning_frames=self.options.max_conditioning_frames,
        )

    def encode(self, image: PIL.Image.Image) -> FrameFeatures:
        """One image-encoder pass per frame, shared by every object tracked on it."""
        with memory_stage("encode"):  # the advice fits the frame, not the objects
            return self.engine.encode(image)

    def start(
        self,
        frame: FrameFeatures,
        shape: Shape,
        earlier: TrackedObject | None = None,
        distance: int = 0,
    ) -> TrackedObject:
        """Start tracking `shape`, drawn on `frame`. With `earlier` (not changed), the object
        is prompted again `distance` frames past its newest prompt in its walk, and stays
        conditioned on its earlier prompts (`StreamingSam2.start_from_mask`)."""
        width, height = frame.width, frame.height
        before = None
        if earlier is not None:
            self._check_size(frame, earlier)
            before = earlier.object_state
        prompt = {"earlier": before, "distance": distance}
        if shape.type == "rectangle":
            # A box is SAM2's own prompt for "the object in here": it segments the object and
            # tracks that. Filling the rectangle as a mask would instead make SAM2 track a
            # rectangle of object and background alike, and its boxes would drift with it.
            box = shapes.box_from_rectangle(shape.points, width, height)
            object_state, _ = self.engine.start_from_box(frame, box, **prompt)
        elif shape.type == "polygon":
            mask = shapes.mask_from_polygon(shape.points, width, height)
            object_state, _ = self.engine.start_from_mask(frame, mask, **prompt)
        elif shape.type == "mask":
            mask = shapes.mask_from_rle(shape.points, width, height)
            object_state, _ = self.engine.start_from_mask(frame, mask, **prompt)
        else:
            raise shapes.ShapeError(
                f"Shapes of type {shape.type!r} cannot be tracked; "
                f"use one of: {', '.join(SUPPORTED_SHAPE_TYPES)}."
            )
        return TrackedObject(object_state, shape.type, width, height, last_shape=shape)

    def step(self, frame: FrameFeatures, tracked: TrackedObject) -> Shape | None:
        """Track `tracked` onto `frame`: its shape there, or None when SAM2 says it is gone.

        `tracked.object_state` advances; callers that must be able to discard the step (a store
        that commits only what succeeded) pass a fork of it.
        """
        return self.step_many(frame, [tracked])[0]

    def step_many(
        self, frame: FrameFeatures, tracked: Sequence[TrackedObject]
    ) -> list[Shape | None]:
        """`step` for every object tracked on `frame`, with objects started together stepped as
        one batch by the engine. No state changes unless every object can be stepped and its
        result read: the engine steps copies, which replace the states only at the end."""
        for obj in tracked:
            self._check_size(frame, obj)
        states = [obj.object_state.fork() for obj in tracked]
        predictions = on_host(self.engine.step_many(frame, states))  # one copy of all results
        shapes_out = [
            self.shape(p, obj.shape_type) for obj, p in zip(tracked, predictions, strict=True)
        ]
        for obj, state, shape in zip(tracked, states, shapes_out, strict=True):
            obj.object_state = state
            if shape is not None:
                obj.last_shape = shape
        return shapes_out

    @staticmethod
    def _check_size(frame: FrameFeatures, obj: TrackedObject) -> None:
        if (frame.width, frame.height) != (obj.width, obj.height):
            raise FrameError(
                f"This frame is {frame.width}x{frame.height}, but the object was started on a "
                f"{obj.width}x{obj.height} frame; track within frames of one size."
            )
        assert obj.object_state is not None, "dropped states are refused by their holder"

    def shape(self, prediction: Prediction, shape_type: str) -> Shape | None:
        """The tracked shape in its original type, or None when SAM2 says the object is gone.

        Encoded from the crop of the mask that holds all its pixels (`Prediction.mask_crop`):
        the same shape as from the whole frame's mask, for a fraction of the work.
        """
        if not prediction.present:
            return None
        crop = prediction.mask_crop()
        if crop is None:
            return None
        if shape_type == "mask":
            points = shapes.rle_from_mask(crop.mask, crop.x, crop.y)
        elif shape_type == "polygon":
            points = shapes.polygon_from_mask(
                crop.mask, self.options.polygon_tolerance, crop.x, crop.y
            )
        else:
            points = shapes.rectangle_from_mask(crop.mask, crop.x, crop.y)
        return Shape(shape_type, points)
