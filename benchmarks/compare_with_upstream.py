"""Benchmark our tracking function against upstream SAM2VideoPredictor, side by side.

Both run the same random-weight model on the same synthetic frames: each alone in its own process
(so that peak memory is its own), then both in one process, frame by frame in turns, for the
per-object times (so that the machine's drift over minutes falls on both alike).

Figures: image-encoder time (with its FLOP count and this machine's matmul rate), per-object time
per frame at steady state for 1, 4 and 16 objects, tensor bytes of one object's state after 10,
100 and 1,000 frames, and peak process (and GPU) memory.

    python benchmarks/compare_with_upstream.py                      # CPU, 256 px, a few minutes
    python benchmarks/compare_with_upstream.py --image-size 1024 --device cuda --name gpu-1024
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
# the installed package (`pip install -e .`), `tracker.devtools`.
STEADY_FROM = 17  # past the 16-frame pointer window and the 7-frame memory bank


def _parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", default="facebook/sam2.1-hiera-tiny")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=24, help="frames per multi-object run")
    parser.add_argument("--objects", type=_parse_ints, default=[4, 16], help="besides 1 object")
    parser.add_argument("--state-frames", type=_parse_ints, default=[10, 100, 1000])
    parser.add_argument("--name", default="cpu-256", help="results go to benchmarks/results/NAME")
    parser.add_argument("--system", choices=["ours", "upstream", "paired"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def _prepare(args: argparse.Namespace, workdir: Path):
    """The offline model cache and the synthetic video, shared by both systems' processes."""
    os.environ["HF_HOME"] = str(workdir / "hf-home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tracker.devtools.checkpoints import ensure_hf_checkpoint
    from tracker.devtools.synthetic import make_video

    ensure_hf_checkpoint(workdir / "hf-home" / "hub", args.model_id)
    folder = workdir / "video"
    folder.mkdir(exist_ok=True)
    return make_video(folder, max(args.state_frames), width=320, height=240)


def _matmul_tflops(device, dtype) -> float:
    import torch

    n = 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _encoder_figures(model, device, dtype, image, image_size: int) -> dict:
    """Encoder time per frame (best of 5), FLOPs and share of the machine's matmul rate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tracker.engine.frames import to_model_input

    pixels = to_model_input(image, image_size).to(device)[None]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        model.forward_image(pixels)  # warm-up
        with FlopCounterMode(display=False) as counter:
            model.forward_image(pixels)
        times = []
        for _ in range(5):
            _sync(device)
            start = time.perf_counter()
            model.forward_image(pixels)
            _sync(device)
            times.append(time.perf_counter() - start)
    seconds = min(times)
    flops = counter.get_total_flops()
    rate = _matmul_tflops(device, dtype)
    return {
        "encoder_s": seconds,
        "encoder_gflop": flops / 1e9,
        "matmul_tflops": rate,
        "encoder_pct_of_matmul": 100 * flops / seconds / (rate * 1e12),
    }


def _steady(per_frame: list[float]) -> float:
    tail = per_frame[STEADY_FROM - 1 :] or per_frame
    return sorted(tail)[len(tail) // 2]  # median: robust to the odd slow frame


class _Timer:
    """Wraps a callable and sums the time spent in it."""

    def __init__(self, owner, name: str, device) -> None:
        self.total = 0.0
        original = getattr(owner, name)

        def timed(*a, **k):
            _sync(device)
            start = time.perf_counter()
            result = original(*a, **k)
            _sync(device)
            self.total += time.perf_counter() - start
            return result

        setattr(owner, name, timed)


class _OursRun:
    """`count` objects tracked by our function, driven frame by frame as the agent drives it."""

    def __init__(self, function, video, count: int, encode: _Timer, device) -> None:
        from tracker.cvat import shapes
        from tracker.devtools.agent_worker import AgentWorker

        self.video, self.count, self.encode, self.device = video, count, encode, device
        self.worker = AgentWorker(function)
        prompt = ("mask", shapes.rle_from_mask(video.masks[0]))
        self.ids = self.worker.init(video.image(0), *[prompt] * count)
        self.frame_idx = 0

    def step(self) -> float:
        """Track the next frame; returns the time per object, image encoder excluded."""
        self.frame_idx += 1
        image = self.video.image(self.frame_idx)
        self.encode.total = 0.0
        start = time.perf_counter()
        self.worker.track(image, self.ids)
        _sync(self.device)
        return (time.perf_counter() - start - self.encode.total) / self.count

    def state_bytes(self) -> int:
        from cvat_cli._internal import agent_driver_tracking

        container = agent_driver_tracking._tracking_states._id_to_ext_state
        return container[self.ids[0]].inner_state.object_state.nbytes()


class _UpstreamRun:
    """`count` objects through upstream's `init_state` + `add_new_mask` + `propagate_in_video`."""

    def __init__(self, model, video, count: int, frames: int, encode: _Timer, device) -> None:
        import torch

        from tracker.engine.model_loading import resolve_dtype

        dtype = resolve_dtype("auto", device)
        if device.type == "cuda":  # as upstream's notebooks set it on Ampere and newer GPUs
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.autocast = lambda: torch.autocast(
            device.type, dtype=dtype, enabled=dtype != torch.float32
        )
        self.count, self.encode, self.device = count, encode, device
        with self.autocast():
            self.state = model.init_state(str(video.folder), offload_video_to_cpu=True)
            for obj_id in range(count):
                model.add_new_mask(self.state, frame_idx=0, obj_id=obj_id, mask=video.masks[0])
            self.frames = model.propagate_in_video(self.state, max_frame_num_to_track=frames - 1)
            next(self.frames)  # the prompt frame
        self.frame_idx = 0

    def step(self) -> float:
        self.encode.total = 0.0
        start = time.perf_counter()
        with self.autocast():
            self.frame_idx, _, _ = next(self.frames)
        _sync(self.device)
        return (time.perf_counter() - start - self.encode.total) / self.count

    def state_bytes(self) -> int:
        import torch

        def walk(value):
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, dict | list | tuple):
                for item in value.values() if isinstance(value, dict) else value:
                    yield from walk(item)

        output = self.state["output_dict_per_obj"][0]
        unique = {t.data_ptr(): t for t in walk(output)}  # shared pos-enc tensors count once
        return sum(t.numel() * t.element_size() for t in unique.values())


