"""The `sam2-tracker` command on local videos, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import PIL.Image
import pytest

from tracker.cli.outputs import shape_mask
from tracker.cvat import shapes

FRAMES = 6


def run_cli(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("sam2-tracker")
    assert executable, "sam2-tracker is not installed"
    return subprocess.run([executable, *map(str, args)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def mp4(video, tmp_path_factory):
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for index in range(10):
        writer.write(np.array(video.image(index))[..., ::-1])
    writer.release()
    return path


@pytest.fixture(scope="module")
def mask_png(video, tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "mask.png"
    PIL.Image.fromarray(video.masks[0].astype(np.uint8) * 200).save(path)
    return path


def _check_outputs(out, objects: list[str], frames: int, start: int = 0) -> None:
    annotations = json.loads((out / "annotations.json").read_text())
    assert [o["type"] for o in annotations["objects"]] == objects
    assert [f["frame"] for f in annotations["frames"]] == list(range(start, start + frames))
    for frame in annotations["frames"]:
        for index, kind in enumerate(objects):
            png = np.array(
                PIL.Image.open(out / "masks" / f"object{index}_frame{frame['frame']:06d}.png")
            )
            assert png.shape == (240, 320)
            shape = frame["shapes"][index]
            if shape is None:
                assert not png.any()
                continue
            assert shape["type"] == kind
            assert np.array_equal(shape_mask(kind, shape["points"], 320, 240), png > 0)
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    ok, first = capture.read()
    assert ok and first.shape == (240, 320, 3)
    capture.release()
    preview = PIL.Image.open(out / "preview.png")
    preview.load()
    assert preview.format == "PNG" and preview.width > 0


def test_tracks_a_mask_a_polygon_and_a_box_in_a_video_file(
    mp4, mask_png, video, tmp_path, tiny_checkpoint
):
    polygon = ",".join(str(v) for v in shapes.polygon_from_mask(video.masks[0], 2.0))
    out = tmp_path / "out"
    result = run_cli("track", mp4, "--out", out, "--mask", mask_png, "--polygon", polygon,
                     "--box", "50,40,150,140", "--frames", FRAMES, "--image-size", 256)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "frame/s" in result.stderr  # the progress bar shows the speed
    _check_outputs(out, ["mask", "polygon", "rectangle"], FRAMES)


def test_tracks_from_a_later_start_in_an_image_folder(video, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    result = run_cli("track", video.folder, "--out", out, "--box", "120,60,220,160",
                     "--start", 3, "--frames", 4, "--image-size", 256)  # fmt: skip
    assert result.returncode == 0, result.stderr
    _check_outputs(out, ["rectangle"], 4, start=3)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unreadable", "Cannot read"),
        ("wrong size", "is 100x80; the video's frames are 320x240"),
        ("empty", "is empty"),
        ("start", "--start 50 is outside the video"),
    ],
)
def test_errors_are_messages_not_tracebacks(case, message, mp4, mask_png, tmp_path):
    args = [mp4, "--out", tmp_path / "out", "--mask", mask_png, "--image-size", 256]
    if case == "unreadable":
        bad = tmp_path / "broken.mp4"
        bad.write_text("not a video")
        args[0] = bad
    elif case in ("wrong size", "empty"):
        pixels = np.zeros((80, 100) if case == "wrong size" else (240, 320), np.uint8)
        pixels[10:20, 10:20] = 255 if case == "wrong size" else 0
        args[4] = tmp_path / "prompt.png"
        PIL.Image.fromarray(pixels).save(args[4])
    else:
        args += ["--start", 50]
    result = run_cli("track", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
