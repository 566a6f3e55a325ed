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


#: Rows converted at a time from more than 8 bits to 8: the wide (float64) temporaries of the
#: fixed mapping stay a few MB whatever the frame's size (a 120-megapixel frame in one piece made
#: gigabytes of them).
_ROWS_PER_CHUNK = 256


def _high_bit_depth(image: PIL.Image.Image) -> bool:
    return image.mode in ("I", "F") or image.mode.startswith("I;16")


def _uint16_to_8_bits() -> np.ndarray:
    """(65536,): the fixed mapping of every 16-bit value, computed by that mapping."""
    return _scaled_to_8_bits(np.arange(65536, dtype=np.int64), "I;16")


_UINT16_TO_8_BITS = _uint16_to_8_bits()


def to_grey(image: PIL.Image.Image) -> PIL.Image.Image:
    """A greyscale frame of more than 8 bits as 8-bit greyscale ("L"), by the fixed mapping of
    `_scaled_to_8_bits`, a band of rows at a time (16-bit values through a table of that
    mapping): no copy of the whole frame but the 8-bit result."""
    grey = np.empty((image.height, image.width), dtype=np.uint8)
    for top in range(0, image.height, _ROWS_PER_CHUNK):
        bottom = min(top + _ROWS_PER_CHUNK, image.height)
        # NumPy's view of a whole PIL image costs two copies of it; a band costs two of a band.
        values = np.asarray(image.crop((0, top, image.width, bottom)))
        if values.dtype.kind == "u" and values.dtype.itemsize == 2:
            grey[top:bottom] = _UINT16_TO_8_BITS[values]  # indexing makes int64 indices
        else:
            wide = np.float64 if values.dtype.kind == "f" else np.int64
            grey[top:bottom] = _scaled_to_8_bits(values.astype(wide), image.mode)
    return PIL.Image.fromarray(grey, mode="L")


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """The frame as 8-bit RGB. Greyscale becomes equal R, G and B, as upstream's loader does."""
    if _high_bit_depth(image):
        return to_grey(image).convert("RGB")
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
    if image.mode == "RGB":  # needs no converted copy
        small = image.resize((image_size, image_size))
    elif image.mode == "L" or _high_bit_depth(image):
        # Greyscale is resized as one band and then made RGB: the same values as upstream's
        # RGB first (PIL resizes each band alike), without a frame-sized RGB copy.
        grey = image if image.mode == "L" else to_grey(image)
        small = grey.resize((image_size, image_size)).convert("RGB")
    else:
        small = to_rgb(image).resize((image_size, image_size))
    pixels = np.asarray(small)
    return torch.from_numpy(_NORMALISED[_CHANNELS, pixels.transpose(2, 0, 1)])


def upstream_model_input(image: PIL.Image.Image, image_size: int) -> torch.Tensor:
    """Upstream's steps one by one (the reference `to_model_input` is checked against)."""
    pixels = np.array(to_rgb(image).resize((image_size, image_size)))
    tensor = torch.from_numpy(pixels / 255.0).permute(2, 0, 1).to(torch.float32)
    return (tensor - IMAGE_MEAN) / IMAGE_STD
