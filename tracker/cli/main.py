"""`sam2-tracker track`: run the CVAT tracking function on a local video, without CVAT.

It makes exactly the calls cvat-cli's agent makes (`preprocess_image` once per frame,
`init_tracking_state` per shape on the first frame, `track` per shape on the others), so what it
shows is what CVAT will get.

PyTorch and sam2 are imported only when tracking starts: `--help` and argument errors come at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import time
import uuid
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image

from tracker.cli import serve as serve_command
from tracker.cli.video_io import VideoReadError, open_video
from tracker.cvat import shapes
from tracker.cvat.options import TRACKER_PARAMETERS, ParameterSpec


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Context(cvataa.TrackingFunctionShapeContext):
    original_shape_type: str


class _Prompt(argparse.Action):
    """Collects --mask/--polygon/--box in the order given: one object each."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        prompts = getattr(namespace, "prompts", None) or []
        prompts.append((self.dest, values))
        namespace.prompts = prompts


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as e:
        raise CliError(f"{option} wants comma-separated numbers, got {text!r}") from e


def _shape(kind: str, value: str, width: int, height: int) -> tuple[str, list]:
    """A CVAT shape (type, points) for one command-line prompt, checked against the frame."""
    if kind == "mask":
        try:
            with PIL.Image.open(value) as image:
                mask = np.array(image.convert("L")) > 0
        except OSError as e:
            raise CliError(f"Cannot read the mask {value}: {e}") from e
        if mask.shape != (height, width):
            raise CliError(
                f"The mask {value} is {mask.shape[1]}x{mask.shape[0]}; "
                f"the video's frames are {width}x{height}."
            )
        if not mask.any():
            raise CliError(f"The mask {value} is empty: paint the object with non-zero pixels.")
        return "mask", shapes.rle_from_mask(mask)
    option = "--polygon" if kind == "polygon" else "--box"
    points = _numbers(value, option)
    if kind == "box" and len(points) != 4:
        raise CliError(f"--box wants 4 numbers, X1,Y1,X2,Y2; got {len(points)} ({value}).")
    try:  # the checks the function makes, now rather than after the model has loaded
        if kind == "polygon":
            shapes.mask_from_polygon(points, width, height)
        else:
            shapes.box_from_rectangle(points, width, height)
    except shapes.ShapeError as e:
        raise CliError(f"{option} {value}: {e}") from e
    return ("polygon" if kind == "polygon" else "rectangle"), points


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _add_parameter(group: argparse._ArgumentGroup, spec: ParameterSpec) -> None:
    """One of the function's parameters as an option; the table gives its default and help."""
    default = "" if spec.default is None else f" (default: {spec.default})"
    group.add_argument(
        "--" + spec.name.replace("_", "-"),
        dest=spec.name,
        type=spec.kind,
        choices=spec.choices,
        metavar=spec.name.upper() if spec.choices is None else None,
        help=spec.help + default,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam2-tracker",
        description="SAM2 for CVAT without CVAT: 'sam2-tracker track' runs the CVAT tracking "
        "function on a local video; 'sam2-tracker serve' serves SAM2 to CVAT's Nuclio functions.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    track = commands.add_parser(
        "track",
        help="track objects through a video or image folder",
        description="Run the CVAT tracking function on a local video or image folder, without "
        "CVAT, and write masks, annotations.json, overlay.mp4 and preview.png.",
    )
    track.add_argument("input", type=Path, help="a video file or a folder of images")
    track.add_argument("--out", type=Path, required=True, help="a new or empty folder for results")
    track.add_argument(
        "--overwrite", action="store_true", help="replace --out if it holds files already"
    )
    for option, meta, text in [
        ("--mask", "MASK.png", "an image of the frame's size; non-zero pixels are the object"),
        ("--polygon", "X1,Y1,X2,Y2,...", "a polygon around the object"),
        ("--box", "X1,Y1,X2,Y2", "a box around the object"),
    ]:
        track.add_argument(option, action=_Prompt, metavar=meta, help=text + " (repeatable)")
    track.add_argument("--start", type=int, default=0, help="the frame the objects are on (0)")
    track.add_argument(
        "--frames", type=_positive_int, help="how many frames to process, at least 1 (all)"
    )
    model = track.add_argument_group("the tracking function's parameters")
    for spec in TRACKER_PARAMETERS:
        _add_parameter(model, spec)
    serve_command.add_parser(commands)
    return parser


def _staging_folder(out: Path, overwrite: bool) -> Path:
    """A fresh folder beside `out`, moved into place when everything is written, so that a failed
    run leaves nothing behind and a new run never mixes with an old one's files."""
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"--out {out} is not empty: choose another folder, or add --overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp (always 0700): the results get the mode any new folder gets
    # under the user's umask, and a name taken already fails rather than mixing runs.
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def _move_into_place(staging: Path, out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    staging.rename(out)


def track(args: argparse.Namespace) -> None:
    prompts = getattr(args, "prompts", None)
    if not prompts:
        raise CliError("Give at least one object with --mask, --polygon or --box.")
    video = open_video(args.input)
    if not 0 <= args.start < video.frame_count:
        raise CliError(
            f"--start {args.start} is outside the video, which has frames 0 to "
            f"{video.frame_count - 1}."
        )
    count = min(args.frames or video.frame_count, video.frame_count - args.start)
    params = {s.name: getattr(args, s.name) for s in TRACKER_PARAMETERS}
    staging = _staging_folder(args.out, args.overwrite)
    try:
        _track_into(staging, video, args, count, prompts, params)
        _move_into_place(staging, args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _track_into(staging: Path, video, args, count: int, prompts: list, params: dict) -> None:
    from tqdm import tqdm

    from tracker.cli.outputs import OutputWriter
    from tracker.cvat.agent.tracking import Sam2TrackingFunction
    from tracker.cvat.options import Syntax

    params = {name: value for name, value in params.items() if value is not None}
    frames = video.frames(args.start, count)
    first = next(frames)
    width, height = first.size
    objects = [_shape(kind, value, width, height) for kind, value in prompts]  # before loading
    function = Sam2TrackingFunction.from_params(params, Syntax.CLI)
    writer = OutputWriter(staging, width, height, video.fps, count, [k for k, _ in objects])
    started = time.perf_counter()
    pp_image = function.preprocess_image(_Context("image"), first)
    states = [
        function.init_tracking_state(
            _Context(kind), pp_image, cvataa.TrackableShape(type=kind, points=points)
        )
        for kind, points in objects
    ]
    writer.add(args.start, first, list(objects))
    progress = tqdm(frames, total=count - 1, unit="frame", desc="tracking", file=sys.stderr)
    for offset, image in enumerate(progress, start=1):
        if image.size != (width, height):
            raise CliError(f"Frame {args.start + offset} has another size than the first frame.")
        pp_image = function.preprocess_image(_Context("image"), image)
        results = []
        for (kind, _), state in zip(objects, states, strict=True):
            shape = function.track(_Context(kind), pp_image, state)
            results.append(None if shape is None else (shape.type, shape.points))
        writer.add(args.start + offset, image, results)
    writer.close()
    elapsed = time.perf_counter() - started
    print(f"Tracked {len(objects)} object(s) over {count} frames in {elapsed:.1f} s; "
          f"results in {args.out}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve_command.run(args)
    try:
        track(args)
    except (CliError, VideoReadError, cvataa.BadFunctionError, OSError) as e:
        print(f"sam2-tracker: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
