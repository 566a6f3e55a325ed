"""Prompts as upstream's `track_step` takes them: a mask at the model's size, a box as 2 points."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def mask_inputs(mask: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """A binary mask of the frame's size as upstream's `add_new_mask` gives it to `track_step`:
    resized to the model's size (antialiased), binarised again, shape (1, 1, size, size)."""
    inputs = torch.from_numpy(np.asarray(mask, dtype=bool))[None, None].float().to(device)
    if inputs.shape[-2:] != (image_size, image_size):
        inputs = (_downscaled(inputs, image_size) >= 0.5).float()
    return inputs


def box_inputs(
    box: Sequence[float], frame_size: tuple[int, int], image_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """A box (x1, y1, x2, y2) in frame pixels as upstream's box prompt: its two corners, labels
    2 and 3, in the model's coordinates."""
    coords = torch.tensor(box, dtype=torch.float32).reshape(1, 2, 2)
    coords = coords / torch.tensor(frame_size) * image_size
    labels = torch.tensor([[2, 3]], dtype=torch.int32)
    return {"point_coords": coords.to(device), "point_labels": labels.to(device)}


def _downscaled(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a mask prompt to the model's size, as upstream does."""
    resize = functools.partial(
        F.interpolate, size=(size, size), align_corners=False, mode="bilinear", antialias=True
    )
    try:
        return resize(mask)
    except RuntimeError:
        if mask.device.type == "cpu":
            raise
        # CUDA's antialiased kernel needs shared memory that grows with the scale factor and
        # refuses very large frames (an 8000x6000 mask to 64 px); the CPU kernel does the same sum.
        return resize(mask.cpu()).to(mask.device)
