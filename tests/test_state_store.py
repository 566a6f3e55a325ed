"""The tracking-state stores on their own: formats, expiry, the memory budget, checkouts."""

from __future__ import annotations

import collections
import json

import pytest
import safetensors.torch
import torch

from tracker.cvat.redis_store import RedisStateStore, tensor_fields
from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.state_store import (
    MemoryStateStore,
    StateConflictError,
    StateDroppedError,
    UnknownStateError,
)
from tracker.engine.streaming import MemoryEntry, ObjectState


class FakeEngine:
    """What a store needs of the engine: the device and how to rebuild a state."""

    device = torch.device("cpu")
    history = 15

    def restore(self, frame_idx, conditioning, recent):
        return ObjectState(frame_idx, conditioning, collections.deque(recent, maxlen=self.history))


def _entry(frame_idx: int, seed: int, memory: bool = True) -> MemoryEntry:
    generator = torch.Generator().manual_seed(seed)
    maskmem = torch.randn(1, 64, 16, 16, generator=generator).to(torch.bfloat16)
    return MemoryEntry(frame_idx, maskmem if memory else None, torch.randn(1, 256))


def _tracked(frames: int = 8) -> TrackedObject:
    recent = [_entry(i, i, memory=i > frames - 7) for i in range(1, frames + 1)]
    state = FakeEngine().restore(frames, _entry(0, 0), recent)
    return TrackedObject(state, "mask", 320, 240, last_shape=Shape("mask", [1, 2, 0, 0, 1, 1]))


def _assert_same(a: TrackedObject, b: TrackedObject) -> None:
    assert (a.shape_type, a.width, a.height, a.last_shape, a.bare_points) == (
        b.shape_type, b.width, b.height, b.last_shape, b.bare_points
    )  # fmt: skip
    assert a.object_state.frame_idx == b.object_state.frame_idx
    fields_a, fields_b = tensor_fields(a.object_state), tensor_fields(b.object_state)
    assert fields_a.keys() == fields_b.keys()
    for name, tensor in fields_a.items():
        assert torch.equal(tensor, fields_b[name]) and tensor.dtype == fields_b[name].dtype


@pytest.fixture()
def redis_store(redis_server):
    return RedisStateStore(redis_server.client(), FakeEngine(), "tiny|test|256", "test")


def test_redis_holds_json_and_safetensors_only(redis_store, redis_server):
    tracked = _tracked()
    handle = redis_store.put(tracked)
    raw = redis_server.client().hgetall(redis_store._key(handle))
    header = json.loads(raw.pop(b"header"))
    assert header["model"] == "tiny|test|256" and header["frame"] == 8
    for value in raw.values():
        assert set(safetensors.torch.load(value)) == {"t"}  # never a pickle
    checkout = redis_store.checkout(handle)
    _assert_same(checkout.tracked, tracked)
    checkout.close()


def test_a_state_of_another_model_is_refused(redis_store, redis_server):
    handle = redis_store.put(_tracked())
    other = RedisStateStore(redis_server.client(), FakeEngine(), "large|test|1024", "test")
    with pytest.raises(UnknownStateError, match="another model"):
        other.checkout(handle)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_checkout_changes_nothing_until_committed(request, kind):
    store = MemoryStateStore(64) if kind == "memory" else request.getfixturevalue("redis_store")
    tracked = _tracked()
    handle = store.put(tracked)
    first, second = store.checkout(handle), store.checkout(handle)
    stepped = first.tracked.object_state
    stepped.recent.append(_entry(9, 9))
    stepped.recent[-7].maskmem_features = None
    stepped.frame_idx = 9
    first.commit()
    with pytest.raises(StateConflictError):
        second.commit()
    again = store.checkout(handle)
    assert again.tracked.object_state.frame_idx == 9
    _assert_same(again.tracked, first.tracked)
    again.close()


def test_memory_states_expire_after_their_last_use():
    now = [0.0]
    store = MemoryStateStore(64, ttl_seconds=100, clock=lambda: now[0])
    kept, expired = store.put(_tracked()), store.put(_tracked())
    now[0] = 60
    checkout = store.checkout(kept)
    checkout.tracked.object_state.frame_idx += 1
    checkout.commit()  # a use renews
    now[0] = 120
    assert store.checkout(kept).tracked is not None
    with pytest.raises(UnknownStateError, match="expired"):
        store.checkout(expired)
    assert len(store) == 1


def test_memory_budget_drops_the_least_recently_used():
    size = _tracked().nbytes()
    store = MemoryStateStore(1)  # 1 MB
    handles = [store.put(_tracked()) for _ in range(1024 * 1024 // size + 2)]
    assert store.budget.total_bytes() <= 1024 * 1024
    with pytest.raises(StateDroppedError, match="within 1 MB"):
        store.checkout(handles[0])
    store.checkout(handles[-1]).close()


@pytest.mark.parametrize("handle", ["", "short", "A" * 21 + "!", 42, None, {"id": 1}])
def test_malformed_handles_are_unknown(handle):
    with pytest.raises(UnknownStateError):
        MemoryStateStore(64).checkout(handle)
