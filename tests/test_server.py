"""The SAM2 server on a real local Ray Serve (loopback), with a real redis-server, and the Nuclio
functions as its thin proxies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading

import pytest
import requests
import torch
from nuclio_driver import NuclioFunction, frame_b64, track_frames, tracker_body

from tracker.cvat import shapes
from tracker.devtools.redis_server import free_port, refusing_port
from tracker.serve import server

TOKEN = secrets.token_urlsafe(32)
SETTINGS = {"SAM2_IMAGE_SIZE": "256", "SAM2_DEVICE": "cpu"}
FRAMES = 6
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def live_server(redis_server, tiny_checkpoint):
    import ray

    cores = os.cpu_count() or 1  # never more CPUs than the machine has (2 here)
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    redis_url = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    config = server.ServerConfig(
        # One thread per replica: two replicas share the machine's cores without oversubscribing.
        settings={**SETTINGS, "SAM2_THREADS": "1", "SAM2_REDIS_URL": redis_url},
        token=TOKEN,
        replicas=2,
        cpus_per_replica=cores / 2,
        max_body_mb=8,
    )
    for _ in range(3):  # a port taken between asking and binding: start again on another
        try:
            url = server.start(dataclasses.replace(config, port=free_port()))
            break
        except server.ServerConfigError as e:
            if "port" not in str(e):
                raise
    yield url
    server.stop()


@pytest.fixture()
def local_env(monkeypatch):
    """The in-process functions, computing as a replica does: Ray gives each replica as many
    threads as CPUs (1 here), and float sums in another order flip noisy random-weight pixels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    yield from _local_env(monkeypatch)
    monkeypatch.undo()
    torch.set_num_threads(threads)


def _local_env(monkeypatch):
    for name in ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_REDIS_HOST", "SAM2_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    yield monkeypatch


def post(url: str, path: str, body: dict, token: str | None = TOKEN) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.post(f"{url}/{path}", json=body, headers=headers, timeout=120)


def _start(video) -> list:
    rle = shapes.rle_from_mask(video.masks[0])
    x1, y1, x2, y2 = shapes.rectangle_from_mask(video.masks[0])
    return [{"type": "mask", "points": rle}, [x1 - 3, y1 - 3, x2 + 3, y2 + 3]]


def _in_process(video) -> list:
    return track_frames([NuclioFunction("tracker")], video, _start(video), FRAMES)


def test_health_says_ready_to_anyone_and_details_with_the_token(live_server):
    anyone = requests.get(f"{live_server}/health", timeout=30)
    assert anyone.json() == {"status": "ready"}, "no model, host, Redis or error text"
    assert "X-SAM2-Replica" not in anyone.headers
    health = requests.get(f"{live_server}/health", headers=AUTH, timeout=30).json()
    assert health["status"] == "ready" and health["replicas"] == "2" and health["warm_up_s"] > 0
    assert health["model"] == "facebook/sam2.1-hiera-tiny" and health["device"] == "cpu"
    assert health["redis"] == "reachable"
    answered_by = {requests.get(f"{live_server}/health", headers=AUTH, timeout=30).json()["replica"]
                   for _ in range(20)}  # fmt: skip
    assert len(answered_by) == 2, "requests spread over both replicas"


def test_warm_up_runs_the_model_and_keeps_no_state(tiny_checkpoint):
    from tracker.cvat import env_options
    from tracker.cvat.lambda_protocol import services
    from tracker.serve.app import warm_up

    tracker = services.build_tracker(env_options.tracker_options(SETTINGS), None)
    interactor = services.build_interactor(env_options.interactor_settings(SETTINGS))
    warm_up(tracker, interactor)
    assert len(interactor.cache) == 1, "the blank frame was encoded"
    assert len(tracker.store) == 0, "the warm-up's object is in a throwaway store"


def test_health_waits_for_redis_off_the_event_loop(tiny_checkpoint):
    """A Redis that accepts and never answers (a packet-dropping network) stalls only the health
    request that asks it, not the requests next to it on the replica's event loop."""
    from starlette.requests import Request

    from tracker.serve.app import Sam2Server, ServerLimits

    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen()
    url = f"redis://:secret@127.0.0.1:{stalled.getsockname()[1]}/0"
    limits = ServerLimits(token=TOKEN, max_body_bytes=2**20, replicas="1")
    replica = Sam2Server.func_or_class({**SETTINGS, "SAM2_REDIS_URL": url}, limits)

    def request(path: str) -> Request:
        headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
        scope = {"type": "http", "method": "GET", "path": path, "headers": headers,
                 "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 80),
                 "root_path": ""}  # fmt: skip
        return Request(scope)

    async def health_then_another():
        health = asyncio.create_task(replica(request("/health")))
        await asyncio.sleep(0)  # the health request starts first
        other = asyncio.create_task(replica(request("/elsewhere")))
        done, _ = await asyncio.wait({health, other}, return_when=asyncio.FIRST_COMPLETED)
        return done == {other}, await health

    other_first, health = asyncio.run(health_then_another())
    stalled.close()
    assert other_first, "the other request was answered while Redis kept health waiting"
    assert json.loads(health.body)["redis"].startswith("unreachable")


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_no_or_wrong_token_is_401_and_computes_nothing(live_server, redis_server, video, token):
    keys = redis_server.client().dbsize()
    reply = post(live_server, "tracker", tracker_body(video.frames[0], _start(video), None), token)
    assert reply.status_code == 401 and "Bearer" in reply.json()["message"]
    assert redis_server.client().dbsize() == keys, "no object was started"


