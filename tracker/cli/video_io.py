"""Read local videos (any file OpenCV decodes) or folders of images as PIL frames."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import PIL.Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class VideoReadError(ValueError):
    """The input cannot be read as a video; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class VideoSource:
    path: Path
    frame_count: int
    fps: float
    images: list[Path] | None  # a folder's frames, in natural order; None for a video file

    def frames(self, start: int, count: int) -> Iterator[PIL.Image.Image]:
        """Frames start .. start + count - 1. Images come in their own mode (16-bit greyscale
        too), as CVAT hands them to the agent: the function converts them as it does there."""
        if self.images is not None:
            for path in self.images[start : start + count]:
                try:
                    with PIL.Image.open(path) as image:
                        image.load()
                except OSError as e:
                    raise VideoReadError(f"Cannot read the image {path}: {e}") from e
                yield image
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
            for _ in range(count):
                ok, bgr = capture.read()
                if not ok:
                    return
                yield PIL.Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            capture.release()


def natural_key(path: Path) -> list:
    """Numbers in a name compare as numbers (frame 2 before frame 10), as upstream's loader
    orders its numeric frame names; the rest compares as text."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def open_video(path: Path) -> VideoSource:
    if path.is_dir():
        images = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        images.sort(key=natural_key)
        if not images:
            raise VideoReadError(
                f"The folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})."
            )
        return VideoSource(path, len(images), 10.0, images)
    if not path.is_file():
        raise VideoReadError(f"{path} does not exist.")
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
        if not capture.isOpened() or count <= 0 or not capture.read()[0]:
            raise VideoReadError(f"Cannot read {path} as a video (OpenCV cannot decode it).")
    finally:
        capture.release()
    return VideoSource(path, count, fps, None)
