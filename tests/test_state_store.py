"""The tracking-state stores on their own: formats, expiry, budgets, transactions, the cache."""

from __future__ import annotations

import json
import zlib

import pytest
import safetensors.torch
import store_objects as so

from tracker.cvat.stores.redis_store import RedisStateStore
from tracker.cvat.stores.state_store import (
    MemoryStateStore,
    Record,
    StateConflictError,
    StateDroppedError,
    UnknownStateError,
    new_handle,
    parse_token,
)


@pytest.fixture()
def redis_store(redis_server):
    return RedisStateStore(redis_server.client(), so.FakeEngine(), "tiny|test|256", "test")


def test_redis_holds_json_and_safetensors_only(redis_store, redis_server):
    tracked = so.tracked()
    handle = so.put(redis_store, tracked)
    raw = redis_server.client().hgetall(redis_store._key(handle))
    header = json.loads(raw.pop(b"header"))
    assert header["model"] == "tiny|test|256" and header["version"] == 8
    last = json.loads(zlib.decompress(raw.pop(b"last")))
    assert last == {"type": "mask", "points": [1, 2, 0, 0, 1, 1]}
    for value in raw.values():
        assert set(safetensors.torch.load(value)) == {"t"}  # never a pickle
    stored, read = so.read(redis_store, handle)
    assert stored == so.stored(tracked)
    so.assert_same(read, tracked)


def test_a_state_of_another_model_is_refused(redis_store, redis_server):
    handle = so.put(redis_store, so.tracked())
    other = RedisStateStore(redis_server.client(), so.FakeEngine(), "large|test|1024", "test")
    with pytest.raises(UnknownStateError, match="another model"), other.transaction([handle]) as tx:
        tx.stored(handle)


@pytest.fixture(params=["memory", "redis", "redis-cached"])
def store(request):
    if request.param == "memory":
        return MemoryStateStore(64)
    server = request.getfixturevalue("redis_server")
    cache_mb = 64 if request.param == "redis-cached" else 0
    return RedisStateStore(
        server.client(), so.FakeEngine(), "tiny|test|256", "test", cache_mb=cache_mb
    )


def test_a_transaction_changes_nothing_until_committed(store):
    tracked = so.tracked()
    handle = so.put(store, tracked)
    with store.transaction([handle]) as first, store.transaction([handle]) as second:
        first.stored(handle), second.stored(handle)
        stepped = so.advanced(first.states([handle])[handle], 9)
        first.commit({handle: Record(so.stored(stepped, "a"), stepped)})
        with pytest.raises(StateConflictError):
            second.commit({handle: Record(so.stored(stepped, "b"), stepped)})
    stored, again = so.read(store, handle)
    assert stored == so.stored(stepped, "a")
    so.assert_same(again, stepped)


def test_a_commit_writes_all_objects_or_none(store):
    """B changed since the transaction read it: A, committed with it, stays as it was."""
    a, b = so.put(store, so.tracked()), so.put(store, so.tracked())
    new = new_handle()
    with store.transaction([a, b]) as tx:
        tx.stored(a), tx.stored(b)
        states = {h: so.advanced(t, 9) for h, t in tx.states([a, b]).items()}
        with store.transaction([b]) as other:
            other.stored(b)
            other.commit({b: Record(so.stored(states[b], "other"), states[b])})
        records = {h: Record(so.stored(t, "mine"), t) for h, t in states.items()}
        with pytest.raises(StateConflictError):
            tx.commit({**records, new: Record(so.stored(so.tracked()), so.tracked())})
    assert so.read(store, a)[0].version == 8 and so.read(store, b)[0].digest == "other"
    with pytest.raises(UnknownStateError), store.transaction([new]) as tx:
        tx.stored(new)


