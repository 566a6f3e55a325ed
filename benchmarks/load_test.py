"""Load test of the SAM2 server: N concurrent clients, each tracking M objects over F frames.

It starts the server on loopback (local Ray, random-weight model, a local `redis-server` unless
`--redis-url` is given), runs the clients as CVAT would drive the Nuclio proxies (one request per
frame with all of a client's objects; a refusal, 503 with Retry-After, asked again after its hint
and a timeout at once, as the proxy does, while the frame's time, `--frame-timeout`, lasts), and
prints and records requests per second, the requests answered, refused (503) and timed out (Ray
Serve's 408, a 504, or the client's own timeout) with their latency percentiles, the time per
frame, errors and lost states (both must be 0), and Redis memory per object. Bounded: N x F
frames, each request with a timeout, and a deadline for the whole run; loopback only.

    python benchmarks/load_test.py                                   # CPU, 256 px, about 2 min
    python benchmarks/load_test.py --clients 12 --replicas 1 --request-timeout 5 \
        --frame-timeout 30 --threads 1 --name cpu-overload          # more than a replica serves
    python benchmarks/load_test.py --device cuda --image-size 1024 --replicas 1 --name gpu-load
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import sys
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
    parser.add_argument("--threads", type=int, help="SAM2_THREADS of each replica")
    parser.add_argument("--request-timeout", type=float, default=45.0, help="serve's")
    parser.add_argument("--frame-timeout", type=float, default=105.0,
                        help="a frame's tries, as SAM2_SERVER_CALL_TIMEOUT")  # fmt: skip
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--note", default="", help="recorded with the results (which code ran)")
    parser.add_argument("--name", default="cpu-load", help="results go to benchmarks/results/NAME")
    return parser.parse_args()


def _client(url, token, video, args, out: dict, deadline: float) -> None:
    """One annotator: start its objects on frame 0, then one request per frame for all of them,
    each frame asked until answered while its `--frame-timeout` lasts."""
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
        reply = _frame(url, headers, body, args, out)
        if reply is None:
            out["frames_given_up"] += 1
            return
        out["frame_s"].append(reply[1])
        if reply[0].status_code == 404:
            out["lost"] += len(states or [])
            return
        if reply[0].status_code != 200:
            out["errors"].append(f"{reply[0].status_code} {reply[0].text[:200]}")
            return
        states = reply[0].json()["states"]


def _frame(url, headers, body, args, out: dict) -> tuple[requests.Response, float] | None:
    """Ask for one frame as the proxy would: after a refusal's Retry-After, at once after a
    timeout; the final reply and the frame's seconds, or None when its time ran out."""
    started = time.perf_counter()
    while True:
        left = args.frame_timeout - (time.perf_counter() - started)
        if left <= 0:
            return None
        asked = time.perf_counter()
        try:
            reply = requests.post(f"{url}/tracker", json=body, headers=headers,
                                  timeout=min(left, args.request_timeout + 5))  # fmt: skip
        except requests.Timeout:
            out["timed_out_s"].append(time.perf_counter() - asked)
            continue
        except requests.RequestException as e:
            out["errors"].append(str(e))
            return None
        seconds = time.perf_counter() - asked
        if reply.status_code in (408, 504):
            out["timed_out_s"].append(seconds)
            continue
        if reply.status_code == 503 and "Retry-After" in reply.headers:
            out["refused_s"].append(seconds)
            time.sleep(min(float(reply.headers["Retry-After"]), max(left - seconds, 0)))
            continue
        out["answered_s"].append(seconds)
        return reply, time.perf_counter() - started


def _machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor() or "unknown CPU"
    return f"{platform.node()}: {os.cpu_count()} CPUs ({model}), no GPU used"


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    at = {q: ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (50, 90, 99)}
    return {"count": len(ordered), **{f"p{q}_s": round(v, 3) for q, v in at.items()},
            "max_s": round(ordered[-1], 3)}  # fmt: skip


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
    settings = {
        "SAM2_IMAGE_SIZE": str(args.image_size),
        "SAM2_DEVICE": args.device,
        "SAM2_REDIS_URL": redis_url,
    }
    if args.threads:
        settings["SAM2_THREADS"] = str(args.threads)
    config = server.ServerConfig(
        settings=settings,
        token=token,
        request_timeout_s=args.request_timeout,
        port=free_port(),
        replicas=args.replicas,
        gpus_per_replica=1.0 if args.device.startswith("cuda") else 0.0,
    )
    url = server.start(config)
    try:
        memory_before = store.info("memory")["used_memory"]
        out = {"answered_s": [], "refused_s": [], "timed_out_s": [], "frame_s": [],
               "frames_given_up": 0, "errors": [], "lost": 0}  # fmt: skip
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
    asked = len(out["answered_s"]) + len(out["refused_s"]) + len(out["timed_out_s"])
    result = {
        "machine": _machine(),
        "note": args.note,
        "command": " ".join(["benchmarks/load_test.py", *sys.argv[1:]]),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "clients": args.clients,
        "objects_per_client": args.objects,
        "frames": args.frames,
        "replicas": args.replicas,
        "threads_per_replica": args.threads,
        "image_size": args.image_size,
        "device": args.device,
        "request_timeout_s": args.request_timeout,
        "frame_timeout_s": args.frame_timeout,
        "requests": asked,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(asked / elapsed, 3),
        "answered": _percentiles(out["answered_s"]),
        "refused_503": _percentiles(out["refused_s"]),
        "timed_out": _percentiles(out["timed_out_s"]),
        "frames_answered": _percentiles(out["frame_s"]),
        "frames_given_up": out["frames_given_up"],
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
