"""The tracking-state stores on their own: formats, expiry, budgets, transactions, the cache."""

from __future__ import annotations

import collections
import json
import zlib

import pytest
import redis
import safetensors.torch
import torch

from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.stores.redis_store import RedisStateStore, tensor_fields
from tracker.cvat.stores.state_store import (
    MemoryStateStore,
    Record,
    StateConflictError,
    StateDroppedError,
    StoreConnectionLostError,
    Stored,
    UnknownStateError,
    new_handle,
    parse_token,
)
from tracker.engine.streaming import MemoryEntry, ObjectState


class FakeEngine:
    """What a store needs of the engine: the device and how to rebuild a state."""

    device = torch.device("cpu")
    history = 15

    def restore(self, frame_idx, conditioning, recent):
        return ObjectState(
            frame_idx, tuple(conditioning), collections.deque(recent, maxlen=self.history)
        )


def _entry(frame_idx: int, seed: int, memory: bool = True) -> MemoryEntry:
    generator = torch.Generator().manual_seed(seed)
    maskmem = torch.randn(1, 64, 16, 16, generator=generator).to(torch.bfloat16)
    return MemoryEntry(frame_idx, maskmem if memory else None, torch.randn(1, 256))


def _tracked(frames: int = 8) -> TrackedObject:
    recent = [_entry(i, i, memory=i > frames - 7) for i in range(1, frames + 1)]
    state = FakeEngine().restore(frames, [_entry(0, 0)], recent)
    return TrackedObject(state, "mask", 320, 240, last_shape=Shape("mask", [1, 2, 0, 0, 1, 1]))


def _stored(tracked: TrackedObject, digest: str = "") -> Stored:
    return Stored(
        tracked.object_state.frame_idx, tracked.shape_type, tracked.width, tracked.height,
        bare_points=False, digest=digest,
    )  # fmt: skip


def _put(store, tracked: TrackedObject) -> str:
    handle = new_handle()
    with store.transaction([]) as tx:
        tx.commit({handle: Record(_stored(tracked), tracked)})
    return handle


def _read(store, handle: str) -> tuple[Stored, TrackedObject]:
    """The object as stored; its last shape read apart, as the tracker does when it needs it."""
    with store.transaction([handle]) as tx:
        stored, tracked = tx.stored(handle), tx.states([handle])[handle]
        tracked.last_shape = tx.last_shapes([handle])[handle]
        return stored, tracked


def _advanced(tracked: TrackedObject, seed: int) -> TrackedObject:
    """`tracked` one step on, as the engine steps: a new entry, the oldest memory forgotten."""
    state = tracked.object_state.fork()
    frame = state.frame_idx + 1
    state.recent.append(_entry(frame, seed))
    state.recent[-7].maskmem_features = None
    state.frame_idx = frame
    return TrackedObject(
        state, tracked.shape_type, tracked.width, tracked.height, Shape("mask", [seed])
    )