def test_a_cached_copy_is_never_served_for_a_newer_version(redis_server):
    """Two replicas alternate: each reads what the other wrote, and only that."""
    one, two = (
        RedisStateStore(
            redis_server.client(), so.FakeEngine(), "tiny|test|256", "test", cache_mb=64
        )
        for _ in range(2)
    )
    tracked = so.tracked()
    handle = so.put(one, tracked)
    for step in range(6):
        replica = (one, two)[step % 2]
        stored, state = so.read(replica, handle)
        so.assert_same(state, tracked)
        tracked = so.advanced(state, 100 + step)
        with replica.transaction([handle]) as tx:
            tx.stored(handle)
            tx.commit({handle: Record(so.stored(tracked), tracked)})
    assert len(one.cache) == len(two.cache) == 1


@pytest.mark.parametrize("steps_after", [1, 2], ids=["same-version", "later-version"])
def test_a_copy_of_a_version_a_failover_lost_is_never_used(redis_server, steps_after):
    """Replica one commits version 9 and keeps a copy; Redis loses it (a failover to a replica
    that had not received it, or a restore: the key as it was at version 8); replica two then
    commits a different version 9 (another frame). One must read two's history, not its copy."""
    one, two = (
        RedisStateStore(
            redis_server.client(), so.FakeEngine(), "tiny|test|256", "test", cache_mb=64
        )
        for _ in range(2)
    )
    client, handle = redis_server.client(), so.put(one, so.tracked())
    key = f"cvat-sam2-tracker:object:{handle}"
    before = client.dump(key)
    _, base = so.read(one, handle)
    lost = so.advanced(base, 500)
    with one.transaction([handle]) as tx:
        tx.stored(handle)
        tx.commit({handle: Record(so.stored(lost, digest="lost frame"), lost)})
    client.restore(key, 0, before, replace=True)  # version 9 is gone
    tracked = base
    for step in range(steps_after):
        _, tracked = so.read(two, handle)
        tracked = so.advanced(tracked, 700 + step)
        with two.transaction([handle]) as tx:
            tx.stored(handle)
            tx.commit({handle: Record(so.stored(tracked, digest=f"frame {step}"), tracked)})
    stored, state = so.read(one, handle)
    assert stored.version == 8 + steps_after
    so.assert_same(state, tracked)


def test_memory_states_expire_after_their_last_use():
    now = [0.0]
    store = MemoryStateStore(64, ttl_seconds=100, clock=lambda: now[0])
    kept, expired = so.put(store, so.tracked()), so.put(store, so.tracked())
    now[0] = 60
    _, state = so.read(store, kept)
    stepped = so.advanced(state, 9)
    with store.transaction([kept]) as tx:
        tx.stored(kept)
        tx.commit({kept: Record(so.stored(stepped), stepped)})  # a use renews
    now[0] = 120
    assert so.read(store, kept)[0].version == 9
    with pytest.raises(UnknownStateError, match="expired"):
        so.read(store, expired)
    assert len(store) == 1


def test_memory_budget_drops_the_least_recently_used():
    size = so.tracked().nbytes()
    store = MemoryStateStore(1)  # 1 MB
    handles = [so.put(store, so.tracked()) for _ in range(1024 * 1024 // size + 2)]
    assert store.budget.total_bytes() <= 1024 * 1024
    with pytest.raises(StateDroppedError, match="within 1 MB"):
        so.read(store, handles[0])
    so.read(store, handles[-1])


def test_the_cache_stays_within_its_budget(redis_server):
    size = so.tracked().nbytes()
    store = RedisStateStore(
        redis_server.client(), so.FakeEngine(), "tiny|test|256", "test", cache_mb=1
    )
    handles = [so.put(store, so.tracked()) for _ in range(1024 * 1024 // size + 2)]
    assert 0 < len(store.cache) < len(handles) and store.cache.get(handles[-1]) is not None
    assert store.cache.get(handles[0]) is None
    _, state = so.read(store, handles[0])  # read whole from Redis
    assert state.object_state.frame_idx == 8


@pytest.mark.parametrize(
    "state", ["", "short", "A" * 22, "A" * 21 + "!.1", "A" * 22 + ".01", "A" * 22 + ".-1", 42, None]
)
def test_malformed_states_are_unknown(state):
    with pytest.raises(UnknownStateError):
        parse_token(state)
    assert parse_token("A" * 22 + ".12") == ("A" * 22, 12)
