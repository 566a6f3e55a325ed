"""The chain of timeouts (`tracker.cvat.lambda_protocol.timeouts`): each shorter than the one
outside it, up to CVAT 2.73's wait for a function (`CVAT_NUCLIO_DEFAULT_TIMEOUT`, 120 s by default,
cvat/settings/base.py; views.py answers 504 itself after it), in the code's defaults, in every
function file, and in what the proxy does when tries fail."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from nuclio_driver import SERVERLESS

from tracker.cvat.lambda_protocol import remote, timeouts
from tracker.cvat.lambda_protocol.remote import RemoteConfigError, RemoteService
from tracker.cvat.lambda_protocol.remote_replies import Busy, Failure
from tracker.serve import server
from tracker.serve.server import ServerConfig

FILES = sorted(SERVERLESS.glob("*/nuclio/function*.yaml"))


def _seconds(value: str) -> float:
    return float(value.rstrip("s"))


def test_the_defaults_form_a_chain_within_cvats_wait():
    assert timeouts.Chain().problems() == []
    assert timeouts.Chain().cvat == 120.0
    assert (
        ServerConfig(settings={}, token=None).request_timeout_s == timeouts.SERVER_REQUEST_TIMEOUT_S
    )


def test_a_link_that_does_not_fit_is_named_by_its_settings():
    problems = timeouts.Chain(server_request=60.0).problems()
    assert problems == [
        "serve --request-timeout (60 s) must be shorter than SAM2_SERVER_READ_TIMEOUT (50 s)"
    ]
    late = timeouts.Chain(event=130.0).problems()
    assert late == [
        "the function's eventTimeout (130 s) must be shorter than "
        "CVAT_NUCLIO_DEFAULT_TIMEOUT (120 s)"
    ]


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_function_file_answers_before_cvat_gives_up(path):
    spec = yaml.safe_load(path.read_text())["spec"]
    event = _seconds(spec["eventTimeout"])
    if path.name != "function-proxy.yaml":
        assert timeouts.Chain(event=event).problems() == []
        return
    env = {item["name"]: float(item["value"]) for item in spec["env"]
           if item["name"].endswith("TIMEOUT")}  # fmt: skip
    chain = timeouts.Chain(
        connect=env["SAM2_SERVER_CONNECT_TIMEOUT"],
        read=env["SAM2_SERVER_READ_TIMEOUT"],
        call=env["SAM2_SERVER_CALL_TIMEOUT"],
        event=event,
    )
    assert chain.problems() == []
    assert chain == timeouts.Chain(), "the files carry the code's defaults"


def test_a_longer_server_timeout_is_answered_with_a_whole_chain_that_fits():
    assert server.proxy_advice(ServerConfig(settings={}, token=None)) is None
    advice = server.proxy_advice(ServerConfig(settings={}, token=None, request_timeout_s=300))
    chain = timeouts.for_server_request(300)
    assert chain.problems() == [] and chain.cvat > timeouts.CVAT_TIMEOUT_S
    for setting in (f"SAM2_SERVER_READ_TIMEOUT={chain.read:g}",
                    f"SAM2_SERVER_CALL_TIMEOUT={chain.call:g}",
                    f"eventTimeout of {chain.event:g}s",
                    f"CVAT_NUCLIO_DEFAULT_TIMEOUT={chain.cvat:g}"):  # fmt: skip
        assert setting in advice
    assert timeouts.for_server_request(30) == dataclasses.replace(
        timeouts.Chain(), server_request=30
    )


def test_a_proxy_whose_one_try_outlasts_its_whole_call_is_refused():
    environ = {"SAM2_SERVER_URL": "http://sam2:8000", "SAM2_SERVER_READ_TIMEOUT": "120"}
    with pytest.raises(RemoteConfigError, match="SAM2_SERVER_CALL_TIMEOUT"):
        RemoteService.from_env(environ, "tracker")
    RemoteService.from_env({**environ, "SAM2_SERVER_CALL_TIMEOUT": "250"}, "tracker")


class _Clock:
    """Time that moves only when a try or a back-off takes it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("first_try_s", [0.0, 10.0, 45.0, 52.0, 55.0])
def test_the_proxy_never_starts_a_try_that_could_end_after_its_call_timeout(
    monkeypatch, first_try_s
):
    # Every later try takes the longest it may (connect and read timeouts): the whole call must
    # still end within SAM2_SERVER_CALL_TIMEOUT, so the proxy's message reaches CVAT.
    clock = _Clock()
    monkeypatch.setattr(remote, "time", clock)
    service = RemoteService("http://sam2:8000", "tracker", "token")
    durations = iter([first_try_s])
    tries = []

    def ask(data):
        tries.append(clock.now)
        clock.now += next(durations, timeouts.CONNECT_TIMEOUT_S + timeouts.READ_TIMEOUT_S)
        return 504, {"message": "no answer"}, Failure.RETRIED

    monkeypatch.setattr(service, "_ask", ask)
    assert service.handle({"image": "x"})[0] == 504
    assert clock.now <= timeouts.CALL_TIMEOUT_S
    if first_try_s <= timeouts.SERVER_REQUEST_TIMEOUT_S:
        assert len(tries) >= 2, "a try that failed by the server's own timeout is asked again"


@pytest.mark.parametrize(
    ("hints", "tries_at"),
    [
        ([40.0, 40.0], [0.0, 40.0]),  # 40 + 55 fits in 105 s; 40 + 40 + 55 does not
        ([60.0], [0.0]),  # a hint past the call timeout is answered at once
        # more refusals than retries of failures (2), and a hint of 0 waits the back-off (0.5 s)
        ([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 3.5]),
    ],
)
def test_a_busy_server_is_asked_again_after_its_hint_only_within_the_call_timeout(
    monkeypatch, hints, tries_at
):
    clock = _Clock()
    monkeypatch.setattr(remote, "time", clock)
    service = RemoteService("http://sam2:8000", "tracker", "token")
    answers = iter(hints)
    tries = []

    def ask(data):
        tries.append(clock.now)
        hint = next(answers, None)
        if hint is None:
            return 200, {"shapes": []}, Failure.FINAL
        return 503, {"message": "The SAM2 server at x is busy: ..."}, Busy(hint)

    monkeypatch.setattr(service, "_ask", ask)
    status, answer = service.handle({"image": "x"})
    assert tries == tries_at, "each try after the server's hint, none that could end too late"
    assert clock.now <= timeouts.CALL_TIMEOUT_S
    if len(tries) == len(hints):
        assert status == 503
        assert (
            "busy" in answer["message"] and "SAM2_SERVER_CALL_TIMEOUT (105 s)" in answer["message"]
        )
    else:
        assert status == 200
