"""A server replica's admission and its count of running work, through its HTTP handler but
without Ray: one replica built in this process (the tiny model at 256 px), requests handed to it
on an event loop as Ray Serve hands them, cancelled as Ray Serve's request timeout cancels them.
The test sets the replica's clock and estimate and holds its computation; nothing reads the wall
clock."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from starlette.requests import Request

from tracker.serve.admission import Admission, StepEstimate

TOKEN = "t" * 32
SETTINGS = {"SAM2_IMAGE_SIZE": "256", "SAM2_DEVICE": "cpu"}  # as test_server.py builds one
BUDGET = 43.0


@pytest.fixture(scope="module")
def built(tiny_checkpoint):
    from tracker.serve.app import Sam2Server, ServerLimits

    limits = ServerLimits(token=TOKEN, max_body_bytes=2**20, replicas="1")
    return Sam2Server.func_or_class(SETTINGS, limits)


class Held:
    """The tracker's computation, held until `release`; counts its calls."""

    def __init__(self) -> None:
        self.calls, self.started, self.released = 0, threading.Event(), threading.Event()

    def __call__(self, body: bytes) -> tuple[int, dict]:
        self.calls += 1
        self.started.set()
        assert self.released.wait(timeout=60), "the test never released it"
        return 200, {"shapes": [], "states": []}


@pytest.fixture()
def replica(built, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(built, "_admission", Admission(BUDGET, StepEstimate(1.0), lambda: clock[0]))
    held = Held()
    monkeypatch.setattr(built._tracker, "handle", held)
    yield built, held
    held.released.set()


def _request(path: str, body: bytes | None = None) -> Request:
    headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    scope = {"type": "http", "method": "GET" if body is None else "POST", "path": path,
             "headers": headers, "query_string": b"", "scheme": "http",
             "server": ("127.0.0.1", 80), "root_path": ""}  # fmt: skip

    async def receive() -> dict:
        return {"type": "http.request", "body": body or b"", "more_body": False}

    return Request(scope, receive)


async def _until(condition) -> None:
    """Let the replica's threads get somewhere (a bound against hanging, not a measurement)."""
    for _ in range(6000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the replica never got there")


async def _health(server) -> dict:
    return json.loads((await server(_request("/health"))).body)


def test_busy_is_503_at_once_and_work_ray_gave_up_on_still_counts(replica):
    server, held = replica

    async def scenario() -> None:
        first = asyncio.create_task(server(_request("/tracker", b"{}")))
        await _until(held.started.is_set)
        server._admission.estimate = StepEstimate(30.0)  # 30 s left of it, 30 more: past 43 s
        refused = await server(_request("/tracker", b"{}"))
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "17", "30 + 30 - 43 s"
        assert "busy" in json.loads(refused.body)["message"]
        first.cancel()  # Ray Serve's request timeout
        with pytest.raises(asyncio.CancelledError):
            await first
        health = await _health(server)
        assert health["requests_in_progress"] == 1, "its thread still computes"
        held.released.set()
        await _until(lambda: server._admission.in_progress() == 0)
        assert (await _health(server))["requests_in_progress"] == 0

    asyncio.run(scenario())
    assert held.calls == 1, "the refused request was not computed"


def test_a_request_cancelled_while_waiting_never_computes(replica):
    server, held = replica

    async def scenario() -> None:
        first = asyncio.create_task(server(_request("/tracker", b"{}")))
        await _until(held.started.is_set)
        second = asyncio.create_task(server(_request("/tracker", b"{}")))
        await _until(lambda: server._admission.waiting() == 1)
        assert (await _health(server))["requests_waiting"] == 1
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert server._admission.in_progress() == 1, "the waiting one stopped counting"
        held.released.set()
        assert (await first).status_code == 200
        await _until(lambda: server._admission.in_progress() == 0)

    asyncio.run(scenario())
    assert held.calls == 1, "the cancelled request never computed, so never committed"
