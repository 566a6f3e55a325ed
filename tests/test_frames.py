"""Frames of every image mode become SAM2's RGB input by one fixed mapping per mode, and SAM2's
input bit for bit as upstream's video loader makes it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import PIL.Image
import pytest
import torch
from sam2.utils.misc import _load_img_as_tensor

from tracker.engine.frames import (
    IMAGE_MEAN,
    IMAGE_STD,
    to_model_input,
    to_rgb,
    upstream_model_input,
)


def _grey(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(to_rgb(image))[..., 0]


@pytest.mark.parametrize(
    ("dtype", "mode_values"),
    [(np.uint16, (200, 300)), (np.int32, (200, 300)), (np.float32, (0.2, 0.9))],
    ids=["I;16", "I", "F"],
)
def test_one_bright_pixel_does_not_change_the_other_pixels(dtype, mode_values):
    # Thermal and raw footage: a dim frame, then the same frame with one hot pixel. Scaling each
    # frame by its own range would make the second one nearly black and tracking collapse.
    dim_value, hot_value = mode_values
    dim = np.full((8, 8), dim_value, dtype=dtype)
    hot = dim.copy()
    hot[0, 0] = hot_value
    dim_rgb, hot_rgb = _grey(PIL.Image.fromarray(dim)), _grey(PIL.Image.fromarray(hot))
    assert np.array_equal(dim_rgb[1:], hot_rgb[1:])
    assert hot_rgb[0, 0] >= dim_rgb[0, 0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 257, 65535]], np.uint16), [0, 1, 255]),  # I;16: the full 16-bit range
        (np.array([[0, 257, 70000, -5]], np.int32), [0, 1, 255, 0]),  # I: as 16 bits, clipped
        (np.array([[0.0, 0.5, 1.0, 7.0, np.nan]], np.float32), [0, 128, 255, 255, 0]),  # F: 0..1
    ],
    ids=["I;16", "I", "F"],
)
def test_each_mode_has_a_fixed_mapping(values, expected):
    assert _grey(PIL.Image.fromarray(values)).ravel().tolist() == expected


@pytest.mark.parametrize("image_size", [64, 256, 1024])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_model_input_is_upstreams_bit_for_bit(tmp_path, image_size, mode):
    rng = np.random.default_rng(image_size)
    pixels = rng.integers(0, 256, size=(67, 101, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(pixels).convert(mode)
    ours = to_model_input(image, image_size)
    assert ours.dtype == torch.float32 and ours.shape == (3, image_size, image_size)
    assert torch.equal(ours, upstream_model_input(image, image_size))
    if mode == "RGB":  # upstream's own loader, from a file, then normalised as upstream does
        path = tmp_path / "frame.png"
        image.save(path)
        loaded, _, _ = _load_img_as_tensor(str(path), image_size)
        # the loader stores float32 into its frames tensor, then normalises
        assert torch.equal(ours, (loaded.to(torch.float32) - IMAGE_MEAN) / IMAGE_STD)


def test_every_8_bit_value_maps_as_upstream_does():
    values = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(16, 16, 3)
    image = PIL.Image.fromarray(values)
    assert torch.equal(to_model_input(image, 16), upstream_model_input(image, 16))


def _whole_frame_reference(values: np.ndarray, mode: str, image_size: int) -> torch.Tensor:
    """The fixed mapping on the whole frame at once, RGB, then upstream's steps: what the
    frame-by-bands and resize-greyscale-first path must equal bit for bit."""
    scale = 255.0 if mode == "F" else 1 / 257
    wide = values.astype(np.float64 if mode == "F" else np.int64)
    grey = np.clip(np.nan_to_num(wide * scale), 0, 255).round().astype(np.uint8)
    rgb = PIL.Image.fromarray(grey, mode="L").convert("RGB")
    pixels = np.array(rgb.resize((image_size, image_size)))
    tensor = torch.from_numpy(pixels / 255.0).permute(2, 0, 1).to(torch.float32)
    return (tensor - IMAGE_MEAN) / IMAGE_STD


@pytest.mark.parametrize("image_size", [64, 256])
@pytest.mark.parametrize("mode", ["I;16", "I", "F", "L"])
def test_greyscale_frames_of_every_depth_give_the_whole_frame_mapping(mode, image_size):
    rng = np.random.default_rng(7)
    height = 600  # more rows than one band of the conversion
    if mode == "F":
        values = rng.uniform(-0.2, 1.2, (height, 301)).astype(np.float32)
        values[5, 5] = np.nan
    elif mode == "L":
        values = rng.integers(0, 256, (height, 301), dtype=np.uint8)
    else:
        dtype = np.uint16 if mode == "I;16" else np.int32
        values = rng.integers(0 if mode == "I;16" else -3000, 65536, (height, 301)).astype(dtype)
    image = PIL.Image.fromarray(values)
    assert image.mode == mode
    reference = _whole_frame_reference(
        values.astype(np.int64) * 257 if mode == "L" else values, mode, image_size
    )
    assert torch.equal(to_model_input(image, image_size), reference)


def test_a_16_bit_frame_becomes_8_bits_without_wide_copies():
    """16-bit PNGs of aerial footage reach 120 megapixels: int64 and float64 copies of such a
    frame took gigabytes (29 bytes a pixel). The conversion may hold the 8-bit result and one
    copy of it."""
    values = np.random.default_rng(0).integers(0, 65536, (2000, 1500)).astype(np.uint16)
    image = PIL.Image.fromarray(values)
    tracemalloc.start()
    try:
        to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * values.size, f"{peak / values.size:.1f} bytes per pixel"
