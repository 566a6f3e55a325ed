"""The CVAT interaction function: clicks and boxes on a frame to a SAM2 mask.

It implements `cvat_sdk.auto_annotation.InteractionFunction` on top of
`tracker.engine.image_prompts`, with the same loading parameters as the tracker. The agent caches
`preprocess_image` results, so further clicks on the same frame only run SAM2's prompt encoder and
mask decoder; `max_embedding_memory_mb` bounds what those results hold.
"""

from __future__ import annotations

import functools

import cvat_sdk.auto_annotation as cvataa
import PIL.Image
from cvat_sdk import models

from tracker.cvat import shapes
from tracker.cvat.agent.base import AgentFunction
from tracker.cvat.options import InteractorOptions
from tracker.cvat.state_budget import StateBudget
from tracker.engine.image_prompts import ImageEmbedding, Sam2ImageSegmenter


class Sam2InteractionFunction(AgentFunction):
    # Points alone, a box alone, or both: nothing is required by the spec, so CVAT's UI accepts
    # each combination; a request with no prompt at all is refused by `detect` with a message.
    spec = cvataa.InteractionFunctionSpec(min_pos_points=0, min_neg_points=0, min_bounding_boxes=0)
    options_class = InteractorOptions
    stage = "embed"

    def __init__(self, options: InteractorOptions) -> None:
        super().__init__(options)
        # The agent keeps every embedding for 10 minutes with no cap on their number: bound them.
        # An embedding dropped here is computed again when its image is clicked once more.
        self.budget = StateBudget(options.max_embedding_memory_mb * 1024 * 1024, "embedding")

    @functools.cached_property
    def segmenter(self) -> Sam2ImageSegmenter:
        with self._reported("load"):
            return Sam2ImageSegmenter(self.options.model.load(), dtype=self.options.model.dtype)

    def load(self) -> None:
        self.segmenter  # noqa: B018 - built on first use

    def preprocess_image(
        self, context: cvataa.InteractionFunctionContext, image: PIL.Image.Image
    ) -> ImageEmbedding:
        segmenter = self.segmenter
        with self._reported():
            embedding = segmenter.embed(image)
        self.budget.add(embedding)
        return embedding

    def detect(
        self,
        context: cvataa.InteractionFunctionContext,
        pp_image: ImageEmbedding,
        prompts: cvataa.InteractionPrompts,
    ) -> list[cvataa.InteractionResultShape]:
        box = None
        if prompts.bounding_box is not None:
            (x1, y1), (x2, y2) = prompts.bounding_box
            box = (x1, y1, x2, y2)
        segmenter = self.segmenter
        recomputed = pp_image.features is None
        with self._reported():
            result = segmenter.segment(
                pp_image, list(prompts.pos_points), list(prompts.neg_points), box
            )
        if recomputed:
            self.budget.add(pp_image)
        else:
            self.budget.touch(pp_image)
        if not result.mask.any():
            return []
        confidence = models.AttributeValRequest(
            spec_id=cvataa.InteractionResultAttributes.CONFIDENCE, value=str(result.predicted_iou)
        )
        return [
            cvataa.InteractionResultShape(
                type="mask", points=shapes.rle_from_mask(result.mask), attributes=[confidence]
            )
        ]


def create(**params: object) -> Sam2InteractionFunction:
    """The factory cvat-cli calls with the `-p name=type:value` parameters."""
    return Sam2InteractionFunction.created(params)
