"""Click-to-segment with SAM2 on single images: one embedding per image, many prompts on it.

This drives upstream's `SAM2ImagePredictor`. Two adaptations, both configuration rather than
copies of its code:
- it hard-codes the backbone feature sizes of a 1024 px model (`_bb_feat_sizes`); they are
  derived here from the model's `image_size`, so smaller input sizes work;
- it keeps one image's features inside the predictor, whereas the agent caches several
  preprocessed images; each `ImageEmbedding` keeps its own features and is put back into the
  predictor before its prompts are decoded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import PIL.Image
import torch

from tracker.engine import upstream
from tracker.engine.frames import to_rgb
from tracker.engine.precision import inference_context
from tracker.engine.upstream import SAM2Base, SAM2ImagePredictor


class PromptError(ValueError):
    """Prompts that cannot be used; the message tells the user what to change."""


@dataclasses.dataclass(eq=False)
class ImageEmbedding:
    """One image's encoder output. A memory budget may `release` the features (16 MB at 1024 px);
    the 8-bit image stays, so that `Sam2ImageSegmenter.segment` can compute them again."""

    width: int
    height: int
    features: dict | None  # SAM2ImagePredictor's `_features` for this image; None once released
    image: np.ndarray  # the RGB pixels the features were computed from

    def nbytes(self) -> int:
        if self.features is None:
            return 0
        tensors = [self.features["image_embed"], *self.features["high_res_feats"]]
        return sum(t.numel() * t.element_size() for t in tensors)

    def release(self) -> None:
        self.features = None


@dataclasses.dataclass(frozen=True)
class Segmentation:
    mask: np.ndarray  # bool, the image's size
    predicted_iou: float


class Sam2ImageSegmenter:
    def __init__(self, model: SAM2Base, dtype: torch.dtype = torch.float32) -> None:
        self.device = model.device
        self.dtype = dtype
        self.predictor = SAM2ImagePredictor(model)
        upstream.set_backbone_feature_sizes(self.predictor, model.image_size)

    def embed(self, image: PIL.Image.Image) -> ImageEmbedding:
        """Run the image encoder (the expensive part) once for an image."""
        pixels = np.array(to_rgb(image))
        return ImageEmbedding(image.width, image.height, self._encoded(pixels), pixels)

    def _encoded(self, pixels: np.ndarray) -> dict:
        with inference_context(self.device, self.dtype):
            self.predictor.set_image(pixels)
        return upstream.image_features(self.predictor)

    def segment(
        self,
        embedding: ImageEmbedding,
        positive: list[tuple[float, float]],
        negative: list[tuple[float, float]],
        box: tuple[float, float, float, float] | None,
    ) -> Segmentation:
        """The best mask for points and/or a box, in image pixels."""
        points = _checked_points(positive + negative, embedding)
        if box is not None:
            box = _checked_box(box, embedding)
        if not points and box is None:
            raise PromptError("Give at least one point or a box around the object.")
        if not positive and box is None:
            # SAM2 still returns a mask for these, but of an arbitrary region: nothing says
            # which object is meant.
            raise PromptError(
                "Negative clicks only say what is not the object; add a positive click on the "
                "object or a box around it."
            )
        labels = [1] * len(positive) + [0] * len(negative)
        # One click alone is ambiguous (a part or the whole?): SAM2 proposes three masks and the
        # one it predicts best is kept. With more prompts a single mask is what SAM2 is trained for.
        multimask = len(points) == 1 and box is None
        if embedding.features is None:
            embedding.features = self._encoded(embedding.image)
        upstream.use_image_features(
            self.predictor, embedding.features, embedding.height, embedding.width
        )
        with inference_context(self.device, self.dtype):
            masks, ious, _ = self.predictor.predict(
                point_coords=np.array(points, dtype=np.float32) if points else None,
                point_labels=np.array(labels, dtype=np.int32) if points else None,
                box=np.array(box, dtype=np.float32) if box is not None else None,
                multimask_output=multimask,
            )
        best = int(np.argmax(ious))
        return Segmentation(masks[best] > 0, float(np.clip(ious[best], 0.0, 1.0)))


def _checked_points(points: list[tuple[float, float]], image: ImageEmbedding) -> list:
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(array).all():
        raise PromptError("A point has a NaN or infinite coordinate; click again.")
    inside = (array >= 0).all(axis=1) & (array[:, 0] <= image.width) & (array[:, 1] <= image.height)
    if not inside.all():
        x, y = array[~inside][0]
        raise PromptError(
            f"The point ({x:g}, {y:g}) is outside the {image.width}x{image.height} image; "
            "click on the image."
        )
    return array.tolist()


def _checked_box(box: tuple[float, float, float, float], image: ImageEmbedding) -> list[float]:
    values = np.asarray(box, dtype=np.float64)
    if not np.isfinite(values).all():
        raise PromptError("The box has a NaN or infinite coordinate; draw it again.")
    x1, x2 = np.clip(sorted(values[0::2]), 0, image.width)
    y1, y2 = np.clip(sorted(values[1::2]), 0, image.height)
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise PromptError("The box is empty or outside the image; draw a box around the object.")
    return [float(x1), float(y1), float(x2), float(y2)]
