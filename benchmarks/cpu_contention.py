"""Seconds per frame of our agent function beside CPU-bound processes, per OpenMP wait policy.

Each case runs in a fresh Python (OpenMP reads its policy once, when PyTorch loads it) that
tracks one mask through a synthetic video at 256 px with the tiny random-weight model, the way
cvat-cli's agent drives it (systems.OursAgent); `--busy N` other processes spin on the cores
meanwhile (`while True: pass`, as another job on a shared host would). Policies: "default"
(OMP_WAIT_POLICY empty: libgomp spins a while, then sleeps), "PASSIVE" (this package's default,
tracker/__init__.py), "ACTIVE". The median frame counts; the load average beside each case
says how busy the machine was besides.

    python benchmarks/cpu_contention.py --name cpu-contention-256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
POLICIES = {"default": "", "PASSIVE": "PASSIVE", "ACTIVE": "ACTIVE"}


def _one_case(args: argparse.Namespace) -> None:
    """In the case's own process: the per-frame seconds, as JSON on stdout."""
    import torch

    sys.path.insert(0, str(HERE))
    from systems import OursAgent

    from tracker.cvat.agent.tracking import create
    from tracker.devtools.synthetic import make_video

    function = create(
        model_id="facebook/sam2.1-hiera-tiny", device="cpu", image_size=256, threads=args.threads[0]
    )
    folder = args.workdir / f"video-{os.getpid()}"
    folder.mkdir()
    video = make_video(folder, args.frames + 1, width=320, height=240)
    run = OursAgent(function, video, 1, torch.device("cpu"))
    seconds = [run.step() for _ in range(args.frames)]
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))


def _measure(args: argparse.Namespace, policy: str, threads: int, busy: int) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(1)
        load = os.getloadavg()[0]
        env = {**os.environ, "OMP_WAIT_POLICY": POLICIES[policy]}
        command = [sys.executable, __file__, "--case", "--workdir", str(args.workdir)]
        command += ["--threads", str(threads), "--frames", str(args.frames)]
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"the case failed:\n{out.stderr[-3000:]}")
    finally:
        for spinner in spinners:
            spinner.kill()
    seconds = json.loads(out.stdout.splitlines()[-1])["seconds"]
    median = sorted(seconds)[len(seconds) // 2]
    return {
        "policy": policy,
        "threads": threads,
        "busy": busy,
        "load_before": load,
        "median_s": median,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="keep the results as benchmarks/results/NAME.{json,txt}")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        _one_case(args)
        return

    sys.path.insert(0, str(HERE))
    from recording import record

    with tempfile.TemporaryDirectory() as folder:
        args.workdir = Path(folder)
        os.environ["HF_HOME"] = str(args.workdir / "hf-home")
        os.environ["HF_HUB_OFFLINE"] = "1"
        from tracker.devtools.checkpoints import ensure_hf_checkpoint

        ensure_hf_checkpoint(args.workdir / "hf-home" / "hub", "facebook/sam2.1-hiera-tiny")
        cases = [
            _measure(args, policy, threads, busy)
            for busy in args.busy
            for threads in args.threads
            for policy in args.policies
        ]
    lines = [
        f"agent function, 1 mask, 256 px, tiny random-weight model, {args.frames} frames, "
        f"{os.cpu_count()} cores; median seconds per frame",
        "| busy processes | threads | policy | s/frame | load average before |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c['busy']} | {c['threads']} | {c['policy']} | {c['median_s']:.2f} | "
        f"{c['load_before']:.1f} |"
        for c in cases
    ]
    record(args.name, {"frames": args.frames, "cases": cases}, lines)


if __name__ == "__main__":
    main()
