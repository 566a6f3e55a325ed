"""Shape conversions between CVAT's formats and binary masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sam2_runs import iou

from tracker.cvat import shapes
from tracker.devtools.synthetic import object_mask


def _blob(seed: int, width: int = 200, height: int = 150) -> np.ndarray:
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 12)
    center = smooth[height // 2 - 20 : height // 2 + 20, width // 2 - 20 : width // 2 + 20]
    return smooth > np.median(center)


@pytest.mark.parametrize(
    "mask",
    [
        object_mask(320, 240, (160, 120), (45, 40)),
        object_mask(64, 48, (20, 30), (6, 4)),
        object_mask(320, 240, (5, 5), (60, 30)),  # cut by the image border
        *[
            shapes.mask_from_polygon(shapes.polygon_from_mask(_blob(s), 0), 200, 150)
            for s in (1, 2)
        ],
    ],
)
def test_polygon_outline_matches_region_at_default_tolerance(mask):
    height, width = mask.shape
    polygon = shapes.polygon_from_mask(mask, tolerance=1.0)
    xs, ys = polygon[0::2], polygon[1::2]
    assert len(set(zip(xs, ys, strict=True))) >= 3
    assert min(xs) >= 0 and max(xs) < width and min(ys) >= 0 and max(ys) < height
    assert iou(shapes.mask_from_polygon(polygon, width, height), mask) >= 0.95


def test_polygon_without_simplification_round_trips_exactly():
    mask = object_mask(320, 240, (100, 90), (50, 30))
    polygon = shapes.polygon_from_mask(mask, tolerance=0)
    assert np.array_equal(shapes.mask_from_polygon(polygon, 320, 240), mask)


def test_polygon_vertices_snap_to_the_nearest_pixel_centre():
    square = [10.6, 10.6, 20.6, 10.6, 20.6, 20.6, 10.6, 20.6]
    mask = shapes.mask_from_polygon(square, 40, 40)
    ys, xs = np.nonzero(mask)
    # Pixel 10's centre is at 10.5, the nearest to 10.6, and pixel 20's at 20.5. Ignoring the
    # half-pixel shift of OpenCV's convention and rounding would give 11 to 21.
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 20, 10, 20)


def test_one_pixel_region_becomes_a_small_square():
    mask = np.zeros((10, 10), dtype=bool)
    mask[9, 9] = True
    polygon = shapes.polygon_from_mask(mask, tolerance=1.0)
    assert polygon == [9.0, 9.0, 10.0, 9.0, 10.0, 10.0, 9.0, 10.0]


def test_rle_round_trip_and_rectangle():
    mask = object_mask(320, 240, (160, 120), (45, 40))
    rle = shapes.rle_from_mask(mask)
    assert all(type(v) is int for v in rle)
    assert np.array_equal(shapes.mask_from_rle(rle, 320, 240), mask)
    ys, xs = np.nonzero(mask)
    assert shapes.rectangle_from_mask(mask) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_rectangle_is_ordered_and_clipped_to_the_image():
    assert shapes.box_from_rectangle([50, 60, -10, 5], 40, 30) == (0.0, 5.0, 40.0, 30.0)


def test_rle_is_cvat_sdks_encoding_of_random_masks():
    from cvat_sdk.masks import encode_mask

    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = np.zeros((rng.integers(1, 40), rng.integers(1, 40)), dtype=bool)
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, mask.shape[0]), rng.integers(0, mask.shape[1])
            mask[y : y + rng.integers(1, 15), x : x + rng.integers(1, 15)] = True
        assert shapes.rle_from_mask(mask) == encode_mask(mask)
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert shapes.rectangle_from_mask(mask) == [
                xs.min(),
                ys.min(),
                xs.max() + 1,
                ys.max() + 1,
            ]


def _line(width: int, height: int, row: int, columns: slice) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[row, columns] = True
    return mask


@pytest.mark.parametrize(
    "mask",
    [
        _line(10, 10, 9, slice(9, 10)),  # one pixel in the corner
        _line(10, 10, 4, slice(4, 5)),  # one pixel inside
        _line(12, 8, 3, slice(2, 9)),  # a line one pixel thin
        np.pad(np.ones((2, 3), bool), ((3, 4), (5, 1))),
        object_mask(64, 48, (20, 30), (6, 4)),
        object_mask(320, 240, (5, 5), (60, 30)),  # cut by the image border
    ],
)
def test_mask_polygon_and_rectangle_of_one_object_agree_to_the_pixel(mask):
    """One convention end to end: pixel (x, y) is the square [x, x + 1) x [y, y + 1), and a
    shape covers the pixels whose centres it contains, as in CVAT's canvas and SAM2's prompts."""
    height, width = mask.shape
    x1, y1, x2, y2 = rectangle = shapes.rectangle_from_mask(mask)
    box_pixels = np.zeros_like(mask)
    box_pixels[int(y1) : int(y2), int(x1) : int(x2)] = True
    assert np.array_equal(shapes.mask_from_rectangle(rectangle, width, height), box_pixels)
    as_polygon = [x1, y1, x2, y1, x2, y2, x1, y2]
    assert np.array_equal(shapes.mask_from_polygon(as_polygon, width, height), box_pixels)
    polygon = shapes.polygon_from_mask(mask, tolerance=0)
    assert np.array_equal(shapes.mask_from_polygon(polygon, width, height), mask)
    xs, ys = polygon[0::2], polygon[1::2]
    assert x1 <= min(xs) and max(xs) <= x2 and y1 <= min(ys) and max(ys) <= y2
