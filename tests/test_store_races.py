"""The Redis store when requests meet: a commit between another's reads, a lost WATCH
connection, a failed commit, on the real redis-server."""

from __future__ import annotations

import pytest
import redis
import store_objects as so

from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.stores.redis_store import RedisStateStore
from tracker.cvat.stores.state_store import Record, StateConflictError, StoreConnectionLostError


def _uncached_pair(redis_server) -> tuple[RedisStateStore, RedisStateStore]:
    return tuple(
        RedisStateStore(redis_server.client(), so.FakeEngine(), "tiny|test|256", "test")
        for _ in range(2)
    )


def _stepped_by(store, handle: str, seed: int, digest: str = "") -> TrackedObject:
    with store.transaction([handle]) as tx:
        tx.stored(handle)
        stepped = so.advanced(tx.states([handle])[handle], seed)
        tx.commit({handle: Record(so.stored(stepped, digest), stepped)})
    return stepped


def test_fields_a_commit_deleted_between_the_reads_are_a_conflict(redis_server):
    """Replica two reads the header after its WATCH; replica one commits a step that deletes
    the memory it no longer reads; two's read of the fields must be a conflict (read again and
    answer as a repeat), not an expired state."""
    one, two = _uncached_pair(redis_server)
    handle = so.put(one, so.tracked())
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
    handle = so.put(one, so.tracked())
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
    one = RedisStateStore(
        redis_server.client(), so.FakeEngine(), "tiny|test|256", "test", cache_mb=64
    )
    _, two = _uncached_pair(redis_server)
    a, b = so.put(one, so.tracked()), so.put(one, so.tracked())
    with one.transaction([a, b]) as tx:
        tx.stored(a), tx.stored(b)
        states = {h: so.advanced(t, 9) for h, t in tx.states([a, b]).items()}
        _stepped_by(two, b, 10, "other frame")
        with pytest.raises(StateConflictError):
            tx.commit({h: Record(so.stored(t, "frame 9"), t) for h, t in states.items()})
    theirs = _stepped_by(two, a, 11, "frame 9")
    stored, state = so.read(one, a)
    assert stored.version == 9
    so.assert_same(state, theirs)


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_a_lost_watch_connection_is_no_conflict_and_saves_nothing(redis_server, cache_mb):
    store = RedisStateStore(
        redis_server.client(), so.FakeEngine(), "tiny|test|256", "test", cache_mb=cache_mb
    )
    handle = so.put(store, so.tracked())
    with store.transaction([handle]) as tx:
        tx.stored(handle)
        stepped = so.advanced(tx.states([handle])[handle], 9)
        assert redis_server.drop_watching() == 1
        with pytest.raises(StoreConnectionLostError, match="was not saved.*Run it again"):
            tx.commit({handle: Record(so.stored(stepped), stepped)})
    stored, state = so.read(store, handle)
    assert stored.version == 8 and state.last_shape == so.tracked().last_shape


def test_a_commit_whose_reply_alone_was_lost_is_a_commit(redis_server):
    """EXEC ran, then the connection dropped before its reply was read: the step is saved, so
    the commit succeeds (and its copy is cached)."""
    store = RedisStateStore(
        redis_server.client(), so.FakeEngine(), "tiny|test|256", "test", cache_mb=64
    )
    handle = so.put(store, so.tracked())
    with store.transaction([handle]) as tx:
        tx.stored(handle)
        stepped = so.advanced(tx.states([handle])[handle], 9)
        pipe, parse = tx._watching, tx._watching.parse_response

        def reply_lost(*args, **kwargs):
            reply = parse(*args, **kwargs)
            if isinstance(reply, list):  # EXEC's reply: the transaction ran
                raise redis.ConnectionError("Connection closed by server.")
            return reply

        pipe.parse_response = reply_lost
        tx.commit({handle: Record(so.stored(stepped, "x"), stepped)})
    assert store.cache.get(handle).version == 9
    stored, state = so.read(_uncached_pair(redis_server)[0], handle)
    assert stored == so.stored(stepped, "x")
    so.assert_same(state, stepped)