def test_bodies_over_the_limit_are_refused(live_server):
    reply = post(live_server, "interactor", {"image": "A" * (9 * 2**20)})
    assert reply.status_code == 413 and "8 MB" in reply.json()["message"]


def test_chunked_bodies_over_the_limit_are_refused_as_they_arrive(live_server):
    sent = []

    def chunks():  # no Content-Length: only counting the arriving body can refuse it
        for _ in range(9):
            sent.append(2**20)
            yield b"A" * 2**20

    headers = {**AUTH, "Content-Type": "application/json"}
    reply = requests.post(f"{live_server}/interactor", data=chunks(), headers=headers, timeout=60)
    assert reply.request.headers.get("Transfer-Encoding") == "chunked"
    assert reply.status_code == 413 and "8 MB" in reply.json()["message"]


def _track_remote(url: str, video, before_step=lambda index, replicas: None, seen=None) -> list:
    """Track on the server frame by frame; `before_step` sees the replicas that answered, and
    `seen` (a dict) the states about to be stepped."""
    reply = post(url, "tracker", tracker_body(video.frames[0], _start(video), None))
    states = reply.json()["states"]
    remote, replicas = [], []
    for index in range(1, FRAMES):
        if seen is not None:
            seen["states"] = states
        before_step(index, replicas)
        reply = post(url, "tracker", tracker_body(video.frames[index], None, states))
        assert reply.status_code == 200, reply.text
        remote.append(reply.json()["shapes"])
        states = reply.json()["states"]
        replicas.append(reply.headers["X-SAM2-Replica"])
        states = reply.json()["states"]
    return remote


def test_tracker_answers_equal_the_in_process_functions(live_server, local_env, video):
    assert _track_remote(live_server, video) == _in_process(video)


def test_interactor_answers_equal_the_in_process_functions(live_server, local_env, video):
    body = {"image": frame_b64(video.frames[0]), "pos_points": [[160, 120]], "neg_points": []}
    expected = NuclioFunction("interactor").call(body)
    reply = post(live_server, "interactor", body)
    assert (reply.status_code, reply.json()) == expected
    bad = post(live_server, "interactor", {"image": body["image"]})
    assert bad.status_code == 400 and "point or a box" in bad.json()["message"]


def test_a_replica_killed_during_a_request_loses_nothing(live_server, local_env, video):
    """The replica holding a step request (its body half received) dies; the step asked again
    is answered as if nothing had happened, and tracking continues on the other replica."""

    def kill_during(index: int, replicas: list[str]) -> None:
        if index != 3:
            return
        states = replicas_states["states"]
        body = json.dumps(tracker_body(video.frames[index], None, states)).encode()
        release, outcome = threading.Event(), []

        def held_body():
            yield body[: len(body) // 2]
            release.wait(timeout=120)
            yield body[len(body) // 2 :]

        def send() -> None:
            try:
                reply = requests.post(f"{live_server}/tracker", data=held_body(),
                                      headers=AUTH, timeout=120)  # fmt: skip
                outcome.append(reply.status_code)
            except requests.RequestException as e:
                outcome.append(e)

        sender = threading.Thread(target=send)
        sender.start()
        busy = _replica_in_progress(live_server)
        host, pid = busy.rsplit(":", 1)
        assert host == socket.gethostname()
        os.kill(int(pid), signal.SIGKILL)
        release.set()
        sender.join(timeout=150)
        assert outcome and outcome[0] != 200, f"the request died with its replica: {outcome}"

    replicas_states: dict = {}
    assert _track_remote(live_server, video, kill_during, replicas_states) == _in_process(video)


def _replica_in_progress(url: str) -> str:
    """The replica (host:pid) that reports a request in progress; health requests land on a
    replica at random, so ask until that one answers."""
    for _ in range(200):
        health = requests.get(f"{url}/health", headers=AUTH, timeout=30).json()
        if health["requests_in_progress"]:
            return health["replica"]
    raise AssertionError("no replica reported the request in progress")


def test_nuclio_proxy_gives_the_same_shapes_and_builds_no_model(live_server, local_env, video):
    local = _in_process(video)
    local_env.setenv("SAM2_SERVER_URL", live_server)
    local_env.setenv("SAM2_SERVER_TOKEN", TOKEN)

    def no_model(*args, **kwargs):
        raise AssertionError("a proxy must not build a model")

    local_env.setattr("tracker.engine.model_loading.build_model", no_model)
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], _start(video), None))
    assert status == 200
    proxied = []
    for index in range(1, FRAMES):
        status, answer = function.call(tracker_body(video.frames[index], None, answer["states"]))
        assert status == 200, answer
        proxied.append(answer["shapes"])
    assert proxied == local
    local_env.setenv("SAM2_SERVER_TOKEN", "wrong")
    status, answer = NuclioFunction("interactor").call({"image": frame_b64(video.frames[0])})
    assert status == 502 and "refused this function's token" in answer["message"]


