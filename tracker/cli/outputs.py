"""What `sam2-tracker track` writes: PNG masks, annotations.json, overlay.mp4 and preview.png."""

from __future__ import annotations

import fractions
import json
from pathlib import Path

import av
import cv2
import numpy as np
import PIL.Image

from tracker.cvat import shapes
from tracker.cvat.shape_tracker import to_rgb

# Okabe & Ito's palette (RGB), told apart by viewers with any common colour-vision deficiency;
# its black is left out, as masks are drawn over video. Cycled when there are more objects.
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
           (213, 94, 0), (204, 121, 167)]  # fmt: skip
PREVIEW_FRAMES = 6
PREVIEW_WIDTH = 320


def shape_mask(shape_type: str, points: list[float], width: int, height: int) -> np.ndarray:
    """The pixels a CVAT shape covers: what each PNG mask holds."""
    if shape_type == "mask":
        return shapes.mask_from_rle(points, width, height)
    if shape_type == "polygon":
        return shapes.mask_from_polygon(points, width, height)
    return shapes.mask_from_rectangle(points, width, height)


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def overlay(
    image: PIL.Image.Image, masks: list[np.ndarray | None], labels: list[str], frame: int
) -> np.ndarray:
    """The frame (RGB array) with each object's mask tinted and outlined in its colour, and a
    legend naming each colour's object and the frame number."""
    canvas = np.array(to_rgb(image), dtype=np.float32)
    for index, mask in enumerate(masks):
        if mask is None or not mask.any():
            continue
        canvas[mask] = 0.5 * canvas[mask] + 0.5 * np.array(colour(index), dtype=np.float32)
    result = canvas.astype(np.uint8)
    for index, mask in enumerate(masks):
        if mask is not None and mask.any():
            contours, _ = cv2.findContours(
                mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(result, contours, -1, colour(index), 2)
    _legend(result, labels, frame)
    return result


def _legend(picture: np.ndarray, labels: list[str], frame: int) -> None:
    """`frame N`, then a swatch and a name per object, top left on a dark backing."""
    scale = max(picture.shape[1] / 900, 0.35)
    line = max(round(22 * scale), 9)
    lines = [f"frame {frame}", *labels]
    font = cv2.FONT_HERSHEY_SIMPLEX
    width = max(cv2.getTextSize(text, font, scale, 1)[0][0] for text in lines) + 2 * line
    cv2.rectangle(picture, (0, 0), (width, line * len(lines) + line // 2), (0, 0, 0), -1)
    for row, text in enumerate(lines):
        baseline = line * (row + 1)
        if row:
            top_left = (line // 4, baseline - line + line // 4)
            cv2.rectangle(picture, top_left, (line - line // 4, baseline), colour(row - 1), -1)
        cv2.putText(picture, text, (line, baseline), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


class H264Writer:
    """An MP4 of H.264 in yuv420p, the video browsers and common players play (OpenCV's wheels
    write only MPEG-4 Part 2, which browsers do not). PyAV's wheels ship FFmpeg with libx264;
    H.264 in 4:2:0 needs even sizes, so an odd last row or column is repeated."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        self._container = av.open(str(path), mode="w")
        rate = fractions.Fraction(fps).limit_denominator(1001) if fps > 0 else 25
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "20", "preset": "veryfast"}

    def write(self, rgb: np.ndarray) -> None:
        height, width = rgb.shape[:2]
        if width % 2 or height % 2:
            rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
        self._container.close()


class OutputWriter:
    """Writes every frame's results as they come, and the summary files at the end."""

    def __init__(
        self, out: Path, width: int, height: int, fps: float, frame_count: int, kinds: list[str]
    ) -> None:
        self.out = out
        self.objects = [{"object": i, "type": kind} for i, kind in enumerate(kinds)]
        self.labels = [f"object {i}: {kind}" for i, kind in enumerate(kinds)]
        self.width, self.height = width, height
        (out / "masks").mkdir(parents=True, exist_ok=True)
        self._video = H264Writer(out / "overlay.mp4", width, height, fps)
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
        picture = overlay(image, masks, self.labels, frame)
        self._video.write(picture)
        if self._written in self._preview_at:
            scale = PREVIEW_WIDTH / self.width
            size = (PREVIEW_WIDTH, max(round(self.height * scale), 1))
            small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
            self._previews.append(small)
        self._written += 1

    def close(self) -> None:
        self._video.close()
        annotations = {"width": self.width, "height": self.height, "objects": self.objects,
                       "frames": self._frames}  # fmt: skip
        (self.out / "annotations.json").write_text(json.dumps(annotations, indent=1))
        if self._previews:
            columns = min(3, len(self._previews))
            blank = np.zeros_like(self._previews[0])
            cells = self._previews + [blank] * (-len(self._previews) % columns)
            rows = [np.hstack(cells[i : i + columns]) for i in range(0, len(cells), columns)]
            PIL.Image.fromarray(np.vstack(rows)).save(self.out / "preview.png")
