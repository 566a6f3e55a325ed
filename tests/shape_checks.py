"""Independent references for checking shape conversions."""

from __future__ import annotations

import json

import cv2
import numpy as np
from cvat_sdk.masks import decode_mask


def largest_region_filled(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of `mask` with its holes filled."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count < 2:
        return np.zeros_like(mask, dtype=bool)
    region = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # Background reachable from outside the image (4-connected) is not a hole.
    padded = np.pad(region, 1).astype(np.uint8)
    outside = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, outside, (0, 0), 2, flags=4)
    return (padded != 2)[1:-1, 1:-1]


def assert_valid_shape(kind: str, points: list, width: int, height: int) -> None:
    """Valid CVAT data of type `kind` for a width x height image, as the agent must send it."""
    json.dumps(points)
    assert all(type(v) in (int, float) for v in points), "points must be plain Python numbers"
    if kind == "mask":
        assert decode_mask(points, image_width=width, image_height=height).any()
    elif kind == "polygon":
        assert len(points) >= 6 and len(points) % 2 == 0
        assert len(set(zip(points[0::2], points[1::2], strict=True))) >= 3
        assert min(points) >= 0 and max(points[0::2]) <= width and max(points[1::2]) <= height
    else:
        x1, y1, x2, y2 = points
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
