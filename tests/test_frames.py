"""Frames become SAM2's input bit for bit as upstream's video loader makes them."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from sam2.utils.misc import _load_img_as_tensor

from tracker.engine.frames import IMAGE_MEAN, IMAGE_STD, to_model_input, upstream_model_input


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