def _assert_same(a: TrackedObject, b: TrackedObject) -> None:
    assert (a.shape_type, a.width, a.height, a.last_shape) == (
        b.shape_type, b.width, b.height, b.last_shape
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
    handle = _put(redis_store, tracked)
    raw = redis_server.client().hgetall(redis_store._key(handle))
    header = json.loads(raw.pop(b"header"))
    assert header["model"] == "tiny|test|256" and header["version"] == 8
    last = json.loads(zlib.decompress(raw.pop(b"last")))
    assert last == {"type": "mask", "points": [1, 2, 0, 0, 1, 1]}
    for value in raw.values():
        assert set(safetensors.torch.load(value)) == {"t"}  # never a pickle
    stored, read = _read(redis_store, handle)
    assert stored == _stored(tracked)
    _assert_same(read, tracked)


def test_a_state_of_another_model_is_refused(redis_store, redis_server):
    handle = _put(redis_store, _tracked())
    other = RedisStateStore(redis_server.client(), FakeEngine(), "large|test|1024", "test")
    with pytest.raises(UnknownStateError, match="another model"), other.transaction([handle]) as tx:
        tx.stored(handle)


@pytest.fixture(params=["memory", "redis", "redis-cached"])
def store(request):
    if request.param == "memory":
        return MemoryStateStore(64)
    server = request.getfixturevalue("redis_server")
    cache_mb = 64 if request.param == "redis-cached" else 0
    return RedisStateStore(
        server.client(), FakeEngine(), "tiny|test|256", "test", cache_mb=cache_mb
    )


def test_a_transaction_changes_nothing_until_committed(store):
    tracked = _tracked()
    handle = _put(store, tracked)
    with store.transaction([handle]) as first, store.transaction([handle]) as second:
        first.stored(handle), second.stored(handle)
        stepped = _advanced(first.states([handle])[handle], 9)
        first.commit({handle: Record(_stored(stepped, "a"), stepped)})
        with pytest.raises(StateConflictError):
            second.commit({handle: Record(_stored(stepped, "b"), stepped)})
    stored, again = _read(store, handle)
    assert stored == _stored(stepped, "a")
    _assert_same(again, stepped)


def test_a_commit_writes_all_objects_or_none(store):
    """B changed since the transaction read it: A, committed with it, stays as it was."""
    a, b = _put(store, _tracked()), _put(store, _tracked())
    new = new_handle()
    with store.transaction([a, b]) as tx:
        tx.stored(a), tx.stored(b)
        states = {h: _advanced(t, 9) for h, t in tx.states([a, b]).items()}
        with store.transaction([b]) as other:
            other.stored(b)
            other.commit({b: Record(_stored(states[b], "other"), states[b])})
        records = {h: Record(_stored(t, "mine"), t) for h, t in states.items()}
        with pytest.raises(StateConflictError):
            tx.commit({**records, new: Record(_stored(_tracked()), _tracked())})
    assert _read(store, a)[0].version == 8 and _read(store, b)[0].digest == "other"
    with pytest.raises(UnknownStateError), store.transaction([new]) as tx:
        tx.stored(new)


def test_a_cached_copy_is_never_served_for_a_newer_version(redis_server):
    """Two replicas alternate: each reads what the other wrote, and only that."""
    one, two = (
        RedisStateStore(redis_server.client(), FakeEngine(), "tiny|test|256", "test", cache_mb=64)
        for _ in range(2)
    )
    tracked = _tracked()
    handle = _put(one, tracked)
    for step in range(6):
        replica = (one, two)[step % 2]
        stored, state = _read(replica, handle)
        _assert_same(state, tracked)
        tracked = _advanced(state, 100 + step)
        with replica.transaction([handle]) as tx:
            tx.stored(handle)
            tx.commit({handle: Record(_stored(tracked), tracked)})
    assert len(one.cache) == len(two.cache) == 1


@pytest.mark.parametrize("steps_after", [1, 2], ids=["same-version", "later-version"])
def test_a_copy_of_a_version_a_failover_lost_is_never_used(redis_server, steps_after):
    """Replica one commits version 9 and keeps a copy; Redis loses it (a failover to a replica
    that had not received it, or a restore: the key as it was at version 8); replica two then
    commits a different version 9 (another frame). One must read two's history, not its copy."""
    one, two = (
        RedisStateStore(redis_server.client(), FakeEngine(), "tiny|test|256", "test", cache_mb=64)
        for _ in range(2)
    )
    client, handle = redis_server.client(), _put(one, _tracked())
    key = f"cvat-sam2-tracker:object:{handle}"
    before = client.dump(key)
    _, base = _read(one, handle)
    lost = _advanced(base, 500)
    with one.transaction([handle]) as tx:
        tx.stored(handle)
        tx.commit({handle: Record(_stored(lost, digest="lost frame"), lost)})
    client.restore(key, 0, before, replace=True)  # version 9 is gone
    tracked = base
    for step in range(steps_after):
        _, tracked = _read(two, handle)
        tracked = _advanced(tracked, 700 + step)
        with two.transaction([handle]) as tx:
            tx.stored(handle)
            tx.commit({handle: Record(_stored(tracked, digest=f"frame {step}"), tracked)})
    stored, state = _read(one, handle)
    assert stored.version == 8 + steps_after
    _assert_same(state, tracked)


def test_memory_states_expire_after_their_last_use():
    now = [0.0]
    store = MemoryStateStore(64, ttl_seconds=100, clock=lambda: now[0])
    kept, expired = _put(store, _tracked()), _put(store, _tracked())
    now[0] = 60
    _, state = _read(store, kept)
    stepped = _advanced(state, 9)
    with store.transaction([kept]) as tx:
        tx.stored(kept)
        tx.commit({kept: Record(_stored(stepped), stepped)})  # a use renews
    now[0] = 120
    assert _read(store, kept)[0].version == 9
    with pytest.raises(UnknownStateError, match="expired"):
        _read(store, expired)
    assert len(store) == 1


def test_memory_budget_drops_the_least_recently_used():
    size = _tracked().nbytes()
    store = MemoryStateStore(1)  # 1 MB
    handles = [_put(store, _tracked()) for _ in range(1024 * 1024 // size + 2)]
    assert store.budget.total_bytes() <= 1024 * 1024
    with pytest.raises(StateDroppedError, match="within 1 MB"):
        _read(store, handles[0])
    _read(store, handles[-1])


def test_the_cache_stays_within_its_budget(redis_server):
    size = _tracked().nbytes()
    store = RedisStateStore(
        redis_server.client(), FakeEngine(), "tiny|test|256", "test", cache_mb=1
    )
    handles = [_put(store, _tracked()) for _ in range(1024 * 1024 // size + 2)]
    assert 0 < len(store.cache) < len(handles) and store.cache.get(handles[-1]) is not None
    assert store.cache.get(handles[0]) is None
    _, state = _read(store, handles[0])  # read whole from Redis
    assert state.object_state.frame_idx == 8


@pytest.mark.parametrize(
    "state", ["", "short", "A" * 22, "A" * 21 + "!.1", "A" * 22 + ".01", "A" * 22 + ".-1", 42, None]
)
def test_malformed_states_are_unknown(state):
    with pytest.raises(UnknownStateError):
        parse_token(state)
    assert parse_token("A" * 22 + ".12") == ("A" * 22, 12)


def _uncached_pair(redis_server) -> tuple[RedisStateStore, RedisStateStore]:
    return tuple(
        RedisStateStore(redis_server.client(), FakeEngine(), "tiny|test|256", "test")
        for _ in range(2)
    )


def _stepped_by(store, handle: str, seed: int, digest: str = "") -> TrackedObject:
    with store.transaction([handle]) as tx:
        tx.stored(handle)
        stepped = _advanced(tx.states([handle])[handle], seed)
        tx.commit({handle: Record(_stored(stepped, digest), stepped)})
    return stepped


def test_fields_a_commit_deleted_between_the_reads_are_a_conflict(redis_server):
    """Replica two reads the header after its WATCH; replica one commits a step that deletes
    the memory it no longer reads; two's read of the fields must be a conflict (read again and
    answer as a repeat), not an expired state."""
    one, two = _uncached_pair(redis_server)
    handle = _put(one, _tracked())
    key = one._key(handle)
    with two.transaction([handle]) as tx:
        assert tx.stored(handle).version == 8
        _stepped_by(one, handle, 9)
        assert redis_server.client().hget(key, "mem:3") is None  # out of the memory window
        with pytest.raises(StateConflictError, match="same time"):
            tx.states([handle])


def test_a_repeat_never_answers_a_newer_versions_shape(redis_server):
    """A repeat commits nothing, so no EXEC checks its WATCH: the last shape it reads must be
    that of the version its header showed, or a conflict."""
    one, two = _uncached_pair(redis_server)
    handle = _put(one, _tracked())
    with two.transaction([handle]) as tx:
        assert tx.stored(handle).version == 8
        assert _stepped_by(one, handle, 9).last_shape == Shape("mask", [9])
        with pytest.raises(StateConflictError):
            tx.last_shapes([handle])
    with two.transaction([handle]) as tx:
        assert tx.stored(handle).version == 9
        assert tx.last_shapes([handle]) == {handle: Shape("mask", [9])}


def test_a_failed_commit_leaves_no_copy(redis_server):
    """A copy is cached only once Redis holds it. Replica one's request stepping A with B
    fails (B moved on); replica two then commits A's same step (the same frame: the same
    lineage head) to another state, as another device may compute it. One must read two's."""
    one = RedisStateStore(redis_server.client(), FakeEngine(), "tiny|test|256", "test", cache_mb=64)
    _, two = _uncached_pair(redis_server)
    a, b = _put(one, _tracked()), _put(one, _tracked())
    with one.transaction([a, b]) as tx:
        tx.stored(a), tx.stored(b)
        states = {h: _advanced(t, 9) for h, t in tx.states([a, b]).items()}
        _stepped_by(two, b, 10, "other frame")
        with pytest.raises(StateConflictError):
            tx.commit({h: Record(_stored(t, "frame 9"), t) for h, t in states.items()})
    theirs = _stepped_by(two, a, 11, "frame 9")
    stored, state = _read(one, a)
    assert stored.version == 9
    _assert_same(state, theirs)


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_a_lost_watch_connection_is_no_conflict_and_saves_nothing(redis_server, cache_mb):
    store = RedisStateStore(
        redis_server.client(), FakeEngine(), "tiny|test|256", "test", cache_mb=cache_mb
    )
    handle = _put(store, _tracked())
    with store.transaction([handle]) as tx:
        tx.stored(handle)
        stepped = _advanced(tx.states([handle])[handle], 9)
        assert redis_server.drop_watching() == 1
        with pytest.raises(StoreConnectionLostError, match="was not saved.*Run it again"):
            tx.commit({handle: Record(_stored(stepped), stepped)})
    stored, state = _read(store, handle)
    assert stored.version == 8 and state.last_shape == _tracked().last_shape


def test_a_commit_whose_reply_alone_was_lost_is_a_commit(redis_server):
    """EXEC ran, then the connection dropped before its reply was read: the step is saved, so
    the commit succeeds (and its copy is cached)."""
    store = RedisStateStore(
        redis_server.client(), FakeEngine(), "tiny|test|256", "test", cache_mb=64
    )
    handle = _put(store, _tracked())
    with store.transaction([handle]) as tx:
        tx.stored(handle)
        stepped = _advanced(tx.states([handle])[handle], 9)
        pipe, parse = tx._watching, tx._watching.parse_response

        def reply_lost(*args, **kwargs):
            reply = parse(*args, **kwargs)
            if isinstance(reply, list):  # EXEC's reply: the transaction ran
                raise redis.ConnectionError("Connection closed by server.")
            return reply

        pipe.parse_response = reply_lost
        tx.commit({handle: Record(_stored(stepped, "x"), stepped)})
    assert store.cache.get(handle).version == 9
    stored, state = _read(_uncached_pair(redis_server)[0], handle)
    assert stored == _stored(stepped, "x")
    _assert_same(state, stepped)
