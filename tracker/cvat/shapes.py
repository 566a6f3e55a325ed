"""CVAT shapes <-> binary masks: decode and check what users drew, encode what SAM2 tracked.

One pixel convention end to end, CVAT's canvas's and SAM2's prompts': pixel (x, y) is the square
[x, x + 1) x [y, y + 1), centred on (x + 0.5, y + 0.5), and a polygon or rectangle covers the
pixels whose centres it contains. So the tight rectangle of a mask whose pixels run from x1 to x2
is [x1, x2 + 1], and a polygon runs through the centres of the region's border pixels. OpenCV
(`fillPoly`, `findContours`) centres pixels on integer points instead: coordinates are shifted by
half a pixel where they pass through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from cvat_sdk.masks import decode_mask, encode_mask

# Polygon vertices are rasterised with 4 fractional bits (1/16 px) instead of being truncated.
_SUBPIXEL_BITS = 4
# Beyond this, fixed-point coordinates would overflow OpenCV's int32; no real drawing gets there.
_MAX_COORDINATE = float(1 << 24)
# CVAT's coordinate of an OpenCV pixel's centre.
_HALF_PIXEL = 0.5


class ShapeError(ValueError):
    """A shape that cannot be tracked; the message tells the user what to change."""


def _numbers(points: Sequence[float], what: str) -> np.ndarray:
    try:
        values = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ShapeError(f"The {what}'s points must be numbers; redraw it.") from e
    if values.ndim != 1:
        raise ShapeError(f"The {what}'s points must be a flat list of numbers; redraw it.")
    if not np.isfinite(values).all():
        raise ShapeError(f"The {what} has coordinates that are NaN or infinite; redraw it.")
    return values


def mask_from_rle(points: Sequence[float], width: int, height: int) -> np.ndarray:
    """Decode CVAT's mask format (run lengths, then an inclusive box) and check it."""
    values = _numbers(points, "mask")
    if values.size >= 5:
        runs = values[:-4]
        if (runs < 0).any() or runs.sum() > width * height:
            raise ShapeError(
                "The mask's run lengths do not fit the image; redraw the mask or re-export it."
            )
    try:
        mask = decode_mask(points, image_width=width, image_height=height)
    except (ValueError, TypeError) as e:
        raise ShapeError(
            f"The mask is not valid CVAT mask data for a {width}x{height} image ({e}); "
            "redraw the mask on this frame."
        ) from e
    if not mask.any():
        raise ShapeError("The mask is empty; paint the object before tracking it.")
    return mask


def mask_from_polygon(points: Sequence[float], width: int, height: int) -> np.ndarray:
    """Rasterise a polygon [x1, y1, x2, y2, ...] with sub-pixel rounding."""
    values = _numbers(points, "polygon")
    if values.size % 2:
        raise ShapeError("The polygon has an odd number of coordinates; redraw it.")
    vertices = values.reshape(-1, 2)
    if len(np.unique(vertices, axis=0)) < 3:
        raise ShapeError("The polygon needs at least 3 distinct points; redraw it.")
    if np.abs(vertices).max() > _MAX_COORDINATE:
        raise ShapeError("The polygon has points far outside the image; redraw it.")
    fixed = np.round((vertices - _HALF_PIXEL) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    # fillPoly covers the pixels whose centres are inside or on the polygon, rounding ties (a
    # vertex on a pixel's edge, as every rectangle's has) up: a rectangle [0, 0, 2, 2] would cover
    # 3x3 pixels. Covering only what both of two copies shifted by -/+ 1/16 px cover leaves the
    # centres on an edge out on every side, and nothing else changes.
    masks = [np.zeros((height, width), dtype=np.uint8) for _ in range(2)]
    for mask, offset in zip(masks, (-1, 1), strict=True):
        cv2.fillPoly(mask, [fixed + offset], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    mask = masks[0] & masks[1]
    if not mask.any():
        raise ShapeError(
            "The polygon covers no pixel's centre in the image; redraw it around the object."
        )
    return mask.astype(bool)


def box_from_rectangle(
    points: Sequence[float], width: int, height: int
) -> tuple[float, float, float, float]:
    """Check a rectangle [x1, y1, x2, y2] and clip it to the image."""
    values = _numbers(points, "rectangle")
    if values.size != 4:
        raise ShapeError("A rectangle needs exactly 4 coordinates (x1, y1, x2, y2); redraw it.")
    x1, x2 = sorted(values[0::2])
    y1, y2 = sorted(values[1::2])
    if x1 == x2 or y1 == y2:
        raise ShapeError("The rectangle has zero area; draw a box around the object.")
    x1, x2 = np.clip([x1, x2], 0, width)
    y1, y2 = np.clip([y1, y2], 0, height)
    if x1 == x2 or y1 == y2:
        raise ShapeError("The rectangle lies entirely outside the image; draw it on the image.")
    return float(x1), float(y1), float(x2), float(y2)


def mask_from_rectangle(points: Sequence[float], width: int, height: int) -> np.ndarray:
    """The pixels a rectangle [x1, y1, x2, y2] covers: those its polygon covers."""
    x1, y1, x2, y2 = box_from_rectangle(points, width, height)
    return mask_from_polygon([x1, y1, x2, y1, x2, y2, x1, y2], width, height)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """[x1, x2) x [y1, y2) around a non-empty mask; cheaper than listing its pixels."""
    columns, rows = mask.any(axis=0), mask.any(axis=1)
    x1, y1 = int(columns.argmax()), int(rows.argmax())
    x2, y2 = len(columns) - int(columns[::-1].argmax()), len(rows) - int(rows[::-1].argmax())
    return x1, y1, x2, y2


def rle_from_mask(mask: np.ndarray, x: int = 0, y: int = 0) -> list[int]:
    """CVAT's mask format for `mask`, placed at (x, y) of the frame (a crop of a frame-sized
    mask that holds all its pixels encodes as the whole mask would)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return encode_mask(mask)
    points = encode_mask(mask, bbox=_tight_box(mask))
    points[-4:] = [v + offset for v, offset in zip(points[-4:], (x, y, x, y), strict=True)]
    return points


def rectangle_from_mask(mask: np.ndarray, x: int = 0, y: int = 0) -> list[float]:
    """The tight box of a non-empty mask (placed at (x, y)), in CVAT's corner coordinates."""
    return [float(v + o) for v, o in zip(_tight_box(mask), (x, y, x, y), strict=True)]


def polygon_from_mask(mask: np.ndarray, tolerance: float, x: int = 0, y: int = 0) -> list[float]:
    """The outline of a non-empty mask's largest region, simplified within `tolerance` pixels.

    A CVAT polygon is one ring, so other regions and holes are left out. The result always has
    at least 3 distinct points inside the image. `mask` may be a crop at (x, y) of a frame's mask
    that holds all its pixels: the outline is the same.
    """
    contours, _ = cv2.findContours(
        np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    if tolerance > 0:
        simplified = cv2.approxPolyDP(contour, tolerance, closed=True)
        if len(np.unique(simplified.reshape(-1, 2), axis=0)) >= 3:
            contour = simplified
    vertices = contour.reshape(-1, 2).astype(np.float64) + (x, y)
    if cv2.contourArea(contour) == 0:
        # A region one pixel thin has a ring of no area through its pixels' centres: outline the
        # pixels' squares instead (the region's tight rectangle).
        (x1, y1), (x2, y2) = vertices.min(axis=0), vertices.max(axis=0) + 1
        return [float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]
    return [float(v) for v in (vertices + _HALF_PIXEL).ravel()]
