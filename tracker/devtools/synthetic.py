"""Synthetic videos: a textured ellipse moving over a textured background, saved as JPEG."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import PIL.Image


@dataclasses.dataclass(frozen=True)
class SyntheticVideo:
    folder: Path
    frames: list[Path]  # 00000.jpg, 00001.jpg, ... as upstream's video loader expects
    masks: list[np.ndarray]  # the object's true mask on each frame

    def image(self, index: int) -> PIL.Image.Image:
        return PIL.Image.open(self.frames[index])


def _texture(rng: np.random.Generator, height: int, width: int, blur: int) -> np.ndarray:
    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), blur)


def object_mask(width: int, height: int, center: tuple[float, float], axes: tuple[int, int]):
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.ellipse(mask, (round(center[0]), round(center[1])), axes, 20, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def make_video(
    folder: Path, num_frames: int, width: int, height: int, seed: int = 0
) -> SyntheticVideo:
    rng = np.random.default_rng(seed)
    background = _texture(rng, height, width, blur=3)
    stripes = (np.indices((height, width)).sum(axis=0) // 6 % 2 * 120 + 60).astype(np.uint8)
    foreground = np.stack([stripes, 255 - stripes, np.full_like(stripes, 200)], axis=-1)
    axes = (width // 7, height // 6)
    frames, masks = [], []
    for index in range(num_frames):
        t = index / max(num_frames - 1, 1)
        center = (width * (0.3 + 0.4 * t), height * (0.4 + 0.2 * np.sin(np.pi * t)))
        mask = object_mask(width, height, center, axes)
        image = np.where(mask[..., None], foreground, background)
        path = folder / f"{index:05d}.jpg"
        PIL.Image.fromarray(image).save(path, quality=95)
        frames.append(path)
        masks.append(mask)
    return SyntheticVideo(folder, frames, masks)
