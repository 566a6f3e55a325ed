"""Served tracking side by side: Redis traffic per object-step, and time per frame of the agent
function, the Nuclio tracker with its in-process store, with Redis, and the server over HTTP.

All run the same random-weight model on the same synthetic full-HD JPEG frames, each frame sent
as CVAT sends it (the agent: a decoded image from cvat-cli; the lambda protocol: base64 of the
JPEG file in JSON). Traffic is read from Redis's own counters (`INFO stats`:
`total_net_output_bytes` is what Redis sent, i.e. what the tracker read; `total_net_input_bytes`
what it wrote), per object-step once every replica has seen the objects (a replica's first step
of an object reads it whole): one replica stepping every frame, and two alternating frames (each
with its own cache), and, for comparison, one without a cache. Times: the systems take frames in
turns, frame by frame, so that the machine's drift falls on all alike; the median from
`--steady-from` on.

    python benchmarks/served_tracking.py --image-size 256 --objects 4,16 --name served-cpu-256
    python benchmarks/served_tracking.py --image-size 1024 --objects 4 --frames 6 \
        --steady-from 3 --traffic-shapes rectangle,mask --name served-cpu-1024
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # systems.py beside this file


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", default="facebook/sam2.1-hiera-tiny")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--objects", default="4,16", help="comma-separated object counts")
    parser.add_argument("--frames", type=int, default=10, help="frames per timed run")
    parser.add_argument("--steady-from", type=int, default=4, help="first frame timed")
    parser.add_argument("--no-server", action="store_true", help="skip the HTTP server")
    parser.add_argument(
        "--traffic-shapes", default="rectangle,polygon,mask", help="shape types of traffic runs"
    )
    parser.add_argument("--name", default="served-cpu-256", help="results: benchmarks/results/")
    return parser.parse_args()


def _lambda_tracker(args, redis_client=None):
    from tracker.cvat.env_options import tracker_options
    from tracker.cvat.lambda_protocol.services import build_tracker

    options = tracker_options(
        {"SAM2_MODEL_ID": args.model_id, "SAM2_IMAGE_SIZE": str(args.image_size)}
    )
    return build_tracker(options, redis_client)


class Lambda:
    """A lambda-protocol tracker (in process, or the server over HTTP) driven as CVAT drives it:
    all of a frame's objects in one request, the states of the last answer sent back."""

    def __init__(self, call, video, count: int, shape_type: str = "mask") -> None:
        from systems import _mask_prompts

        from tracker.cvat import shapes

        self.call, self.video = call, video
        encode = {
            "mask": shapes.rle_from_mask,
            "polygon": lambda mask: shapes.polygon_from_mask(mask, 1.0),
            "rectangle": shapes.rectangle_from_mask,
        }[shape_type]
        prompts = [{"type": shape_type, "points": encode(m)} for m in _mask_prompts(video, count)]
        self.states = self._request(0, {"shapes": prompts})
        self.frame_idx = 0

    def _request(self, index: int, body: dict) -> list:
        image = base64.b64encode(self.video.frames[index].read_bytes()).decode()
        status, answer = self.call({"image": image, **body})
        if status != 200:
            raise RuntimeError(f"{status}: {answer}")
        return answer["states"]

    def step(self) -> float:
        self.frame_idx += 1
        start = time.perf_counter()
        self.states = self._request(self.frame_idx, {"states": self.states})
        return time.perf_counter() - start


def _in_process(tracker):
    return lambda body: tracker.handle(json.dumps(body).encode())


def _in_turns(calls: list):
    """Requests taken by `calls` in turn, as replicas would take them."""
    turns = itertools.cycle(calls)
    return lambda body: next(turns)(body)


def _over_http(url: str, token: str):
    import requests

    session = requests.Session()

    def call(body: dict) -> tuple[int, dict]:
        reply = session.post(
            f"{url}/tracker", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=600
        )
        return reply.status_code, reply.json()

    return call


def traffic(args, video, redis_server, count: int) -> dict:
    """Bytes per object-step that Redis sent (read) and received (written), from frame 3 on,
    per shape type (a step also writes the shape it answered: a polygon's or a mask's RLE more
    than a rectangle)."""
    results = {
        shape_type: _traffic(args, video, redis_server, count, shape_type)
        for shape_type in args.traffic_shapes.split(",")
    }
    results["memory entry bytes"] = _entry_bytes(args, video)
    return results


