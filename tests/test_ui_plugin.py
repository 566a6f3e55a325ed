"""The CVAT UI plugin (`cvat-ui-plugin/`): its Node tests, type check, lint and a real browser.

The Node tests and the browser reach our real tracker (random-weight SAM2 at 256 px, tracking
states in a real redis-server) through `tracker.devtools.lambda_standin`, CVAT's lambda endpoint
as a stand-in. Their results are then compared with the tracker called directly, frame by frame.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from nuclio_driver import SERVERLESS

from tracker.cvat import env_options, shapes
from tracker.cvat.lambda_protocol.services import build_tracker
from tracker.devtools.lambda_standin import LambdaStandIn

PLUGIN = Path(__file__).parent.parent / "cvat-ui-plugin"
PROMPT_FRAMES = (0, 4, 8)


def _npm(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    assert shutil.which("npm"), "npm is not installed: run the README's set-up command"
    assert (PLUGIN / "node_modules").is_dir(), "run `npm ci` in cvat-ui-plugin (README set-up)"
    return subprocess.run(
        ["npm", *args], cwd=PLUGIN, env={**os.environ, **(env or {})}, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def _prompts(video) -> dict[str, dict[str, list]]:
    """The object drawn three ways on each prompt frame, as CVAT stores them."""
    prompts = {}
    for frame in PROMPT_FRAMES:
        mask = video.masks[frame]
        x1, y1, x2, y2 = shapes.rectangle_from_mask(mask)
        prompts[str(frame)] = {
            "polygon": shapes.polygon_from_mask(mask, 1.0),
            "mask": shapes.rle_from_mask(mask),
            "rectangle": [x1 - 3, y1 - 3, x2 + 3, y2 + 3],
        }
    return prompts


@pytest.fixture(scope="module")
def lambda_tracker(tiny_checkpoint, redis_server):
    options = env_options.tracker_options({"SAM2_IMAGE_SIZE": "256", "SAM2_DEVICE": "cpu"})
    return build_tracker(options, env_options.redis_client(redis_server.env))


@pytest.fixture(scope="module")
def standin(lambda_tracker, video):
    server = LambdaStandIn(video.frames, lambda_tracker, static=PLUGIN).start()
    width, height = video.image(0).size
    server.extra.update(width=width, height=height, prompts=_prompts(video))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node_run(standin, tmp_path_factory):
    """`npm test` once for the module: the plugin's Node tests, with what they committed."""
    results = tmp_path_factory.mktemp("plugin-results")
    run = _npm("test", env={"STANDIN_URL": standin.url, "RESULTS_DIR": str(results)})
    (results / "npm-test.out").write_text(run.stdout + run.stderr)  # the whole log, to read
    return run, results


def test_node_tests_pass(node_run):
    run, results = node_run
    failed = [line for line in run.stdout.splitlines() if line.lstrip().startswith("not ok")]
    whole = f"(the whole log: {results / 'npm-test.out'})"
    assert run.returncode == 0, "\n".join([*failed, whole, run.stdout[-8000:] + run.stderr[-4000:]])
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout, run.stdout[-2000:]


def test_npm_test_runs_every_test_file_whatever_fails(tmp_path):
    """Every file runs, one at a time (they share one stand-in), and any failure fails the run
    (issue 25 item 8: files chained by `&&` let a failing file hide every later one). Run on two
    scratch files, the first failing: the second must still run. A shell loop, not Node 20's
    `--test-concurrency`, which Debian's Node 18 lacks."""
    script = json.loads((PLUGIN / "package.json").read_text())["scripts"]["test"]
    tests = script.split("&&", 1)[1]  # after the build
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "a.test.mjs").write_text("throw new Error('first file fails');\n")
    (tmp_path / "tests" / "b.test.mjs").write_text(
        "import fs from 'node:fs'; fs.writeFileSync('b-ran', '');\n"
    )
    run = subprocess.run(["sh", "-c", tests], cwd=tmp_path, capture_output=True, timeout=120)
    assert run.returncode != 0, "a failing file fails npm test"
    assert (tmp_path / "b-ran").exists(), "the file after a failing one still ran"


MARK_PX = 1 / 16  # the plugin marks its polygons and rectangles by moving points this far at most


