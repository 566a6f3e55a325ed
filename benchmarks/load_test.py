"""Load test of the SAM2 server: N concurrent clients, each tracking M objects over F frames.

It starts the server on loopback (local Ray, random-weight model, a local `redis-server` unless
`--redis-url` is given), runs the clients as CVAT would drive the Nuclio proxies (one request per
frame with all of a client's objects), and prints and records requests per second, p50/p95
latency, errors and lost states (both must be 0), and Redis memory per object. Bounded: N x F
requests, each with a timeout, and a deadline for the whole run; loopback only.

    python benchmarks/load_test.py                                   # CPU, 256 px, about 2 min
    python benchmarks/load_test.py --device cuda --image-size 1024 --replicas 1 --name gpu-load
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from tracker.cvat import shapes
from tracker.devtools.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--objects", type=int, default=2, help="objects per client")
    parser.add_argument("--frames", type=int, default=12, help="frames per client")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--redis-url", help="default: a local redis-server on a free port")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--name", default="cpu-load", help="results go to benchmarks/results/NAME")
    return parser.parse_args()


def _client(url, token, video, args, out: dict, deadline: float) -> None:
    """One annotator: start its objects on frame 0, then one request per frame for all of them."""
    headers = {"Authorization": f"Bearer {token}"}
    frames = [base64.b64encode(p.read_bytes()).decode() for p in video.frames]
    x1, y1, x2, y2 = shapes.rectangle_from_mask(video.masks[0])
    boxes = [[x1 - 2 - i, y1 - 2, x2 + 2 + i, y2 + 2] for i in range(args.objects)]
    states = None
    for index in range(args.frames):
        if time.monotonic() > deadline:
            out["errors"].append("deadline")
            return
        body = {"image": frames[index % len(frames)]}
        body.update({"shapes": boxes} if states is None else {"states": states})
        started = time.perf_counter()
        try:
            reply = requests.post(f"{url}/tracker", json=body, headers=headers, timeout=300)
        except requests.RequestException as e:
            out["errors"].append(str(e))
            return
        out["latencies"].append(time.perf_counter() - started)
        if reply.status_code == 404:
            out["lost"] += len(states or [])
            return
        if reply.status_code != 200:
            out["errors"].append(f"{reply.status_code} {reply.text[:200]}")
            return
        states = reply.json()["states"]


def main() -> None:
    args = _arguments()
    workdir = Path(tempfile.mkdtemp(prefix="sam2-load-"))
    # A random-weight model in an offline Hugging Face cache, set before huggingface_hub loads.
    os.environ["HF_HOME"] = str(workdir / "hf-home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import redis

    from tracker.devtools.checkpoints import ensure_hf_checkpoint
    from tracker.devtools.synthetic import make_video

    ensure_hf_checkpoint(workdir / "hf-home" / "hub", "facebook/sam2.1-hiera-tiny")
    (workdir / "video").mkdir()
    video = make_video(workdir / "video", num_frames=12, width=640, height=480)
    local_redis = None
    if args.redis_url:
        redis_url = args.redis_url
    else:
        (workdir / "redis").mkdir()
        local_redis = RedisServer(workdir / "redis").start()
        redis_url = f"redis://:{local_redis.password}@127.0.0.1:{local_redis.port}/0"

    from tracker.serve import server

    store = redis.Redis.from_url(redis_url)
    token = secrets.token_urlsafe(32)
    config = server.ServerConfig(
        settings={
            "SAM2_IMAGE_SIZE": str(args.image_size),
            "SAM2_DEVICE": args.device,
            "SAM2_REDIS_URL": redis_url,
        },
        token=token,
        port=free_port(),
        replicas=args.replicas,
        gpus_per_replica=1.0 if args.device.startswith("cuda") else 0.0,
    )
    url = server.start(config)
    try:
        memory_before = store.info("memory")["used_memory"]
        out = {"latencies": [], "errors": [], "lost": 0}
        deadline = time.monotonic() + args.deadline
        threads = [
            threading.Thread(target=_client, args=(url, token, video, args, out, deadline))
            for _ in range(args.clients)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        objects = args.clients * args.objects
        memory_per_object = (store.info("memory")["used_memory"] - memory_before) / objects
    finally:
        server.stop()
        if local_redis is not None:
            local_redis.stop()
    latencies = sorted(out["latencies"])
    result = {
        "clients": args.clients,
        "objects_per_client": args.objects,
        "frames": args.frames,
        "replicas": args.replicas,
        "image_size": args.image_size,
        "device": args.device,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(len(latencies) / elapsed, 3),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "errors": len(out["errors"]),
        "error_examples": out["errors"][:3],
        "lost_states": out["lost"],
        "redis_bytes_per_object": round(memory_per_object),
    }
    text = "\n".join(f"{key:>24}: {value}" for key, value in result.items())
    print(text)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / f"{args.name}.txt").write_text(text + "\n")
    if result["errors"] or result["lost_states"]:
        raise SystemExit("errors or lost states: see above")


if __name__ == "__main__":
    main()