def test_a_proxy_imports_only_the_standard_library_and_requests():
    listed = "import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    code = (
        "from tracker.cvat.lambda_protocol import nuclio_glue; "
        "nuclio_glue.tracker_service({'SAM2_SERVER_URL': 'http://127.0.0.1:9'}); "
        "nuclio_glue.interactor_service({'SAM2_SERVER_URL': 'http://127.0.0.1:9'}); "
    )

    def modules(code: str) -> set[str]:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return set(json.loads(run.stdout))

    bare = modules(listed)  # what the interpreter and site hooks load anyway
    imported = modules(code + listed) - bare - set(sys.stdlib_module_names) - {"tracker"}
    allowed = _distribution_modules("requests")
    assert imported <= allowed, f"a proxy image lacks {sorted(imported - allowed)}"
    assert "requests" in imported


def _distribution_modules(name: str) -> set[str]:
    """The top-level modules of a distribution and of everything it requires."""
    by_module = importlib.metadata.packages_distributions()
    wanted, pending = set(), [name]
    while pending:
        dist = importlib.metadata.distribution(pending.pop())
        if dist.name.lower() in wanted:
            continue
        wanted.add(dist.name.lower())
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                pending.append(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])
    return {m for m, dists in by_module.items() if {d.lower() for d in dists} & wanted}


def test_server_stopped_is_a_clear_5xx(local_env):
    with refusing_port() as port:
        local_env.setenv("SAM2_SERVER_URL", f"http://127.0.0.1:{port}")
        status, answer = NuclioFunction("interactor").call({"image": "x", "pos_points": [[1, 1]]})
    assert status == 502 and "refused the connection" in answer["message"]


def test_server_not_answering_is_a_504_after_the_tracker_asks_again(local_env):
    """A tracker request that got no answer may have been served; the server answers a repeat
    as the first time, so the proxy asks again (within SAM2_SERVER_CALL_TIMEOUT)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    local_env.setenv("SAM2_SERVER_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    local_env.setenv("SAM2_SERVER_READ_TIMEOUT", "1")
    status, answer = NuclioFunction("tracker").call({"image": "x", "states": ["y"]})
    assert status == 504 and "did not answer within 1 s" in answer["message"]
    listener.close()
    assert len(held) >= 2, "a tracker request that got no answer is asked again"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"token": None}, "SAM2_SERVER_TOKEN"),
        ({"token": "x"}, r"too few to be secret.*secrets.token_urlsafe\(32\)"),
        ({"token": None, "insecure": True, "host": "0.0.0.0"}, "loopback"),
        ({"replicas": 2}, "--redis-url"),
        ({"min_replicas": 1}, "both --min-replicas and --max-replicas"),
        ({"settings": {"SAM2_IMAGE_SIZE": "100"}}, "multiple of 32"),
        ({"settings": {"SAM2_REDIS_URL": "http://nope"}}, "SAM2_REDIS_URL is not a Redis URL"),
        ({"start_timeout_s": 0}, "--start-timeout must be positive"),
    ],
)
def test_server_settings_that_cannot_work_are_refused_before_ray(changes, fragment):
    config = server.ServerConfig(**{"settings": {}, "token": TOKEN, **changes})
    with pytest.raises(ValueError, match=fragment):
        server.check(config)


def test_insecure_on_loopback_is_allowed():
    server.check(server.ServerConfig(settings={}, token=None, insecure=True))


def test_stopping_deletes_only_our_application(live_server):
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    def other(request) -> str:
        return "other"

    serve.run(other.bind(), name="other", route_prefix="/other")
    server.undeploy()
    try:
        applications = serve.status().applications
        assert "other" in applications and server.APP_NAME not in applications
    finally:
        serve.delete("other")
