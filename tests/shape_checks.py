"""Independent references for checking shape conversions."""

from __future__ import annotations

import cv2
import numpy as np


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
