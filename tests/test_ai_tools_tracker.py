"""CVAT's AI Tools tracker through our Nuclio tracker, with the bodies CVAT 2.73.0 sends.

tools-control.tsx (ac6e63b96) `checkTrackedStates`: on frame k, shapes whose state is missing or
stale (the user moved them) are started with `{type: 'init_tracking', frame: k - 1, shapes}`
(lines 993-998), then every object of the tracker is continued with `{type: 'track', frame: k,
states}` (lines 1041-1046), the re-started ones beside the others. 2.26-2.39 UIs sent the
previous frame's `shapes` with the `states` (CVAT's changelog, 2.40.0: "no longer passed the
previous frame's shapes"); lambda_manager passes both on as sent."""

from __future__ import annotations

import pytest
from nuclio_driver import NuclioFunction, box_prompt, lambda_manager_body, stepped, ui_points


def _rect(points: list[float]) -> dict:
    return {"type": "rectangle", "points": points}


def _call(function, frame, ui, typed=True):
    status, answer = function.call(lambda_manager_body(frame, ui, typed))
    assert status == 200, answer
    return answer


@pytest.mark.parametrize("typed", [True, False], ids=["supported_shape_types", "legacy"])
def test_init_then_track_as_cvat_2_73_sends_them(environment, tiny_checkpoint, video, typed):
    function = NuclioFunction("tracker")
    box = box_prompt(video)
    other = [box[0] + 5, box[1] + 5, box[2] - 5, box[3] - 5]
    init = {"type": "init_tracking", "frame": 0, "shapes": [_rect(box), _rect(other)], "job": 1}
    started = _call(function, video.frames[0], init, typed)
    assert len(started["states"]) == 2 and ui_points(started, typed) == [box, other]
    states = started["states"]
    for index in (1, 2, 3):
        track = {"type": "track", "frame": index, "states": states, "job": 1}
        answer = _call(function, video.frames[index], track, typed)
        assert answer["states"] == stepped(states)
        assert all(len(points) == 4 for points in ui_points(answer, typed))
        states = answer["states"]


def test_a_moved_object_restarts_while_the_other_continues(environment, tiny_checkpoint, video):
    function = NuclioFunction("tracker")
    box = box_prompt(video)
    started = _call(
        function, video.frames[0], {"type": "init_tracking", "shapes": [_rect(box)] * 2}
    )
    first = _call(function, video.frames[1], {"type": "track", "states": started["states"]})
    moved = [box[0] + 2, box[1] + 2, box[2] + 2, box[3] + 2]  # the user drags object 1 on frame 1
    again = _call(function, video.frames[1], {"type": "init_tracking", "shapes": [_rect(moved)]})
    states = [first["states"][0], again["states"][0]]
    answer = _call(function, video.frames[2], {"type": "track", "states": states})
    assert answer["states"] == stepped(states)
    alone = NuclioFunction("tracker")  # the re-started object tracked by itself from frame 1
    solo = _call(alone, video.frames[1], {"type": "init_tracking", "shapes": [_rect(moved)]})
    solo = _call(alone, video.frames[2], {"type": "track", "states": solo["states"]})
    assert ui_points(answer)[1] == ui_points(solo)[0]


@pytest.mark.parametrize("typed", [True, False], ids=["supported_shape_types", "legacy"])
def test_previous_shapes_beside_states_continue(environment, tiny_checkpoint, video, typed):
    """A 2.26-2.39 UI sends the previous frame's shapes with the states: they restart nothing,
    and the answers are those of a 2.40+ UI, which sends the states only."""
    answers = {}
    for ui_release in ("2.39", "2.40"):
        function = NuclioFunction("tracker")
        init = {"type": "init_tracking", "shapes": [_rect(box_prompt(video))]}
        answer = _call(function, video.frames[0], init, typed)
        for index in (1, 2):
            track = {"type": "track", "states": answer["states"]}
            if ui_release == "2.39":
                track["shapes"] = [_rect(points) for points in ui_points(answer, typed)]
            before = answer["states"]
            answer = _call(function, video.frames[index], track, typed)
            assert answer["states"] == stepped(before)
        answers[ui_release] = ui_points(answer, typed)
    assert answers["2.39"] == answers["2.40"]
