"""An object's mask on one frame, at the frame's size, computed only where the object can be.

Upstream upsamples every object's low-resolution logits to the whole frame (bilinear,
`align_corners=False`) and thresholds them at 0. On a full-HD frame that is 2 million pixels per
object, almost all of them far from the object. A bilinear output pixel is a convex combination of
at most 2x2 input logits, so it can only be positive next to a positive input logit: the box of
those input pixels, grown by one, maps to an output box outside which the mask is provably empty.
`Prediction.mask_crop` computes the upsampling inside that box only, with PyTorch's own index and
weight formulas (`area_pixel_compute_source_index`), so it equals `Prediction.mask` there (the
tests check it; only logits within rounding errors of zero, ~1e-30 and less, could round to the
other sign than PyTorch's kernel rounds them); `Prediction.mask` stays the whole-frame reference.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class MaskCrop:
    """The part of a frame-sized mask that holds all of its pixels: `mask` starts at (x, y)."""

    x: int
    y: int
    mask: np.ndarray  # bool, (rows, columns)
    frame_width: int
    frame_height: int

    def full(self) -> np.ndarray:
        """The mask at the frame's size (for tests and callers that need the whole frame)."""
        full = np.zeros((self.frame_height, self.frame_width), dtype=bool)
        rows, columns = self.mask.shape
        full[self.y : self.y + rows, self.x : self.x + columns] = self.mask
        return full


def _source_indices(
    in_size: int, out_size: int, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's bilinear source rows (or columns) and weights for outputs start..stop-1, in
    float32 like its CPU kernel: real = max(scale * (i + 0.5) - 0.5, 0), with scale = in / out."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    real = (torch.arange(start, stop, dtype=torch.float32) + 0.5) * scale - 0.5
    real = real.clamp_min(0)
    low = real.floor().long().clamp_max(in_size - 1)
    high = (low + 1).clamp_max(in_size - 1)
    weight_high = (real - low).clamp(0, 1)
    return low, high, 1 - weight_high, weight_high


def _output_range(in_size: int, out_size: int, first: int, last: int) -> tuple[int, int]:
    """The outputs [start, stop) whose two source pixels touch inputs first..last."""
    low, high, _, _ = _source_indices(in_size, out_size, 0, out_size)
    touching = ((high >= first) & (low <= last)).nonzero()
    return int(touching[0]), int(touching[-1]) + 1


def upsampled_crop(logits: torch.Tensor, width: int, height: int) -> tuple[int, int, np.ndarray]:
    """(x, y, mask): the bilinear upsampling of 2-D `logits` to height x width, thresholded at
    0, computed only in the box outside which every value is <= 0. `logits` must have a
    positive value.

    Output rows come in runs that read the same two source rows (one source row feeds ~17 rows
    of a full-HD frame at 256 px); each run is one broadcast product of those rows, already
    interpolated across columns, with the run's row weights, in PyTorch's order of operations
    (across columns, then rows). No index arrays of the output's size are built.
    """
    in_h, in_w = logits.shape
    rows = (logits > 0).any(dim=1).nonzero()
    columns = (logits > 0).any(dim=0).nonzero()
    y0, y1 = _output_range(in_h, height, int(rows[0]), int(rows[-1]))
    x0, x1 = _output_range(in_w, width, int(columns[0]), int(columns[-1]))
    top, bottom, w_top, w_bottom = (t.numpy() for t in _source_indices(in_h, height, y0, y1))
    left, right, w_left, w_right = _source_indices(in_w, width, x0, x1)
    first, last = int(top[0]), int(bottom[-1]) + 1
    rows_needed = logits[first:last]
    across = (rows_needed[:, left] * w_left + rows_needed[:, right] * w_right).numpy()
    breaks = [0, *(np.flatnonzero(np.diff(top)) + 1).tolist(), len(top)]
    runs = list(itertools.pairwise(breaks))
    longest = max(stop - start for start, stop in runs)
    upper, lower = np.empty((2, longest, x1 - x0), dtype=np.float32)
    mask = np.empty((y1 - y0, x1 - x0), dtype=bool)
    for start, stop in runs:
        n = stop - start
        a = np.multiply(across[top[start] - first], w_top[start:stop, None], out=upper[:n])
        b = np.multiply(across[bottom[start] - first], w_bottom[start:stop, None], out=lower[:n])
        np.greater(np.add(a, b, out=a), 0, out=mask[start:stop])
    return x0, y0, mask


@dataclasses.dataclass(frozen=True)
class Prediction:
    """An object's mask logits on one frame and SAM2's score for the object being present."""

    low_res_logits: torch.Tensor  # (1, 1, image_size / 4, image_size / 4)
    object_score: float
    width: int
    height: int

    @property
    def present(self) -> bool:
        return self.object_score > 0

    def mask(self) -> np.ndarray:
        """The binary mask at the frame's original size, resized as upstream does."""
        logits = self.low_res_logits
        if logits.shape[-2:] != (self.height, self.width):
            logits = F.interpolate(
                logits.float(), size=(self.height, self.width), mode="bilinear", align_corners=False
            )
        return (logits[0, 0] > 0).cpu().numpy()

    def mask_crop(self) -> MaskCrop | None:
        """`mask()` where it can hold pixels, or None when it is empty: the work and the one
        copy to the host grow with the object's box, not with the frame."""
        logits = self.low_res_logits[0, 0].float().cpu()  # small: (image_size / 4) ** 2 values
        if logits.shape == (self.height, self.width):
            x, y, mask = 0, 0, (logits > 0).numpy()
        elif not bool((logits > 0).any()):
            return None
        else:
            x, y, mask = upsampled_crop(logits, self.width, self.height)
        if not mask.any():
            return None
        return MaskCrop(x, y, mask, self.width, self.height)


def on_host(predictions: list[Prediction]) -> list[Prediction]:
    """The predictions with their logits on the CPU, copied in one transfer (one host sync for
    a whole batch of objects instead of one per object)."""
    on_device = [p for p in predictions if p.low_res_logits.device.type != "cpu"]
    if not on_device:
        return predictions
    host = iter(torch.cat([p.low_res_logits.float() for p in on_device]).cpu())
    return [
        p
        if p.low_res_logits.device.type == "cpu"
        else dataclasses.replace(p, low_res_logits=next(host)[None])
        for p in predictions
    ]
