"""The memory budget over all live tracking states drops the least recently used ones."""

from __future__ import annotations

import gc

import cvat_sdk.auto_annotation as cvataa
import pytest

from tracker.cvat import shapes
from tracker.cvat.agent.tracking import create
from tracker.cvat.state_budget import StateBudget
from tracker.devtools.agent_worker import AgentWorker


class FakeState:
    def __init__(self, size: int) -> None:
        self.size = size

    def nbytes(self) -> int:
        return self.size

    def release(self) -> None:
        self.size = 0


def test_least_recently_used_states_are_released_first():
    budget = StateBudget(max_bytes=300)
    a, b, c = FakeState(100), FakeState(100), FakeState(100)
    for state in (a, b, c):
        budget.add(state)
    budget.touch(a)  # b is now the least recently used
    d = FakeState(100)
    budget.add(d)
    assert (a.size, b.size, c.size, d.size) == (100, 0, 100, 100)
    assert budget.total_bytes() == 300


def test_states_the_agent_forgot_are_not_counted():
    budget = StateBudget(max_bytes=150)
    forgotten = FakeState(100)
    budget.add(forgotten)
    del forgotten
    gc.collect()
    assert budget.total_bytes() == 0 and budget.live_states() == []
    kept = FakeState(100)
    budget.add(kept)
    assert kept.size == 100 and budget.live_states() == [kept]


def test_tracking_a_dropped_state_tells_the_user_to_start_again(tiny_checkpoint, video):
    function = create(image_size=256, max_state_memory_mb=1)
    worker = AgentWorker(function)
    prompt = ("mask", shapes.rle_from_mask(video.masks[0]))
    state_ids = worker.init(video.image(0), *[prompt] * 40)  # ~34 KB each at 256 px
    assert function.budget.total_bytes() <= 1024 * 1024
    with pytest.raises(cvataa.BadFunctionError, match="run the tracker again from the current"):
        worker.track(video.image(1), state_ids[:1])
    (shape,) = worker.track(video.image(1), state_ids[-1:])
    assert shape is not None
