"""CVAT's interactor protocol (Nuclio functions and the server) over the agent's interactor.

Request `{"image", "pos_points": [[x, y], ...], "neg_points": [...], "obj_bbox": [[x1, y1],
[x2, y2]] or null}`. The prompts are decoded and then served by `Sam2InteractionFunction.detect`,
the agent function's own code, so both give the same mask for the same clicks. The answer is
CVAT's current interactor form, `{"shapes": [{"type": "mask", "points": <CVAT RLE + box>,
"attributes": [{"spec_id": 0, "value": <confidence>}]}]}`; UIs before that form read only a
frame-sized `mask` (the form CVAT's own SAM2 function answers), given when configured so.

CVAT re-sends the whole frame with every click, so embeddings are cached by a hash of the
frame's bytes, least recently used out past a memory bound: further clicks on a frame run only
SAM2's prompt encoder and mask decoder.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
from cvat_sdk.masks import decode_mask

from tracker.cvat.agent.interaction import Sam2InteractionFunction
from tracker.cvat.lambda_protocol.lambda_envelope import (
    Answer,
    RequestError,
    answered,
    limit_error,
    request_image,
    request_object,
)
from tracker.engine.image_prompts import ImageEmbedding

Point = tuple[float, float]
Box = tuple[Point, Point]


class _Prompts(cvataa.InteractionPrompts):
    """The request's prompts in the form the agent's interaction function takes."""

    def __init__(self, pos: Sequence[Point], neg: Sequence[Point], box: Box | None) -> None:
        self._pos, self._neg, self._box = pos, neg, box

    @property
    def pos_points(self) -> Sequence[Point]:
        return self._pos

    @property
    def neg_points(self) -> Sequence[Point]:
        return self._neg

    @property
    def bounding_box(self) -> Box | None:
        return self._box


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{what} must be numbers.")
    return float(value)


def _points(request: dict[str, Any], key: str) -> list[Point]:
    raw = request.get(key) or []
    if not isinstance(raw, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 for p in raw
    ):
        raise RequestError(f"'{key}' must be a list of [x, y] points.")
    return [(_number(x, key), _number(y, key)) for x, y in raw]


def _box(request: dict[str, Any]) -> Box | None:
    raw = request.get("obj_bbox")
    if not raw:
        return None
    if isinstance(raw, list) and len(raw) == 4:  # also accept a flat [x1, y1, x2, y2]
        raw = [raw[:2], raw[2:]]
    if not isinstance(raw, list) or len(raw) != 2:
        raise RequestError("'obj_bbox' must be [[x1, y1], [x2, y2]] or null.")
    (x1, y1), (x2, y2) = _points({"obj_bbox": raw}, "obj_bbox")
    return (x1, y1), (x2, y2)


def embedding_nbytes(embedding: ImageEmbedding) -> int:
    """The features and the pixels an embedding keeps (to compute its features again)."""
    return embedding.nbytes() + embedding.image.nbytes


class EmbeddingCache:
    """Embeddings by a hash of the encoded frame, least recently used out past `max_bytes`.

    The interaction function's own budget (`max_embedding_memory_mb`) bounds the features of all
    embeddings alive; this cache bounds what it keeps alive, pixels included, by the same amount.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[bytes, tuple[ImageEmbedding, int]] = (
            collections.OrderedDict()
        )
        self._total = 0
        self._lock = threading.Lock()

    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> ImageEmbedding | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: bytes, embedding: ImageEmbedding) -> None:
        size = embedding_nbytes(embedding)
        with self._lock:
            if key in self._entries or size > self.max_bytes:
                return
            self._entries[key] = (embedding, size)
            self._total += size
            while self._total > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._total -= dropped


class LambdaInteractor:
    """CVAT's interactor protocol over the agent's interaction function."""

    def __init__(
        self, function: Sam2InteractionFunction, max_embedding_bytes: int, answer: str = "shapes"
    ) -> None:
        self.function = function
        self.cache = EmbeddingCache(max_embedding_bytes)
        self.answer = answer

    def handle(self, body: object) -> Answer:
        return answered(lambda: self.interact(request_object(body)))

    def interact(self, request: dict[str, Any]) -> dict[str, Any]:
        limits = self.function.options.limits
        positive, negative = _points(request, "pos_points"), _points(request, "neg_points")
        if len(positive) + len(negative) > limits.max_clicks:
            what = f"The request carries {len(positive) + len(negative):,} clicks"
            raise limit_error(what, "max_clicks", limits.max_clicks)
        prompts = _Prompts(positive, negative, _box(request))
        image, data = request_image(request, limits)
        embedding = self._embedding(image, data)
        shapes = self.function.detect(None, embedding, prompts)  # type: ignore[arg-type]
        if self.answer == "mask":
            width, height = image.width, image.height
            mask = np.zeros((height, width), dtype=np.uint8)
            for shape in shapes:
                mask |= decode_mask(shape.points, image_width=width, image_height=height)
            return {"mask": mask.tolist()}
        return {
            "shapes": [
                {
                    "type": shape.type,
                    "points": shape.points,
                    "attributes": [
                        {"spec_id": a.spec_id, "value": a.value} for a in shape.attributes
                    ],
                }
                for shape in shapes
            ]
        }

    def _embedding(self, image: PIL.Image.Image, data: bytes) -> ImageEmbedding:
        key = hashlib.sha256(data).digest()
        embedding = self.cache.get(key)
        if embedding is None:
            embedding = self.function.preprocess_image(None, image)  # type: ignore[arg-type]
            self.cache.put(key, embedding)
        return embedding
