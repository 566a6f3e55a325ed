"""The agent asks for one shape at a time; a frame's objects are still stepped as one batch."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from sam2_runs import iou

from tracker.cvat import shape_tracker, shapes
from tracker.cvat.agent.tracking import create
from tracker.cvat.shape_tracker import Shape
from tracker.devtools.agent_worker import AgentWorker


@pytest.fixture(scope="module")
def function(tiny_checkpoint):
    return create(image_size=256)


def _masks(video, count):
    return [np.roll(video.masks[0], 10 * k, axis=1) for k in range(count)]


def _batch_sizes(function, monkeypatch) -> list[int]:
    sizes: list[int] = []
    original = function.tracker.step_many

    def counting(frame, tracked):
        sizes.append(len(tracked))
        return original(frame, tracked)

    monkeypatch.setattr(function.tracker, "step_many", counting)
    return sizes


def _two_started(function, video, frames: int):
    """Objects A and B started together on frame 0, and the first `frames` frames encoded."""
    tracker = function.tracker
    encoded = [tracker.encode(video.image(i)) for i in range(frames)]
    prompts = [Shape("mask", shapes.rle_from_mask(m)) for m in _masks(video, 2)]
    a, b = (tracker.start(encoded[0], p) for p in prompts)
    for obj in (a, b):
        function.batches.started(encoded[0], obj)
    return encoded, prompts, a, b


def _decoded(shape, width, height):
    return shapes.mask_from_rle(shape.points, width, height)


def test_the_agents_requests_step_each_frame_as_one_batch(function, video, monkeypatch):
    """Through cvat-cli's own worker jobs: one batch per frame, and each object's masks those
    of stepping it alone."""
    width, height = video.image(0).size
    tracker = function.tracker
    first = tracker.encode(video.image(0))
    alone = [tracker.start(first, Shape("mask", shapes.rle_from_mask(m))) for m in _masks(video, 3)]
    worker = AgentWorker(function)
    ids = worker.init(
        video.image(0), *(("mask", shapes.rle_from_mask(m)) for m in _masks(video, 3))
    )
    sizes = _batch_sizes(function, monkeypatch)
    for index in range(1, 8):
        got = worker.track(video.image(index), ids)
        frame = tracker.encode(video.image(index))
        expected = [tracker.step(frame, obj) for obj in alone]
        for a, b in zip(expected, got, strict=True):
            assert iou(_decoded(a, width, height), _decoded(b, width, height)) >= 0.999
    assert sizes == [3, 1, 1, 1] * 7  # the agent's batch, then the reference's singles


def test_an_object_not_asked_for_keeps_its_state(function, video):
    """Frame 1 asks for A only: B's step onto frame 1 is computed but not handed out, so B goes
    from frame 0 straight to frame 2, as it would unbatched."""
    width, height = video.image(0).size
    tracker, batches = function.tracker, function.batches
    frames, prompts, a, b = _two_started(function, video, 3)
    reference = tracker.start(frames[0], prompts[1])

    batches.step(frames[1], a)
    assert a.object_state.frame_idx == 1 and b.object_state.frame_idx == 0
    assert b in batches._current.ahead
    got = batches.step(frames[2], b)  # another frame: the step computed ahead is dropped
    assert b.object_state.frame_idx == 1 and b not in batches._current.ahead
    expected = tracker.step(frames[2], reference)
    assert iou(_decoded(got, width, height), _decoded(expected, width, height)) >= 0.999
    # A, stepped on frame 1 without B, starts a cohort of its own on frame 2.
    assert batches.step(frames[2], a) is not None and b not in batches._current.ahead


def test_an_unclaimed_step_ahead_dies_with_its_frame(function, video):
    """Even when its object lives on (the agent keeps states for hours), and without chaining
    older results onto the copies of newer steps."""
    batches = function.batches
    frames, _, a, b = _two_started(function, video, 3)
    batches.step(frames[1], a)
    ahead = weakref.ref(batches._current.ahead[b].stepped)
    batches.step(frames[2], a)  # B is never asked for on frame 1
    gc.collect()
    assert ahead() is None and b.object_state.frame_idx == 0


def test_a_result_that_cannot_be_read_leaves_every_state_as_it_was(function, video, monkeypatch):
    """The engine steps copies: if reading the results fails (e.g. out of memory while copying
    them to the host), no object has moved, so stepping the asked object alone steps it once."""
    batches = function.batches
    frames, _, a, b = _two_started(function, video, 2)
    original = shape_tracker.on_host

    def fails_for_two(predictions):
        if len(predictions) > 1:
            raise RuntimeError("out of memory")
        return original(predictions)

    monkeypatch.setattr(shape_tracker, "on_host", fails_for_two)
    assert batches.step(frames[1], a) is not None
    assert a.object_state.frame_idx == 1 and b.object_state.frame_idx == 0


def test_a_failing_batch_steps_the_asked_object_alone(function, video, monkeypatch):
    tracker, batches = function.tracker, function.batches
    frames, _, a, b = _two_started(function, video, 2)
    original = tracker.step_many

    def out_of_memory_for_two(frame, tracked):
        if len(tracked) > 1:
            raise RuntimeError("out of memory")
        return original(frame, tracked)

    monkeypatch.setattr(tracker, "step_many", out_of_memory_for_two)
    assert batches.step(frames[1], a) is not None
    assert a.object_state.frame_idx == 1 and b.object_state.frame_idx == 0
    assert b not in batches._current.ahead
    assert batches.step(frames[1], b) is not None and b.object_state.frame_idx == 1
