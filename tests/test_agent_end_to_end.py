"""The real cvat-cli agent serving our function against a local CVAT stand-in server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cvat_sdk.masks import decode_mask
from shape_checks import assert_valid_shape

from tracker.cvat import shapes
from tracker.devtools.cvat_standin import CvatStandIn

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_FILE = ROOT / "ai-models" / "tracker" / "sam2" / "func.py"
TOKEN = "test-token"
SMALL = ["-p", "image_size=int:256"]


@pytest.fixture()
def standin(video):
    frames = [video.image(i) for i in range(8)]
    frames.append(video.image(8).resize((200, 150)))  # frame 8 has another size
    server = CvatStandIn(frames, TOKEN).start()
    yield server
    server.stop()


def _pythonpath() -> str:
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def cvat_cli(server: CvatStandIn, *args: str, token: str = TOKEN, **env: str):
    executable = shutil.which("cvat-cli")
    assert executable, "cvat-cli is not installed"
    return subprocess.run(
        [executable, "--server-host", server.url, *args],
        # The function files import `tracker` from this checkout, whichever copy is installed.
        env={**os.environ, "PYTHONPATH": _pythonpath(), "CVAT_ACCESS_TOKEN": token, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def register(server: CvatStandIn, *params: str) -> int:
    result = cvat_cli(
        server, "function", "create-native", "SAM2", f"--function-file={FUNCTION_FILE}", *params
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def test_create_native_registers_a_tracker_of_three_shape_types(standin, tiny_checkpoint):
    function_id = register(standin, *SMALL)
    function = standin.functions[function_id]
    assert function["kind"] == "tracker" and function["provider"] == "native"
    assert function["supported_shape_types"] == ["mask", "polygon", "rectangle"]


def test_registration_needs_no_weights_and_no_network(standin, tmp_path):
    empty_cache = tmp_path / "empty-hf-home"
    result = cvat_cli(
        standin,
        "function",
        "create-native",
        "SAM2 large",
        f"--function-file={FUNCTION_FILE}",
        "-p",
        "model_id=str:facebook/sam2.1-hiera-large",
        HF_HOME=str(empty_cache),
        HF_HUB_OFFLINE="1",
    )
    assert result.returncode == 0, result.stderr
    assert standin.functions[1]["kind"] == "tracker"
    assert not list(empty_cache.rglob("*.pt"))


def test_wrong_token_is_refused(standin):
    result = cvat_cli(
        standin,
        "function",
        "create-native",
        "SAM2",
        f"--function-file={FUNCTION_FILE}",
        token="wrong",
    )
    assert result.returncode != 0
    assert standin.unauthorized > 0 and not standin.functions


def test_agent_tracks_and_survives_failed_requests(standin, video, tiny_checkpoint):
    mask = video.masks[0]
    x1, y1, x2, y2 = shapes.rectangle_from_mask(mask)
    prompts = [
        {"type": "mask", "points": shapes.rle_from_mask(mask)},
        {"type": "polygon", "points": shapes.polygon_from_mask(mask, 1.0)},
        {"type": "rectangle", "points": [x1 - 2, y1 - 2, x2 + 2, y2 + 2]},
    ]
    init = standin.init_tracking(0, prompts)
    states = lambda server: server.completed[init]["states"]  # noqa: E731
    tracks = [standin.track(frame, states) for frame in range(1, 6)]
    unknown = standin.track(6, ["no-such-state"])
    malformed = standin.init_tracking(6, [{"type": "polygon", "points": [1, 1, 5, 5, 1, 1]}])
    resized = standin.track(8, states)
    after_failures = standin.track(6, states)

    function_id = register(standin, *SMALL)
    result = cvat_cli(
        standin,
        "function",
        "run-agent",
        str(function_id),
        "--burst",
        f"--function-file={FUNCTION_FILE}",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr

    assert len(standin.completed[init]["states"]) == 3
    for ar_id in [*tracks, after_failures]:
        completed = standin.completed[ar_id]
        assert completed["states"] == standin.completed[init]["states"]
        for prompt, shape in zip(prompts, completed["shapes"], strict=True):
            assert shape["type"] == prompt["type"]
            assert_valid_shape(shape["type"], shape["points"], 320, 240)

    assert "not found" in standin.failed[unknown]["exc_info"]
    malformed_error = standin.failed[malformed]["exc_info"]
    assert (
        "at least 3 distinct points" in malformed_error and "Unknown error" not in malformed_error
    )
    assert (
        "Image sizes of the start frame and the current frame are different"
        in (standin.failed[resized]["exc_info"])
    )


INTERACTOR_FILE = ROOT / "ai-models" / "interactor" / "sam2" / "func.py"


def test_interactor_registers_and_serves_clicks(standin, tiny_checkpoint):
    result = cvat_cli(standin, "function", "create-native", "SAM2 interactor",
                      f"--function-file={INTERACTOR_FILE}", *SMALL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    function = standin.functions[1]
    assert function["kind"] == "interactor"
    assert function["min_pos_points"] == 0 and function["startswith_box_optional"] is True
    clicks = [
        standin.interact(0, pos=[(160, 120)]),
        standin.interact(0, pos=[(160, 120)], neg=[(20, 20)]),
        standin.interact(0, box=[(110, 70), (210, 170)]),
        standin.interact(3, pos=[(150, 110)], box=[(110, 70), (210, 170)]),
    ]
    outside = standin.interact(0, pos=[(999, 5)])
    result = cvat_cli(standin, "function", "run-agent", "1", "--burst",
                      f"--function-file={INTERACTOR_FILE}", *SMALL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for ar_id in clicks:
        (shape,) = standin.completed[ar_id]["shapes"]
        assert shape["type"] == "mask"
        assert decode_mask(shape["points"], image_width=320, image_height=240).any()
    assert "outside the 320x240 image" in standin.failed[outside]["exc_info"]


def test_worker_survives_a_burst_of_bad_requests(standin, video, tiny_checkpoint):
    init = standin.init_tracking(
        0, [{"type": "mask", "points": shapes.rle_from_mask(video.masks[0])}]
    )
    states = lambda server: server.completed[init]["states"]  # noqa: E731
    bad = [
        standin.init_tracking(1, [{"type": "mask", "points": [5, 0, 0, 999, 999]}]),
        standin.init_tracking(1, [{"type": "polygon", "points": [1, 2, float("nan"), 4, 5, 6]}]),
        standin.init_tracking(1, [{"type": "rectangle", "points": [10, 10, 10, 10]}]),
        standin.init_tracking(1, [{"type": "ellipse", "points": [10, 10, 20, 20]}]),
        standin.init_tracking(99, [{"type": "rectangle", "points": [10, 10, 50, 50]}]),
        standin.track(2, ["no-such-state"]),
        standin.track(8, states),
    ]
    good = standin.track(1, states)
    function_id = register(standin, *SMALL)
    result = cvat_cli(standin, "function", "run-agent", str(function_id), "--burst",
                      f"--function-file={FUNCTION_FILE}", *SMALL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(bad) <= set(standin.failed)
    for ar_id in bad:
        assert "Unknown error" not in standin.failed[ar_id]["exc_info"]
        assert "Worker process crashed" not in standin.failed[ar_id]["exc_info"]
    # The state made before the burst still exists: the worker process was never restarted.
    (shape,) = standin.completed[good]["shapes"]
    assert shape["type"] == "mask"


def test_agent_with_a_wrong_model_fails_at_start_with_why(standin, tmp_path):
    """run-agent loads the model before taking requests: a missing checkpoint ends the agent
    with the reason in its log, instead of failing every request (create-native needs none)."""
    params = ["-p", "model_id=str:facebook/sam2.1-hiera-large"]
    function_id = register(standin, *params)
    request = standin.init_tracking(0, [{"type": "rectangle", "points": [10, 10, 50, 50]}])
    result = cvat_cli(standin, "function", "run-agent", str(function_id), "--burst",
                      f"--function-file={FUNCTION_FILE}", *params,
                      HF_HOME=str(tmp_path / "empty-hf-home"), HF_HUB_OFFLINE="1")  # fmt: skip
    assert result.returncode != 0
    assert "Could not get sam2.1_hiera_large.pt" in result.stderr
    assert request not in standin.completed and request not in standin.failed, "no request taken"
