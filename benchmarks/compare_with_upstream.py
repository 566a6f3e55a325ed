"""Benchmark our tracking function against upstream SAM2VideoPredictor, side by side.

All systems run the same random-weight model on the same synthetic full-HD JPEG frames (by
default). Each of ours and upstream runs alone in its own process (so that peak memory and state
size are its own); then all run in one process, frame by frame in turns, for the times (so that
the machine's drift over minutes falls on all alike).

Times per frame count everything: decoding and preprocessing the source frame (upstream loads all
frames in `init_state`; its loading is shared out per frame), the image encoder and every object.
Systems: ours as cvat-cli's agent drives it (one shape per call; `FrameBatches` steps a frame's
objects as one batch at the first call), ours with all shapes of a frame in one request
(`ShapeTracker.step_many`, batched, as the Nuclio functions and the server get them), ours with
every object stepped on its own (single, no batches), upstream, and upstream with
`vos_optimized=True` (`--upstream-vos`).

    python benchmarks/compare_with_upstream.py                      # CPU, 256 px
    python benchmarks/compare_with_upstream.py --threads 1 --image-size 1024 --objects 4 \
        --frames 9 --steady-from 7 --no-alone --name cpu-1080p-1024-t1
    python benchmarks/compare_with_upstream.py --image-size 1024 --device cuda --upstream-vos \
        --name gpu-1080p-1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The random-weight checkpoints, synthetic videos and agent-worker driver the tests use come from
# the installed package (`pip install -e .`), `tracker.devtools`; `systems` lies beside this file.
SYSTEMS = ("ours", "batched", "single", "upstream", "upstream_vos")


def _parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", default="facebook/sam2.1-hiera-tiny")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=1920, help="source frame width")
    parser.add_argument("--height", type=int, default=1080, help="source frame height")
    parser.add_argument("--frames", type=int, default=24, help="frames per timed run")
    parser.add_argument("--steady-from", type=int, default=17, help="first frame timed")
    parser.add_argument("--objects", type=_parse_ints, default=[1, 4, 16])
    parser.add_argument("--state-frames", type=_parse_ints, default=[10, 100])
    parser.add_argument("--upstream-vos", action="store_true", help="time vos_optimized too")
    parser.add_argument("--no-alone", action="store_true", help="skip memory and state runs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--name", default="cpu-1080p-256", help="results: benchmarks/results/NAME")
    parser.add_argument("--system", choices=["ours", "upstream", "paired"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def _prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """The offline model cache and the synthetic videos, shared by the systems' processes: a
    short one for the timed runs (upstream loads a whole video) and a long one for state sizes."""
    os.environ["HF_HOME"] = str(workdir / "hf-home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tracker.devtools.checkpoints import ensure_hf_checkpoint
    from tracker.devtools.synthetic import make_video

    ensure_hf_checkpoint(workdir / "hf-home" / "hub", args.model_id)
    videos = {}
    for name, frames in (("timed", args.frames), ("long", max(args.state_frames))):
        folder = workdir / f"video-{name}"
        folder.mkdir(exist_ok=True)
        videos[name] = make_video(folder, frames, width=args.width, height=args.height)
    return videos


def _matmul_tflops(device, dtype) -> float:
    import torch
    from systems import sync

    n = 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def _encoder_gflop(engine) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.zeros(1, 3, engine.image_size, engine.image_size, device=engine.device)
    with engine.session(), FlopCounterMode(display=False) as counter:
        engine.model.forward_image(pixels)
    return counter.get_total_flops() / 1e9


def _steady(per_frame: list[float], steady_from: int) -> float:
    tail = per_frame[steady_from - 1 :] or per_frame
    return sorted(tail)[len(tail) // 2]  # median: robust to the odd slow frame


def _ours_function(args):
    from tracker.cvat.agent.tracking import create

    return create(model_id=args.model_id, device=args.device, image_size=args.image_size)


def _upstream_model(args, device, **options):
    from tracker.engine.model_loading import build_model, resolve_model

    return build_model(resolve_model(args.model_id), device, args.image_size, options)


def _run_alone(args, videos, device) -> dict:
    """One system in its own process: one object's state size over a long run, and (by the
    parent) this process's peak memory."""
    from systems import OursAgent, Upstream

    video, frames = videos["long"], max(args.state_frames)
    if args.system == "ours":
        run = OursAgent(_ours_function(args), video, 1, device)
    else:
        run = Upstream(_upstream_model(args, device), video, 1, frames, device)
    result = {"state_bytes": {}}
    for frame in range(1, frames):
        run.step()
        if frame + 1 in args.state_frames:
            result["state_bytes"][frame + 1] = run.state_bytes()
    return result


