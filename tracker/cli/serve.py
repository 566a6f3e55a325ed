"""`sam2-tracker serve`: the remote SAM2 server for CVAT's Nuclio functions, on Ray Serve.

Model options are the Nuclio functions' `SAM2_*` settings; options given here override them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from tracker.cvat.lambda_protocol import timeouts

_MODEL_OPTIONS = [
    ("--model-id", "model_id", "a Hugging Face id of SAM2, a local .pt file or a folder"),
    (
        "--config",
        "config",
        "the architecture of a checkpoint with another name, e.g. sam2.1_hiera_t",
    ),
    ("--device", "device", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"),
    ("--dtype", "dtype", "auto, float32, bfloat16 or float16"),
    ("--image-size", "image_size", "SAM2's input size, a multiple of 32 (default: the model's)"),
    ("--max-state-memory-mb", "max_state_memory_mb", "per replica, without Redis (default 2048)"),
    (
        "--max-conditioning-frames",
        "max_conditioning_frames",
        "the prompted frames an object prompted again keeps, the newest (1 to 16, default 4)",
    ),
    ("--threads", "threads", "PyTorch's CPU threads per replica (default: its cores, at most 8)"),
    ("--redis-url", "redis_url", "redis://:PASSWORD@HOST:PORT/0 for tracking states"),
]


def _limit_options() -> list[tuple[str, str, str]]:
    """The limits of one request, from the parameter table (`SAM2_MAX_OBJECTS`, ...)."""
    from tracker.cvat.options import INTERACTOR_LIMITS, TRACKER_LIMITS

    specs = {spec.name: spec for spec in (*TRACKER_LIMITS, *INTERACTOR_LIMITS)}.values()
    return [("--" + s.name.replace("_", "-"), s.name, f"{s.help} ({s.default})") for s in specs]


_MODEL_OPTIONS += _limit_options()


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the SAM2 server for CVAT's Nuclio functions (Ray Serve)",
        description=__doc__.split("\n\n")[0] + " Clients send SAM2_SERVER_TOKEN as a bearer token.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (%(default)s)")
    parser.add_argument("--replicas", type=int, default=1, help="model replicas (%(default)s)")
    parser.add_argument("--min-replicas", type=int, help="autoscale from this many replicas")
    parser.add_argument("--max-replicas", type=int, help="... up to this many")
    parser.add_argument("--gpus-per-replica", type=float, help="default: 1 on CUDA, else 0")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="(%(default)s)")
    parser.add_argument("--address", help="a Ray cluster to join, e.g. auto (default: local)")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="(%(default)s)")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=timeouts.SERVER_REQUEST_TIMEOUT_S,
        help="seconds (%(default)s); a replica admits only requests it can compute within it, "
        "less 2 s (else 503 with Retry-After); longer needs longer proxy and CVAT timeouts",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        help="seconds Ray Serve's controller and HTTP proxy may take to start (default 600); "
        "longer on a busy machine",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="no token: allowed on a loopback host only"
    )
    for option, _, text in _MODEL_OPTIONS:
        parser.add_argument(option, help=text)


def config_from_args(args: argparse.Namespace, environ: dict[str, str]):
    from tracker.cvat.env_options import device, variable
    from tracker.serve.server import ServerConfig

    settings = {k: v for k, v in environ.items() if k.startswith("SAM2_")}
    for _, name, _ in _MODEL_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            settings[variable(name)] = str(value)
    settings.pop("SAM2_SERVER_TOKEN", None)  # replicas need no token in their settings
    gpus = args.gpus_per_replica
    if gpus is None:  # the device as replicas will resolve it ("auto" is CUDA on a GPU host)
        resolved = device(settings)
        gpus = 1.0 if resolved.type == "cuda" else 0.0
    return ServerConfig(
        settings=settings,
        token=environ.get("SAM2_SERVER_TOKEN") or None,
        host=args.host,
        port=args.port,
        insecure=args.insecure,
        replicas=args.replicas,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        gpus_per_replica=gpus,
        cpus_per_replica=args.cpus_per_replica,
        address=args.address,
        max_body_mb=args.max_body_mb,
        request_timeout_s=args.request_timeout,
        **({} if args.start_timeout is None else {"start_timeout_s": args.start_timeout}),
    )


def phrased_for_serve(error: Exception, args: argparse.Namespace) -> str:
    """A parameter given on this command line is named as its option (`--image-size 512`), one
    from the environment as its variable (`SAM2_IMAGE_SIZE=512`)."""
    from tracker.cvat.options import ModelConfigError, Syntax

    original = error.__cause__ if isinstance(error.__cause__, ModelConfigError) else error
    if not isinstance(original, ModelConfigError):
        return str(error)
    given = {name for _, name, _ in _MODEL_OPTIONS if getattr(args, name, None) is not None}
    return original.render(lambda p: (Syntax.CLI if p.name in given else Syntax.ENV).phrase(p))


def run(args: argparse.Namespace) -> int:
    from tracker.cvat.options import ModelConfigError
    from tracker.serve import server

    try:
        config = config_from_args(args, dict(os.environ))
        server.check(config)
    except server.ServerConfigError as e:
        print(f"sam2-tracker serve: error: {e}", file=sys.stderr)
        return 2
    except ModelConfigError as e:
        print(f"sam2-tracker serve: error: {phrased_for_serve(e, args)}", file=sys.stderr)
        return 2
    advice = server.proxy_advice(config)
    if advice:
        print(f"sam2-tracker serve: note: {advice}", file=sys.stderr)
    try:
        url = server.start(config)
    except server.ServerStartError as e:
        print(f"sam2-tracker serve: error: {e}", file=sys.stderr)
        return 1
    print(f"SAM2 server on {url} (POST /tracker, POST /interactor, GET /health); Ctrl+C stops it")
    stopped = threading.Event()
    # Ctrl+C and SIGTERM stop it, also where the shell that started it ignored SIGINT (`serve &`
    # in a script, without job control), which Python would otherwise keep ignoring.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: stopped.set())
    stopped.wait()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C ends the stop
    print("Stopping the SAM2 server...", file=sys.stderr)
    server.stop()
    print("SAM2 server stopped.", file=sys.stderr)
    return 0