def _ours_function(args):
    from tracker.cvat.tracking import create

    return create(model_id=args.model_id, device=args.device, image_size=args.image_size)


def _upstream_model(args, device):
    from tracker.engine.model_loading import build_model, resolve_model

    return build_model(resolve_model(args.model_id), device, args.image_size)


def _run_alone(args, video, device) -> dict:
    """One system in its own process: encoder figures, one object's state size over a long
    run, and (by the parent) this process's peak memory."""
    frames = max(args.frames, *args.state_frames)
    if args.system == "ours":
        function = _ours_function(args)
        model, dtype = function.engine.model, function.engine.dtype
        run = _OursRun(function, video, 1, _Timer(function.engine, "encode", device), device)
    else:
        from tracker.engine.model_loading import resolve_dtype

        model, dtype = _upstream_model(args, device), resolve_dtype("auto", device)
        run = _UpstreamRun(model, video, 1, frames, _Timer(model, "forward_image", device), device)
    result = _encoder_figures(model, device, dtype, video.image(0), args.image_size)
    result["state_bytes"] = {}
    for frame in range(1, frames):
        run.step()
        if frame + 1 in args.state_frames:
            result["state_bytes"][frame + 1] = run.state_bytes()
    return result


def _run_paired(args, video, device) -> dict:
    """Per-object times of both systems in one process on one model, frame by frame in turns
    (in both orders), so that the machine's drift over minutes falls on both alike."""
    function = _ours_function(args)
    model = function.engine.model
    ours_encode = _Timer(function.engine, "encode", device)
    upstream_encode = _Timer(model, "forward_image", device)
    timings: dict[str, dict[int, float]] = {"ours": {}, "upstream": {}}
    for count in [1, *args.objects]:
        runs = {
            "ours": _OursRun(function, video, count, ours_encode, device),
            "upstream": _UpstreamRun(model, video, count, args.frames, upstream_encode, device),
        }
        per_frame: dict[str, list[float]] = {"ours": [], "upstream": []}
        for frame in range(1, args.frames):
            order = ("ours", "upstream") if frame % 2 else ("upstream", "ours")
            for system in order:
                per_frame[system].append(runs[system].step())
        for system in timings:
            timings[system][count] = _steady(per_frame[system])
    return timings


