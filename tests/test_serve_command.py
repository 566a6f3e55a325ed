"""`sam2-tracker serve` run as an operator runs it: refusals before Ray, a clean start and stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tracker.devtools.redis_server import free_port

ROOT = Path(__file__).parent.parent
MODEL = ["--model-id", "facebook/sam2.1-hiera-tiny", "--image-size", "256", "--device", "cpu"]


def _serve(*args: str, token: str | None = None, sigint_ignored: bool = False) -> subprocess.Popen:
    """`serve` with these options; `sigint_ignored`: started as a script's background job is
    (`serve &` without job control), with SIGINT ignored, which Python would keep."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAM2_")}
    if token is not None:
        environ["SAM2_SERVER_TOKEN"] = token
    command = [sys.executable, "-m", "tracker", "serve", *MODEL, *args]
    if sigint_ignored:
        command = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    return subprocess.Popen(command, cwd=ROOT, env=environ, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_a_short_token_is_refused_with_how_to_make_one():
    process = _serve(token="x" * 15)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "too few to be secret" in err
    assert "secrets.token_urlsafe(32)" in err


def test_a_taken_port_is_a_message_not_a_traceback():
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = _serve("--insecure", "--port", str(taken.getsockname()[1]))
        out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "another program uses that port" in err
    assert "Traceback" not in err


def _started(*args: str, sigint_ignored: bool = False) -> tuple[subprocess.Popen, int]:
    """`serve` started on a free port, once it has said so; started again on another port if
    someone took the first between asking and binding (a busy machine)."""
    for _ in range(3):
        port = free_port()
        process = _serve(*args, "--port", str(port), sigint_ignored=sigint_ignored)
        for line in process.stdout:  # ends when the process does; Ray's start-up may be slow
            if line.startswith("SAM2 server on"):
                return process, port
        out, err = process.communicate(timeout=120)
        if "another program uses that port" not in err:
            pytest.fail(f"serve ended before it said it started ({process.returncode}): {err}")
    pytest.fail("three free ports were taken before serve bound them")


def test_start_and_a_clean_stop(tiny_checkpoint):
    """Ctrl+C (SIGINT) stops it cleanly, even started with SIGINT ignored, as a script's
    `serve &` is (the loaded CI run that found this was started so, and hung for 180 s)."""
    process, port = _started("--insecure", sigint_ignored=True)
    try:
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=60)
        assert health.json()["status"] == "ready" and health.json()["warm_up_s"] > 0
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()  # a hung stop fails the test without leaving a server behind
            raise
    assert process.returncode == 0, err
    assert "SAM2 server stopped." in err
    for noise in ("Traceback", "graceful_shutdown", "ray.kill", "ERROR"):
        assert noise not in err, err


def test_a_broken_checkpoint_is_refused_before_any_replica_starts(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    process = _serve("--insecure", "--port", str(free_port()), "--model-id", str(broken),
                     "--config", "sam2.1_hiera_t")  # fmt: skip
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert "no PyTorch checkpoint" in err and "SAM2 checkpoint" in err
    assert "Ray" not in err and "Traceback" not in err, "refused before Ray starts"


def test_device_auto_asks_ray_for_a_gpu_per_replica_on_a_cuda_host(monkeypatch):
    import argparse

    import torch

    from tracker.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--device", "auto"])
    environ = {"SAM2_SERVER_TOKEN": "t" * 32}
    assert serve.config_from_args(args, environ).gpus_per_replica == (
        1.0 if torch.cuda.is_available() else 0.0
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host, as torch sees it
    assert serve.config_from_args(args, environ).gpus_per_replica == 1.0
    args = parser.parse_args(["serve", "--device", "auto", "--gpus-per-replica", "0.5"])
    assert serve.config_from_args(args, environ).gpus_per_replica == 0.5
