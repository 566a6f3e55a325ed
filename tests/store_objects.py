"""Small made-up tracking states for the store tests (no model): a fake engine, objects that
step as the engine steps them, and how to store, read and compare them."""

from __future__ import annotations

import collections

import torch

from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.stores.redis_store import tensor_fields
from tracker.cvat.stores.state_store import Record, Stored, new_handle
from tracker.engine.streaming import MemoryEntry, ObjectState


class FakeEngine:
    """What a store needs of the engine: the device and how to rebuild a state."""

    device = torch.device("cpu")
    history = 15

    def restore(self, frame_idx, conditioning, recent):
        return ObjectState(
            frame_idx, tuple(conditioning), collections.deque(recent, maxlen=self.history)
        )


def entry(frame_idx: int, seed: int, memory: bool = True) -> MemoryEntry:
    generator = torch.Generator().manual_seed(seed)
    maskmem = torch.randn(1, 64, 16, 16, generator=generator).to(torch.bfloat16)
    return MemoryEntry(frame_idx, maskmem if memory else None, torch.randn(1, 256))


def tracked(frames: int = 8) -> TrackedObject:
    recent = [entry(i, i, memory=i > frames - 7) for i in range(1, frames + 1)]
    state = FakeEngine().restore(frames, [entry(0, 0)], recent)
    return TrackedObject(state, "mask", 320, 240, last_shape=Shape("mask", [1, 2, 0, 0, 1, 1]))


def stored(tracked: TrackedObject, digest: str = "") -> Stored:
    return Stored(
        tracked.object_state.frame_idx, tracked.shape_type, tracked.width, tracked.height,
        bare_points=False, digest=digest,
    )  # fmt: skip


def put(store, tracked: TrackedObject) -> str:
    handle = new_handle()
    with store.transaction([]) as tx:
        tx.commit({handle: Record(stored(tracked), tracked)})
    return handle


def read(store, handle: str) -> tuple[Stored, TrackedObject]:
    """The object as stored; its last shape read apart, as the tracker does when it needs it."""
    with store.transaction([handle]) as tx:
        stored, tracked = tx.stored(handle), tx.states([handle])[handle]
        tracked.last_shape = tx.last_shapes([handle])[handle]
        return stored, tracked


def advanced(tracked: TrackedObject, seed: int) -> TrackedObject:
    """`tracked` one step on, as the engine steps: a new entry, the oldest memory forgotten."""
    state = tracked.object_state.fork()
    frame = state.frame_idx + 1
    state.recent.append(entry(frame, seed))
    state.recent[-7].maskmem_features = None
    state.frame_idx = frame
    return TrackedObject(
        state, tracked.shape_type, tracked.width, tracked.height, Shape("mask", [seed])
    )


def assert_same(a: TrackedObject, b: TrackedObject) -> None:
    assert (a.shape_type, a.width, a.height, a.last_shape) == (
        b.shape_type, b.width, b.height, b.last_shape
    )  # fmt: skip
    assert a.object_state.frame_idx == b.object_state.frame_idx
    fields_a, fields_b = tensor_fields(a.object_state), tensor_fields(b.object_state)
    assert fields_a.keys() == fields_b.keys()
    for name, tensor in fields_a.items():
        assert torch.equal(tensor, fields_b[name]) and tensor.dtype == fields_b[name].dtype