def _agree(committed: list, answered: list) -> bool:
    """What the plugin committed equals the tracker's answers, but for the plugin's mark on the
    points of polygons and rectangles (automatic.ts; mask points are committed as answered)."""
    pairs = [
        (a, b)
        for on_frame, answers in zip(committed, answered, strict=True)
        for a, b in zip(on_frame, answers, strict=True)
    ]
    return all(
        len(a) == len(b) and all(abs(p - q) <= MARK_PX + 1e-9 for p, q in zip(a, b, strict=True))
        for a, b in pairs
    )


def _direct(lambda_tracker, video):
    """The Nuclio tracker called directly on the video's frames: (frame, shapes, states)."""

    def call(frame: int, shapes_: list | None, states: list | None) -> dict:
        image = base64.b64encode(video.frames[frame].read_bytes()).decode()
        status, answer = lambda_tracker.handle(
            {"image": image, "shapes": shapes_, "states": states}
        )
        assert status == 200, answer
        return answer

    return call


@pytest.mark.parametrize("name", ["forward", "backward"])
def test_results_equal_the_tracker_called_directly(node_run, lambda_tracker, video, name):
    """What the plugin committed through CVAT's endpoint equals the Nuclio tracker's answers
    when it is called directly with the frames one by one (legacy-free typed shapes)."""
    recorded = json.loads((node_run[1] / f"{name}.json").read_text())

    call = _direct(lambda_tracker, video)

    states = call(recorded["start"], recorded["prompts"], None)["states"]
    direct = []
    for frame in recorded["frames"]:
        answer = call(frame, None, states)
        states = answer["states"]
        direct.append([shape["points"] for shape in answer["shapes"]])
    assert _agree(recorded["tracked"], direct)


def test_conditioned_run_equals_the_tracker_prompted_on_both(node_run, lambda_tracker, video):
    """A run from a corrected keyframe (earlier.test.mjs) committed what the Nuclio tracker
    answers when called directly with the earlier keyframe as a start, the correction as a
    prompt again beside its state, then states only: the plugin conditioned on both."""
    recorded = json.loads((node_run[1] / "conditioned.json").read_text())

    call = _direct(lambda_tracker, video)

    def walked(states: list) -> list:
        tracked = []
        for frame in recorded["frames"]:
            answer = call(frame, None, states)
            states = answer["states"]
            tracked.append([shape["points"] for shape in answer["shapes"]])
        return tracked

    (earlier,) = recorded["earlier"]
    states = call(earlier["frame"], earlier["shapes"], [None])["states"]
    conditioned = walked(call(recorded["start"], recorded["prompts"], states)["states"])
    assert _agree(recorded["tracked"], conditioned)
    restarted = walked(call(recorded["start"], recorded["prompts"], [None])["states"])
    assert not _agree(recorded["tracked"], restarted), "a restart differs: the check can tell"


def test_plugin_recognises_every_tracker_function_file():
    """The plugin finds our functions by kind and name prefix: every tracker function file
    (CPU, GPU, proxy) must be listed by CVAT under a name it recognises."""
    source = (PLUGIN / "src" / "ts" / "index.tsx").read_text()
    (prefix,) = re.findall(r"model\.id\.startsWith\('([^']+)'\)", source)
    files = sorted((SERVERLESS / "tracker" / "nuclio").glob("function*.yaml"))
    assert len(files) == 3
    for file in files:
        metadata = yaml.safe_load(file.read_text())["metadata"]
        assert metadata["name"].startswith(prefix), file
        assert metadata["annotations"]["type"] == "tracker", file


def test_typecheck_and_lint():
    for script in ("typecheck", "lint"):
        run = _npm("run", script, timeout=300)
        assert run.returncode == 0, f"npm run {script}:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"


def test_browser_runs_the_action_and_draws_the_tracks(standin):
    """Headless Chromium loads the built plugin into a page that plays cvat-ui's plugin entry
    and runs the action on 6 frames; the screenshot is kept outside the checkout to look at."""
    assert Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists(), (
        "Debian's chromium is not installed: run the README's set-up command"
    )
    screenshot = Path(tempfile.gettempdir()) / "cvat-sam2-tracker-plugin" / "browser.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)
    env = {"STANDIN_URL": standin.url, "SCREENSHOT": str(screenshot)}
    run = _npm("run", "browser", env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-4000:]
    assert screenshot.stat().st_size > 10_000
    print(f"browser screenshot: {screenshot}")