def _traffic(args, video, redis_server, count: int, shape_type: str) -> dict:
    from tracker.cvat.stores.state_cache import StateCache

    client = redis_server.client()
    where = f"127.0.0.1:{redis_server.port}"
    results = {}
    for name, replicas in (("one replica", 1), ("two alternating", 2), ("no cache", 1)):
        trackers = [_lambda_tracker(args, (client, where)) for _ in range(replicas)]
        if name == "no cache":
            trackers[0].store.cache = StateCache(0)
        calls = [_in_process(t) for t in trackers]
        driver = Lambda(_in_turns(calls), video, count, shape_type)
        for _ in range(2):
            driver.step()
        before = client.info("stats")
        steps = args.frames - 3
        for _ in range(steps):
            driver.step()
        after = client.info("stats")
        per = steps * count
        results[name] = {
            "read_bytes_per_object_step": (
                after["total_net_output_bytes"] - before["total_net_output_bytes"]
            )
            / per,
            "written_bytes_per_object_step": (
                after["total_net_input_bytes"] - before["total_net_input_bytes"]
            )
            / per,
        }
    return results


def _entry_bytes(args, video) -> int:
    """One memory entry (memory features and object pointer) at this size, for reference."""
    engine = _lambda_tracker(args).tracker.engine
    object_state, _ = engine.start_from_mask(engine.encode(video.image(0)), video.masks[0])
    entry = object_state.conditioning[0]
    return sum(t.numel() * t.element_size() for t in (entry.maskmem_features, entry.obj_ptr))


def timing(args, video, systems: dict, count: int) -> dict:
    times = {name: [] for name in systems}
    for _ in range(1, args.frames):
        for name, system in systems.items():  # in turns
            times[name].append(system.step())
    steady = {}
    for name, per_frame in times.items():
        tail = sorted(per_frame[args.steady_from - 1 :])
        steady[name] = tail[len(tail) // 2]
    memory = steady["nuclio, in-process store"]
    return {
        "seconds_per_frame": steady,
        "ratio_to_in_process_store": {name: t / memory for name, t in steady.items()},
        "all_frames": times,
    }


def main() -> None:
    args = _arguments()
    workdir = Path(tempfile.mkdtemp(prefix="sam2-served-"))
    os.environ["HF_HOME"] = str(workdir / "hf-home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from systems import OursAgent

    from tracker.cvat.agent.tracking import create
    from tracker.devtools.checkpoints import ensure_hf_checkpoint
    from tracker.devtools.redis_server import RedisServer, free_port
    from tracker.devtools.synthetic import make_video

    ensure_hf_checkpoint(workdir / "hf-home" / "hub", args.model_id)
    (workdir / "video").mkdir()
    video = make_video(workdir / "video", args.frames, width=1920, height=1080)
    for folder in ("redis", "server-redis"):
        (workdir / folder).mkdir()
    redis_server = RedisServer(workdir / "redis").start()
    result = {"image_size": args.image_size, "threads": torch.get_num_threads(), "objects": {}}
    url = token = None
    try:
        if not args.no_server:
            import ray

            from tracker.serve import server

            ray.init(num_cpus=torch.get_num_threads(), include_dashboard=False, log_to_driver=False)
            token = secrets.token_urlsafe(32)
            server_redis = RedisServer(workdir / "server-redis").start()
            settings = {
                "SAM2_MODEL_ID": args.model_id,
                "SAM2_IMAGE_SIZE": str(args.image_size),
                "SAM2_REDIS_URL": f"redis://:{server_redis.password}@127.0.0.1:"
                f"{server_redis.port}/0",
            }
            url = server.start(
                server.ServerConfig(
                    settings=settings,
                    token=token,
                    port=free_port(),
                    replicas=1,
                    cpus_per_replica=float(torch.get_num_threads()),
                    request_timeout_s=600,
                )
            )
        where = (redis_server.client(), f"127.0.0.1:{redis_server.port}")
        for count in [int(c) for c in args.objects.split(",")]:
            entry = {"redis traffic": traffic(args, video, redis_server, count)}
            systems = {
                "agent function": OursAgent(
                    create(model_id=args.model_id, image_size=args.image_size), video, count,
                    torch.device("cpu"),
                ),
                "nuclio, in-process store": Lambda(
                    _in_process(_lambda_tracker(args)), video, count
                ),
                "nuclio, redis": Lambda(_in_process(_lambda_tracker(args, where)), video, count),
            }  # fmt: skip
            if url is not None:
                systems["server over HTTP (1 replica)"] = Lambda(
                    _over_http(url, token), video, count
                )
            entry["timing"] = timing(args, video, systems, count)
            result["objects"][count] = entry
            print(json.dumps({count: entry}, indent=1, default=str), flush=True)
    finally:
        redis_server.stop()
        if url is not None:
            server.stop()
            server_redis.stop()
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
