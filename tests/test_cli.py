"""The `sam2-tracker` command on local videos, run as a user runs it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import PIL.Image
import pytest

from tracker.cli import video_io
from tracker.cli.outputs import PALETTE, overlay, shape_mask
from tracker.cvat import shapes

FRAMES = 6
ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`sam2-tracker`, as `python -m tracker`: the package of this checkout, whichever is
    installed."""
    return subprocess.run([sys.executable, "-m", "tracker", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


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
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask, "a folder as mkdir makes it"
    with av.open(str(out / "overlay.mp4")) as container:
        (stream,) = container.streams.video
        assert stream.codec_context.name == "h264", "browsers play H.264, not MPEG-4 Part 2"
        assert stream.codec_context.pix_fmt == "yuv420p"
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


def test_image_folders_are_in_natural_order_and_frames_keep_their_mode(tmp_path):
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    for name in ["10.png", "2.png", "1.png", "frame9.png", "frame10.png"]:
        PIL.Image.fromarray(grey).save(tmp_path / name)
    assert {PIL.Image.open(tmp_path / "1.png").mode} == {"I;16"}
    source = video_io.open_video(tmp_path)
    assert [p.name for p in source.images] == [
        "1.png", "2.png", "10.png", "frame9.png", "frame10.png"
    ]  # fmt: skip
    frame = next(source.frames(0, 1))
    # The agent's frame path maps 16 bits to 8 (divided by 257); converting to RGB here would
    # saturate every value above 255.
    assert frame.mode == "I;16"


def test_program_help_names_the_program_plainly():
    result = run_cli("--help")
    assert result.returncode == 0 and "`" not in result.stdout, result.stdout
    assert "sam2-tracker track" in result.stdout and "sam2-tracker serve" in result.stdout


def test_help_is_immediate_and_shows_defaults_and_ranges():
    code = (
        "import sys; from tracker.cli.main import _parser; "
        "print(_parser().parse_args(['track', 'x', '--out', 'y', '--help']))"
    )
    result = subprocess.run([sys.executable, "-c", code + "; "], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for fragment in ["--config", "--dtype {auto,float32,bfloat16,float16}", "--polygon-tolerance",
                     "--max-state-memory-mb", "default: facebook/sam2.1-hiera-tiny",
                     "cuda:N", "multiple of 32", ".pt checkpoint", "--overwrite"]:  # fmt: skip
        assert fragment in text
    imports = subprocess.run(
        [sys.executable, "-c", "import sys; from tracker.cli.main import _parser; _parser(); "
         "print(sorted({'torch', 'sam2'} & set(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imports.stdout.strip() == "[]", "--help must not wait for PyTorch"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "0"], "--frames: must be a whole number of at least 1"),
        (["--image-size", "250"], "--image-size must be a multiple of 32"),
        (["--device", "cuda:7"], "--device"),
        (["--dtype", "float8"], "invalid choice: 'float8'"),
    ],
)
def test_messages_name_options_as_the_cli_spells_them(mp4, tmp_path, args, message):
    result = run_cli("track", mp4, "--out", tmp_path / "out", "--box", "1,1,9,9", *args)
    assert result.returncode == 2
    assert message in result.stderr and "-p " not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_out_is_written_whole_or_not_at_all(video, tmp_path, tiny_checkpoint):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        video.image(index).save(folder / f"{index}.png")
    video.image(3).resize((200, 150)).save(folder / "3.png")
    out = tmp_path / "out"
    common = ["--box", "120,60,220,160", "--image-size", 256]
    failed = run_cli("track", folder, "--out", out, *common)
    assert failed.returncode == 2 and "another size" in failed.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [folder], "nothing half-written"

    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    refused = run_cli("track", folder, "--out", out, "--frames", 2, *common)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    replaced = run_cli("track", folder, "--out", out, "--frames", 2, "--overwrite", *common)
    assert replaced.returncode == 0, replaced.stderr
    assert not (out / "stale.png").exists()
    _check_outputs(out, ["rectangle"], 2)


def test_overlay_has_a_colour_blind_safe_palette_and_a_legend():
    assert PALETTE[:3] == [(230, 159, 0), (86, 180, 233), (0, 158, 115)]  # Okabe-Ito
    image = PIL.Image.new("RGB", (320, 240), (128, 128, 128))
    picture = overlay(image, [None, None], ["object 0: mask", "object 1: rectangle"], frame=7)
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert PALETTE[0] in colours and PALETTE[1] in colours, "a swatch per object"
    assert (255, 255, 255) in colours, "their names, and the frame number, in white"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--box", "1,2,3", "--box wants 4 numbers, X1,Y1,X2,Y2; got 3"),
        ("--box", "5,5,5,40", "--box 5,5,5,40: "),
        ("--polygon", "10,10,50,50", "--polygon 10,10,50,50: "),
    ],
)
def test_prompts_are_checked_before_the_model_loads(mp4, tmp_path, option, value, message):
    """A truncated checkpoint fails only when loaded: the prompt's message comes first."""
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    checkpoint.write_bytes(b"")
    result = run_cli("track", mp4, "--out", tmp_path / "out", option, value,
                     "--model-id", checkpoint, "--image-size", 256)  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and "truncated" not in result.stderr, result.stderr


def test_serve_names_its_options_as_given(tmp_path):
    given = run_cli("serve", "--insecure", "--image-size", "100")
    assert given.returncode == 2
    assert "--image-size must be a multiple of 32" in given.stderr, given.stderr
    assert "SAM2_IMAGE_SIZE" not in given.stderr
    from_environment = subprocess.run(
        [sys.executable, "-m", "tracker", "serve", "--insecure"], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, "SAM2_IMAGE_SIZE": "100"},
    )  # fmt: skip
    assert from_environment.returncode == 2
    assert "SAM2_IMAGE_SIZE must be a multiple of 32" in from_environment.stderr
