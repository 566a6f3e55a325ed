"""Turn a PIL frame into SAM2's input tensor exactly as upstream's video loader does.

Upstream (`sam2.utils.misc._load_img_as_tensor` + `load_video_frames_from_jpg_images`) converts to
RGB, resizes with PIL's default filter to a square, divides by 255 in float64, stores float32 and
then normalises with ImageNet statistics. Doing the same steps in the same order gives bit-identical
tensors, which is the first condition for giving upstream's masks.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

IMAGE_MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
IMAGE_STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]


class FrameError(ValueError):
    """A frame that cannot be turned into RGB; the message says what to do."""


def _scaled_to_8_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """Greyscale of more than 8 bits (PIL modes I;16, I, F) to 0..255 by one fixed mapping per
    mode: integers as 16-bit values (divided by 257), floats as 0..1. A mapping that followed each
    frame's own range would change every pixel of a frame when one pixel crossed a threshold (a
    hot spot in thermal footage), so frames of one video would not be comparable."""
    scale = 255.0 if mode == "F" else 1 / 257
    return np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """The frame as 8-bit RGB. Greyscale becomes equal R, G and B, as upstream's loader does."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image)
        values = values.astype(np.float64 if values.dtype.kind == "f" else np.int64)
        return PIL.Image.fromarray(_scaled_to_8_bits(values, image.mode), mode="L").convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise FrameError(
            f"Frames of image mode {image.mode!r} cannot be converted to RGB ({e}); "
            "re-encode the video or images as 8-bit RGB or greyscale."
        ) from e


def _normalised_values() -> np.ndarray:
    """(3, 256): what upstream's steps make of each 8-bit value in each channel, computed by
    those very steps (divide by 255 in float64, store float32, normalise in float32)."""
    values = torch.from_numpy(np.arange(256) / 255.0).to(torch.float32)
    return ((values[None, :, None] - IMAGE_MEAN) / IMAGE_STD)[:, :, 0].numpy()


_NORMALISED = _normalised_values()
_CHANNELS = np.arange(3)[:, None, None]


def to_model_input(image: PIL.Image.Image, image_size: int) -> torch.Tensor:
    """Return a normalised float32 tensor of shape (3, image_size, image_size) on the CPU.

    The same values as upstream's steps, looked up per 8-bit value instead of computed per pixel
    through float64 (a third of the work at 1024 px; `tests/test_frames.py` checks the bits).
    """
    rgb = image if image.mode == "RGB" else to_rgb(image)  # RGB needs no converted copy
    pixels = np.asarray(rgb.resize((image_size, image_size)))
    return torch.from_numpy(_NORMALISED[_CHANNELS, pixels.transpose(2, 0, 1)])


def upstream_model_input(image: PIL.Image.Image, image_size: int) -> torch.Tensor:
    """Upstream's steps one by one (the reference `to_model_input` is checked against)."""
    pixels = np.array(to_rgb(image).resize((image_size, image_size)))
    tensor = torch.from_numpy(pixels / 255.0).permute(2, 0, 1).to(torch.float32)
    return (tensor - IMAGE_MEAN) / IMAGE_STD
