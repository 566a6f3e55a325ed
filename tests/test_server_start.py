"""Ray Serve started where Ray's worker processes start slowly, as on a loaded 2-core machine:
Ray's own waits (its controller's 5 s proxy readiness check, `serve.start`'s fixed 60 s) must not
end the start (`server.start_serve`)."""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tracker.devtools.redis_server import free_port
from tracker.serve import server

WORKER_START_S = 8.0  # each Ray worker process sleeps this long before it runs anything


@pytest.fixture()
def slow_ray(monkeypatch):
    """A local Ray whose every worker process (controller, proxy) starts WORKER_START_S late, and
    a `serve.start` that gives up on its proxy after 1 s (as after 60 s on a busy machine)."""
    import ray
    from ray import serve
    from ray.serve._private import api

    monkeypatch.setattr(api, "HTTP_PROXY_TIMEOUT", 1)
    ray.shutdown()
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        # a lambda travels by value (cloudpickle): the workers cannot import this test module
        runtime_env={"worker_process_setup_hook": lambda: time.sleep(WORKER_START_S)},
    )
    yield
    serve.shutdown()
    ray.shutdown()


def test_a_proxy_slower_than_rays_own_waits_is_waited_for(slow_ray):
    config = server.ServerConfig(settings={}, token=None, insecure=True, port=free_port())
    started = time.monotonic()
    server.start_serve(config)
    assert time.monotonic() - started > WORKER_START_S  # it was slow, and it was waited for
    with pytest.raises(urllib.error.HTTPError) as answer:  # no application deployed yet
        urllib.request.urlopen(f"http://127.0.0.1:{config.port}/-/healthz", timeout=30)
    assert answer.value.code == 503  # Ray's proxy answered
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path(), "serve")
    controller = "".join(log.read_text() for log in logs.glob("controller_*.log"))
    assert "Controller starting" in controller  # its log, read
    assert "readiness check" not in controller, "the first proxy was killed as not ready"


def test_a_proxy_that_never_answers_is_a_message_within_the_start_timeout(slow_ray):
    config = server.ServerConfig(
        settings={}, token=None, insecure=True, port=free_port(), start_timeout_s=2
    )
    with pytest.raises(server.ServerStartError, match="within 2 s.*--start-timeout longer"):
        server.start_serve(config)


def test_serve_start_timeout_option_and_its_default():
    from tracker.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    environ = {"SAM2_SERVER_TOKEN": "t" * 32}
    given = serve.config_from_args(parser.parse_args(["serve", "--start-timeout", "900"]), environ)
    assert given.start_timeout_s == 900
    default = serve.config_from_args(parser.parse_args(["serve"]), environ)
    assert default.start_timeout_s == server.START_TIMEOUT_S
    assert f"default {server.START_TIMEOUT_S:g}" in _serve_help(parser)


def _serve_help(parser: argparse.ArgumentParser) -> str:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["serve"].format_help()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("sam2", "http://sam2:8000"),
    ],
)
def test_the_servers_url_brackets_an_ipv6_host(host, url):
    """The URL `serve` prints and its proxy wait polls (`http://::1:8000` names no port)."""
    assert server._http_url(host, 8000) == url
