"""What `sam2-tracker track` writes: PNG masks, annotations.json, overlay.mp4 and preview.png."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from tracker.cvat import shapes

# Distinct colours (RGB) for objects, cycled when there are more objects.
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230)]  # fmt: skip
PREVIEW_FRAMES = 6
PREVIEW_WIDTH = 320


def shape_mask(shape_type: str, points: list[float], width: int, height: int) -> np.ndarray:
    """The pixels a CVAT shape covers: what each PNG mask holds."""
    if shape_type == "mask":
        return shapes.mask_from_rle(points, width, height)
    if shape_type == "polygon":
        return shapes.mask_from_polygon(points, width, height)
    return shapes.mask_from_rectangle(points, width, height)


def overlay(image: PIL.Image.Image, masks: list[np.ndarray | None]) -> np.ndarray:
    """The frame (RGB array) with each object's mask tinted and outlined in its colour."""
    canvas = np.array(image.convert("RGB"), dtype=np.float32)
    for index, mask in enumerate(masks):
        if mask is None or not mask.any():
            continue
        colour = np.array(PALETTE[index % len(PALETTE)], dtype=np.float32)
        canvas[mask] = 0.5 * canvas[mask] + 0.5 * colour
    result = canvas.astype(np.uint8)
    for index, mask in enumerate(masks):
        if mask is not None and mask.any():
            contours, _ = cv2.findContours(
                mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(result, contours, -1, PALETTE[index % len(PALETTE)], 2)
    return result


class OutputWriter:
    """Writes every frame's results as they come, and the summary files at the end."""

    def __init__(self, out: Path, width: int, height: int, fps: float, frame_count: int) -> None:
        self.out = out
        self.width, self.height = width, height
        (out / "masks").mkdir(parents=True, exist_ok=True)
        self._video = cv2.VideoWriter(
            str(out / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
        )
        if not self._video.isOpened():
            raise OSError(f"OpenCV cannot write {out / 'overlay.mp4'}")
        step = max(frame_count // PREVIEW_FRAMES, 1)
        self._preview_at = set(range(0, frame_count, step)[:PREVIEW_FRAMES])
        self._previews: list[np.ndarray] = []
        self._frames: list[dict] = []
        self._written = 0

    def add(self, frame: int, image: PIL.Image.Image, results: list[tuple[str, list] | None]):
        masks = []
        for obj, result in enumerate(results):
            mask = None if result is None else shape_mask(*result, self.width, self.height)
            masks.append(mask)
            pixels = np.zeros((self.height, self.width), np.uint8) if mask is None else mask * 255
            PIL.Image.fromarray(pixels.astype(np.uint8)).save(
                self.out / "masks" / f"object{obj}_frame{frame:06d}.png"
            )
        self._frames.append({
            "frame": frame,
            "shapes": [None if r is None else {"object": i, "type": r[0], "points": r[1]}
                       for i, r in enumerate(results)],
        })  # fmt: skip
        picture = overlay(image, masks)
        self._video.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        if self._written in self._preview_at:
            scale = PREVIEW_WIDTH / self.width
            size = (PREVIEW_WIDTH, max(round(self.height * scale), 1))
            small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
            cv2.putText(small, f"frame {frame}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
            self._previews.append(small)
        self._written += 1

    def close(self, objects: list[dict]) -> None:
        self._video.release()
        annotations = {"width": self.width, "height": self.height, "objects": objects,
                       "frames": self._frames}  # fmt: skip
        (self.out / "annotations.json").write_text(json.dumps(annotations, indent=1))
        if self._previews:
            columns = min(3, len(self._previews))
            blank = np.zeros_like(self._previews[0])
            cells = self._previews + [blank] * (-len(self._previews) % columns)
            rows = [np.hstack(cells[i : i + columns]) for i in range(0, len(cells), columns)]
            PIL.Image.fromarray(np.vstack(rows)).save(self.out / "preview.png")