def _run_paired(args, videos, device) -> dict:
    """Times of all systems in one process, frame by frame in turns (the order rotating), so
    that the machine's drift over minutes falls on all alike."""
    from systems import OursAgent, OursBatched, Upstream, cvat_state_bytes, encoder_seconds

    function = _ours_function(args)
    engine = function.engine
    models = {"upstream": engine.upstream_model}
    if args.upstream_vos:
        models["upstream_vos"] = _upstream_model(args, device, vos_optimized=True)
    video = videos["timed"]
    result = {
        "encoder_s": encoder_seconds(engine, engine.upstream_model, video, device),
        "encoder_gflop": _encoder_gflop(engine),
        "matmul_tflops": _matmul_tflops(device, engine.dtype),
        "cvat_state_bytes": cvat_state_bytes(engine, video),
        "per_frame_s": {},
    }
    for count in args.objects:
        runs = {
            "ours": OursAgent(function, video, count, device),
            "batched": OursBatched(function, video, count, device),
            "single": OursBatched(function, video, count, device, single=True),
        }
        for name, model in models.items():
            runs[name] = Upstream(model, video, count, args.frames, device)
        per_frame: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for frame in range(1, args.frames):
            shift = frame % len(names)
            for name in names[shift:] + names[:shift]:
                per_frame[name].append(runs[name].step())
        result["per_frame_s"][count] = {
            name: _steady(times, args.steady_from) for name, times in per_frame.items()
        }
        print(f"{count} objects: {result['per_frame_s'][count]}", file=sys.stderr)
    return result


def _child(args: argparse.Namespace) -> None:
    import torch

    from tracker.engine.model_loading import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    videos = _prepare(args, args.workdir)
    device = resolve_device(args.device)
    run = _run_paired if args.system == "paired" else _run_alone
    result = run(args, videos, device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["torch_threads"] = torch.get_num_threads()
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))


def _row(label: str, values: dict, names: list[str], ratios: list[str]) -> str:
    cells = "".join(f"{values[n]:12.1f}" if n in values else f"{'-':>12}" for n in names)
    up = values.get("upstream")
    cells += "".join(
        f"{values[n] / up:9.2f}" if n in values and up else f"{'-':>9}" for n in ratios
    )
    return f"{label:40}{cells}"


def _table(paired: dict, alone: dict) -> str:
    names = [n for n in SYSTEMS if n in next(iter(paired["per_frame_s"].values()))]
    ratios = [n for n in names if n != "upstream"]
    header = f"{'':40}" + "".join(f"{n:>12}" for n in names)
    header += "".join(f"{n[:5] + '/up':>9}" for n in ratios)
    lines = [header]
    encoder = {n: v * 1e3 for n, v in paired["encoder_s"].items()}
    lines.append(_row("encode incl. preprocessing, ms/frame", encoder, names, ratios))
    for count, times in paired["per_frame_s"].items():
        per_frame = {n: v * 1e3 for n, v in times.items()}
        lines.append(_row(f"{count} object(s): ms/frame", per_frame, names, ratios))
        per_object = {n: v / int(count) for n, v in per_frame.items()}
        lines.append(_row(f"{count} object(s): ms/frame per object", per_object, names, ratios))
    if alone:
        for frames in alone["ours"]["state_bytes"]:
            sizes = {n: alone[n]["state_bytes"][frames] / 1024 for n in ("ours", "upstream")}
            lines.append(_row(f"state of 1 object, {frames} frames, KiB", sizes, names, ratios))
        for key, label in (("peak_rss_mb", "process"), ("peak_gpu_mb", "GPU")):
            if key in alone["ours"]:
                peak = {n: alone[n][key] for n in ("ours", "upstream")}
                lines.append(_row(f"peak {label} memory, MiB", peak, names, ratios))
        ours_state = max(alone["ours"]["state_bytes"].values())
        lines.append(
            f"CVAT func.py state, measured (1 + 7 frames of track_step outputs): "
            f"{paired['cvat_state_bytes'] / 1024:.0f} KiB; ours/CVAT: "
            f"{ours_state / paired['cvat_state_bytes']:.2f}"
        )
    lines.append(
        f"encoder: {paired['encoder_gflop']:.1f} GFLOP/frame; matmul rate "
        f"{paired['matmul_tflops']:.2f} TFLOP/s; torch threads {paired['torch_threads']}"
    )
    return "\n".join(lines)


def _run_systems(args, workdir: Path) -> tuple[dict, dict]:
    """Each system alone in its own process (peak memory, state size), then all in one process
    for the times."""
    results: dict[str, dict] = {}
    for system in ("paired",) if args.no_alone else ("ours", "upstream", "paired"):
        command = [sys.executable, __file__, *sys.argv[1:], "--system", system]
        command += ["--workdir", str(workdir)]
        started = time.perf_counter()
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        results[system] = json.loads(output.strip().splitlines()[-1])
        print(f"{system}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    paired = results.pop("paired")
    return paired, results


def main() -> None:
    args = _arguments()
    if args.system:
        return _child(args)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        _prepare(args, workdir)
        paired, alone = _run_systems(args, workdir)
    table = _table(paired, alone)
    print(table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("system", "workdir")}
    payload = {"settings": settings, "paired": paired, **alone}
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{args.name}.txt").write_text(table + "\n")


if __name__ == "__main__":
    main()
