"""Replay the bodies recorded from a live CVAT 2.73.0 (ac6e63b96) through our Nuclio handlers.

tests/fixtures/cvat-2.73/ holds the exact bodies CVAT's lambda_manager posted our functions in the
live session (see its README.md), each frame replaced by "<FRAME_BASE64>"; here a frame of the
synthetic video takes its place, and each continue body gets the states of our own previous answer
(the recorded ones are tokens of that session's run).

What is asserted is what CVAT 2.73 reads back:
- cvat/apps/lambda_manager/views.py `invoke` (lines 554-592) sends a tracker exactly
  `{image, shapes, states}`; the AI Tools (tools-control.tsx `trackedRectangleMapper`, lines
  184-200, applied at 1048, then lines 1051-1062) read `response.shapes[i].points` and
  `response.states[i]` for every object;
- the interactor (tools-control.tsx lines 544-560) reads `response.shapes`, keeps the items of
  type "mask", `Int32Array.from(item.points)` (CVAT's RLE with left, top, right, bottom last) and
  `item.attributes.find(attr => attr.spec_id === 0)` as the confidence.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from nuclio_driver import NuclioFunction, frame_b64

FIXTURES = Path(__file__).parent / "fixtures" / "cvat-2.73"
PLACEHOLDER = "<FRAME_BASE64>"
TRACKER_FLOWS = [
    "tracker-one-object.json",
    "plugin-polygon.json",
    "plugin-mask.json",
    "plugin-conditioned.json",
]
INTERACTOR_FLOWS = [
    "interactor-box.json",
    "interactor-box-and-click.json",
    "interactor-clicks.json",
]


def _load(name: str) -> dict:
    doc = json.loads((FIXTURES / name).read_text())
    assert doc["cvat"].startswith("2.73.0") and doc["calls"]
    return doc


def _with_frame(body: dict, frame: Path) -> dict:
    body = copy.deepcopy(body)
    assert body["image"] == PLACEHOLDER
    body["image"] = frame_b64(frame)
    return body


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_the_fixtures_hold_what_was_recorded():
    flows = {name: _load(name) for name in TRACKER_FLOWS}
    one = flows["tracker-one-object.json"]["calls"]
    assert len(one) >= 6
    init, *continues = (call["body"] for call in one)
    assert init["states"] == [] and [s["type"] for s in init["shapes"]] == ["rectangle"]
    assert all(b["shapes"] == [None] and len(b["states"]) == 1 for b in continues)
    for name in ("plugin-polygon.json", "plugin-mask.json"):
        first = flows[name]["calls"][0]["body"]
        assert first["states"] == [None] and first["shapes"][0]["type"] in ("polygon", "mask")
    # Conditioning (issue 26): CVAT passed "frame" in each shape, and shapes beside states.
    start, again, *steps = (call["body"] for call in flows["plugin-conditioned.json"]["calls"])
    assert start["states"] == [None] * 3 and {s["frame"] for s in start["shapes"]} == {0}
    assert {s["frame"] for s in again["shapes"]} == {3} and all(again["states"])
    assert {s["type"] for s in again["shapes"]} == {"mask", "polygon", "rectangle"}
    assert all(b["shapes"] == [None] * 3 and all(b["states"]) for b in steps)
    clicks = _load("interactor-clicks.json")["calls"]
    assert all(call["body"]["obj_bbox"] == [] for call in clicks)
    assert _load("interactor-box.json")["calls"][0]["body"]["pos_points"] == []


@pytest.mark.parametrize("name", TRACKER_FLOWS)
def test_recorded_tracker_bodies_are_what_views_py_sends(name):
    for call in _load(name)["calls"]:
        assert set(call["body"]) == {"image", "shapes", "states"}, call["recorded"]
        # init_tracking: states [] (views.py line 555) and one shape an object; else one each
        if call["body"]["states"]:
            assert len(call["body"]["shapes"]) == len(call["body"]["states"])


@pytest.mark.parametrize("name", TRACKER_FLOWS)
def test_replay_recorded_tracker_bodies(environment, tiny_checkpoint, video, name):
    function = NuclioFunction("tracker")
    states = None
    for index, call in enumerate(_load(name)["calls"]):
        body = _with_frame(call["body"], video.frames[index])
        continuing = any(s is not None for s in body["states"])
        if continuing:
            assert states is not None, "a continue before any init"
            assert len(states) == len(body["states"])
            body["states"] = states  # ours, as the browser hands them back
        status, answer = function.call(body)
        assert status == 200, (call["recorded"], answer)
        assert len(answer["states"]) == len(body["shapes"]), call["recorded"]
        assert len(answer["shapes"]) == len(body["shapes"]), call["recorded"]
        assert all(isinstance(s, str) and s for s in answer["states"]), call["recorded"]
        for shape in answer["shapes"]:
            assert shape is not None and "points" in shape, call["recorded"]
            assert all(_is_number(p) for p in shape["points"]), call["recorded"]
            if name == "tracker-one-object.json":
                assert shape["type"] == "rectangle" and len(shape["points"]) == 4
        if continuing and any(body["shapes"]):  # a prompt again: answered with the prompts
            for sent, got in zip(body["shapes"], answer["shapes"], strict=True):
                if sent["type"] == "rectangle":
                    assert got["points"] == sent["points"], call["recorded"]
        if continuing:
            assert answer["states"] != states, "a continue answers the next states"
        states = json.loads(json.dumps(answer["states"]))


@pytest.mark.parametrize("name", INTERACTOR_FLOWS)
def test_replay_recorded_interactor_bodies(environment, tiny_checkpoint, video, name):
    function = NuclioFunction("interactor")
    for call in _load(name)["calls"]:
        assert set(call["body"]) == {"image", "pos_points", "neg_points", "obj_bbox"}
        status, answer = function.call(_with_frame(call["body"], video.frames[0]))
        assert status == 200, (call["recorded"], answer)
        masks = [s for s in answer["shapes"] if s["type"] == "mask"]
        assert masks, call["recorded"]
        for shape in masks:
            points = shape["points"]
            assert len(points) > 4 and all(isinstance(p, int) for p in points)
            left, top, right, bottom = points[-4:]
            assert 0 <= left <= right < 320 and 0 <= top <= bottom < 240
            confidence = [a for a in shape["attributes"] if a["spec_id"] == 0]
            assert len(confidence) == 1 and 0 <= float(confidence[0]["value"]) <= 1
