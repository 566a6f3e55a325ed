"""Time per frame and state memory per object with 1, 2 and 4 prompted (conditioning) frames.

An object prompted again keeps its earlier prompted frames (issue 26); each adds a memory frame
and a pointer to what memory attention reads on every later frame. This measures the cost: the
median step time of one object past its first frames (the image encoder's pass included, as a
request pays it) and its state's bytes once its memory window is full, for each count of
prompted frames, prompts 5 frames apart. Random weights: the time and memory are the model's,
the masks mean nothing.

    python benchmarks/conditioning_frames.py --image-size 256 --name cpu-conditioning-256
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from recording import record  # beside this file: run as a script

SPACING = 5  # frames between prompts


def _run(engine, video, prompted: int, steps: int) -> dict:
    state = None
    for k in range(prompted):
        index = k * SPACING
        frame = engine.encode(video.image(index))
        state, _ = engine.start_from_mask(
            frame, video.masks[index], earlier=state, distance=SPACING if state else 0
        )
    times = []
    first = (prompted - 1) * SPACING
    for step in range(1, steps + 1):
        began = time.perf_counter()
        engine.step(engine.encode(video.image(first + step)), state)
        times.append(time.perf_counter() - began)
    steady = times[len(times) // 2 :]
    return {
        "prompted_frames": prompted,
        "median_step_s": statistics.median(steady),
        "state_bytes": state.nbytes(),
        "steps_timed": len(steady),
    }


def _cpu() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model-id", default="facebook/sam2.1-hiera-tiny")
    parser.add_argument("--name", help="write benchmarks/results/NAME.json and .txt")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="conditioning-"))
    os.environ.setdefault("HF_HOME", str(workdir / "hf-home"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tracker.devtools.checkpoints import ensure_hf_checkpoint
    from tracker.devtools.synthetic import make_video
    from tracker.engine.model_loading import build_model, resolve_model
    from tracker.engine.streaming import StreamingSam2

    ensure_hf_checkpoint(Path(os.environ["HF_HOME"]) / "hub", args.model_id)
    frames = 3 * SPACING + args.steps + 1
    (workdir / "video").mkdir()
    video = make_video(workdir / "video", frames, width=1280, height=720)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(resolve_model(args.model_id), device, args.image_size)
    engine = StreamingSam2(model, max_conditioning_frames=4)
    _run(engine, video, 1, 3)  # warm-up
    rows = [_run(engine, video, n, args.steps) for n in (1, 2, 4)]
    result = {
        "model": args.model_id,
        "image_size": args.image_size,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else _cpu(),
        "cpu_threads": torch.get_num_threads(),
        "video": "synthetic 1280x720",
        "rows": rows,
    }
    lines = [
        f"{args.model_id} at {args.image_size} px on {result['device']} "
        f"({result['cpu_threads']} threads)",
        "prompted frames | step s | state KiB",
    ]
    lines += [f"{r['prompted_frames']} | {r['median_step_s']:.3f} | {r['state_bytes'] / 1024:.0f}"
              for r in rows]  # fmt: skip
    record(args.name, result, lines)


if __name__ == "__main__":
    main()