def _cvat_reference_bytes(args) -> int:
    """CVAT's func.py keeps 1 conditioning + 7 memory frames of track_step outputs, each with its
    own maskmem features, positional encoding, low-res mask and pointer (float32)."""
    s, feat = args.image_size, args.image_size // 16
    maskmem = 64 * feat * feat * 4
    return 8 * (2 * maskmem + (s // 4) ** 2 * 4 + 256 * 4)


def _child(args: argparse.Namespace) -> None:
    import torch

    from tracker.engine.model_loading import resolve_device

    video = _prepare(args, args.workdir)
    device = resolve_device(args.device)
    run = _run_paired if args.system == "paired" else _run_alone
    result = run(args, video, device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))


def _table(ours: dict, upstream: dict, cvat_bytes: int) -> str:
    rows = [
        ("image encoder, ms/frame", ours["encoder_s"] * 1e3, upstream["encoder_s"] * 1e3),
        (
            "image encoder, % of matmul rate",
            ours["encoder_pct_of_matmul"],
            upstream["encoder_pct_of_matmul"],
        ),
    ]
    for count in ours["per_object_s"]:
        rows.append(
            (
                f"per object, ms/frame, {count} object(s)",
                ours["per_object_s"][count] * 1e3,
                upstream["per_object_s"][count] * 1e3,
            )
        )
    for frames in ours["state_bytes"]:
        rows.append(
            (
                f"state of 1 object after {frames} frames, KiB",
                ours["state_bytes"][frames] / 1024,
                upstream["state_bytes"][frames] / 1024,
            )
        )
    rows.append(("peak process memory, MiB", ours["peak_rss_mb"], upstream["peak_rss_mb"]))
    if "peak_gpu_mb" in ours:
        rows.append(("peak GPU memory, MiB", ours["peak_gpu_mb"], upstream["peak_gpu_mb"]))
    lines = [f"{'':44}{'ours':>12}{'upstream':>12}{'ours/up':>9}"]
    for label, a, b in rows:
        lines.append(f"{label:44}{a:12.1f}{b:12.1f}{a / b:9.2f}")
    lines.append(
        f"encoder: {ours['encoder_gflop']:.1f} GFLOP/frame; matmul rate "
        f"{ours['matmul_tflops']:.2f} TFLOP/s"
    )
    lines.append(
        f"CVAT func.py state (1 + 7 frames of outputs): {cvat_bytes / 1024:.0f} KiB; "
        f"ours/CVAT: {max(ours['state_bytes'].values()) / cvat_bytes:.2f}"
    )
    return "\n".join(lines)


def _run_systems(workdir: Path) -> dict[str, dict]:
    """Each system alone in its own process (peak memory, state size, encoder), then both in
    one process for the per-object times."""
    results: dict[str, dict] = {}
    for system in ("ours", "upstream", "paired"):
        command = [sys.executable, __file__, *sys.argv[1:], "--system", system]
        command += ["--workdir", str(workdir)]
        started = time.perf_counter()
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[system] = json.loads(output.strip().splitlines()[-1])
        print(f"{system}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    paired = results.pop("paired")
    for system in ("ours", "upstream"):
        results[system]["per_object_s"] = paired[system]
    return results


def main() -> None:
    args = _arguments()
    if args.system:
        return _child(args)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        _prepare(args, workdir)
        results = _run_systems(workdir)
    cvat_bytes = _cvat_reference_bytes(args)
    table = _table(results["ours"], results["upstream"], cvat_bytes)
    print(table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("system", "workdir")}
    payload = {"settings": settings, "cvat_reference_state_bytes": cvat_bytes, **results}
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{args.name}.txt").write_text(table + "\n")


if __name__ == "__main__":
    main()
