"""Tracking states in Redis (or CVAT's kvrocks), so that any replica continues any object and a
restarted function loses nothing.

The store is shared with CVAT, so nothing is pickled: each object is one hash whose `header`
field is JSON (its version, kind and field names: a few hundred bytes), whose `last` field is the
shape its newest step answered (JSON, zlib-compressed), and whose other fields are single tensors
in safetensors format, one per memory entry: `mem:c`/`ptr:c` for the conditioning frame,
`mem:N`/`ptr:N` for tracked frame N. Tensor fields never change once written, so a step writes
only what is new (the frame's memory and pointer), deletes what memory attention no longer reads,
and reads only what this replica's cache (`state_cache.py`) lacks: usually the header alone.

A request is one transaction on one connection: WATCH every object's key, read all headers in one
round trip (on a second pooled connection, after the WATCH), the missing fields in another, then
MULTI/EXEC every write, so a request commits all of its objects or none, and uses two connections
whatever its number of objects. Only plain hash and key commands, pipelines, WATCH/MULTI/EXEC and
EXPIRE are used: no Lua and no modules, which kvrocks does not all have. The fields' encodings are
in `redis_format.py`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence

import redis
import torch

from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.stores import lineage
from tracker.cvat.stores.redis_format import (
    FORMAT,
    connection_lost,
    decoded,
    encoded,
    header_json,
    reported,
    shape_json,
    shape_of,
    tensor_fields,
)
from tracker.cvat.stores.state_cache import CachedObject, StateCache
from tracker.cvat.stores.state_store import (
    STATE_TTL_SECONDS,
    Record,
    StateConflictError,
    StoreConnectionLostError,
    Stored,
    UnknownStateError,
    conflict_message,
    connection_lost_message,
    unknown_state_message,
)
from tracker.engine.streaming import MemoryEntry, ObjectState, StreamingSam2

__all__ = ["RedisStateStore", "tensor_fields"]

_KEY_PREFIX = "cvat-sam2-tracker:object:"


class RedisStateStore:
    """States in Redis under a key per object, expiring `ttl_seconds` after their last use, with
    copies of recently used ones in this process (`cache_mb`; 0: none)."""

    def __init__(
        self,
        client: redis.Redis,
        engine: StreamingSam2,
        model_key: str,
        where: str,
        ttl_seconds: int = STATE_TTL_SECONDS,
        cache_mb: int = 0,
    ) -> None:
        self._client = client
        self._engine = engine
        self._model_key = model_key
        self._where = where
        self._ttl = ttl_seconds
        self.cache = StateCache(cache_mb * 1024 * 1024)

    def describe(self) -> str:
        return f"Redis at {self._where}"

    def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers."""
        with self._reported():
            self._client.ping()

    @contextlib.contextmanager
    def transaction(self, handles: Sequence[str]) -> Iterator[_RedisTransaction]:
        with self._reported():
            watching = self._client.pipeline(transaction=True)
            try:
                if handles:
                    watching.watch(*(self._key(h) for h in handles))
                yield _RedisTransaction(self, watching, handles)
            finally:
                watching.reset()

    def _key(self, handle: str) -> str:
        return _KEY_PREFIX + handle

    def _header(self, stored: Stored, fields: Sequence[str], heads: Sequence[str]) -> str:
        return header_json(self._model_key, stored, fields, heads)

    def _parsed(self, raw: bytes | None) -> tuple[Stored, list[str], list[str]]:
        if raw is None:
            raise UnknownStateError(unknown_state_message())
        header = json.loads(raw)
        if header.get("format") != FORMAT or header.get("model") != self._model_key:
            raise UnknownStateError(
                f"This object was started by a SAM2 tracker with another model or version "
                f"({header.get('model')}; this one runs {self._model_key}); run the tracker "
                "again from the current frame."
            )
        stored = Stored(
            header["version"],
            header["type"],
            header["width"],
            header["height"],
            header["bare"],
            header["digest"],
            header["outside"],
            *header.get("prompt", [None, 0, 0]),  # none before objects were prompted again
        )
        return stored, header["fields"], header.get("heads", [])  # none before heads were kept

    def _restored(self, frame_idx: int, fields: dict[str, torch.Tensor]) -> ObjectState:
        def entry(name: str, frame_idx: int) -> MemoryEntry:
            return MemoryEntry(frame_idx, fields.get(f"mem:{name}"), fields[f"ptr:{name}"])

        names = [k[4:] for k in fields if k.startswith("ptr:")]
        frames = sorted(int(n) for n in names if n.isdigit())
        prompted = sorted(int(n[1:] or 0) for n in names if n[0] == "c")
        conditioning = [entry(f"c{i or ''}", i) for i in prompted]
        return self._engine.restore(frame_idx, conditioning, [entry(str(i), i) for i in frames])

    def _reported(self) -> contextlib.AbstractContextManager[None]:
        return reported(self._where)


class _RedisTransaction:
    """Reads through a plain pipeline after the WATCH; writes through the watching one.

    The headers are read once, after the WATCH; every later read of an object's fields reads
    its header again in the same HMGET (one atomic command), so that what it returns is of the
    version the transaction planned with, or the object moved on and the read is a conflict:
    a field deleted by a newer commit is never taken for an expired state, and a repeat, which
    commits nothing (so no EXEC checks its WATCH), never answers a newer version's shape."""

    def __init__(
        self, store: RedisStateStore, watching: redis.client.Pipeline, handles: Sequence[str]
    ) -> None:
        self._store, self._watching = store, watching
        self._read: dict[str, tuple[Stored, list[str], list[str]] | UnknownStateError] = {}
        self._raw: dict[str, bytes | None] = {}
        if handles:
            pipe = store._client.pipeline(transaction=False)
            for handle in handles:
                pipe.hget(store._key(handle), "header")
            for handle, raw in zip(handles, pipe.execute(), strict=True):
                self._raw[handle] = raw
                try:
                    self._read[handle] = store._parsed(raw)
                except UnknownStateError as e:
                    self._read[handle] = e

    def stored(self, handle: str) -> Stored:
        read = self._read[handle]
        if isinstance(read, UnknownStateError):
            raise read
        return read[0]

    def _copy(self, handle: str) -> tuple[CachedObject | None, bool]:
        """This replica's copy of the object if it is of the stored history, and whether it
        is of the stored version itself."""
        stored, _, heads = self._read[handle]  # type: ignore[misc]
        cached = self._store.cache.get(handle)
        if cached is None:
            return None, False
        behind = lineage.steps_behind(heads, stored.version, cached.version, cached.head)
        return (None, False) if behind is None else (cached, behind == 0)

    def _fields(self, handles: Sequence[str], names: Sequence[Sequence[str]]) -> list[list]:
        """The `names` fields of each object (one round trip), of the version its header showed
        after the WATCH: StateConflictError if an object moved on since, UnknownStateError if
        it expired."""
        pipe = self._store._client.pipeline(transaction=False)
        for handle, fields in zip(handles, names, strict=True):
            pipe.hmget(self._store._key(handle), ["header", *fields])
        with self._store._reported():
            replies = pipe.execute() if handles else []
        for handle, (header, *values) in zip(handles, replies, strict=True):
            if header is None:
                raise UnknownStateError(unknown_state_message())  # expired while we read it
            if header != self._raw[handle]:
                raise StateConflictError(conflict_message())  # moved on: read it again
            if None in values:  # the header lists them, and commits are atomic: lost
                raise UnknownStateError(unknown_state_message())
        return [values for _, *values in replies]

    def states(self, handles: Sequence[str]) -> dict[str, TrackedObject]:
        """Restored from this replica's copy where it has one, reading only the fields it lacks
        (all objects' reads in one round trip; none when every copy is current). The last shape
        comes from a current copy or stays None: `last_shapes` reads it where it is needed."""
        store, plans = self._store, []
        for handle in handles:
            stored, names, _ = self._read[handle]  # type: ignore[misc]
            cached, current = self._copy(handle)
            copies = {} if cached is None else cached.fields
            have = {n: copies[n] for n in names if n in copies}
            unread = [n for n in names if n not in have]
            plans.append((handle, stored, have, unread, cached.last_shape if current else None))
        reading = [plan for plan in plans if plan[3]]
        read = self._fields([plan[0] for plan in reading], [plan[3] for plan in reading])
        values = {plan[0]: v for plan, v in zip(reading, read, strict=True)}
        states, device = {}, store._engine.device
        for handle, stored, have, unread, last in plans:
            read = zip(unread, values.get(handle, []), strict=True)
            fields = have | {n: decoded(v, device) for n, v in read}
            state = store._restored(stored.version + stored.offset, fields)
            states[handle] = TrackedObject(
                state, stored.shape_type, stored.width, stored.height, last_shape=last
            )
        return states

    def last_shapes(self, handles: Sequence[str]) -> dict[str, Shape | None]:
        shapes, unread = {}, []
        for handle in handles:
            self.stored(handle)  # raises for an unknown object
            cached, current = self._copy(handle)
            if current:
                shapes[handle] = cached.last_shape
            else:
                unread.append(handle)
        lasts = self._fields(unread, [["last"]] * len(unread)) if unread else []
        shapes.update((h, shape_of(last)) for h, (last,) in zip(unread, lasts, strict=True))
        return shapes

    def commit(self, records: dict[str, Record]) -> None:
        """As `Transaction.commit`; a copy of each record is cached once Redis holds it, never
        before. A lost connection whose EXEC ran (only its reply was lost) is a commit."""
        store, pipe = self._store, self._watching
        written = {}
        try:
            with store._reported():
                pipe.multi()
                for handle, record in records.items():
                    written[handle] = self._queued(pipe, handle, record)
                pipe.execute()
        except redis.WatchError as e:
            if not connection_lost(e):
                raise StateConflictError(conflict_message()) from e
            if not self._were_written(written):
                raise StoreConnectionLostError(connection_lost_message(store.describe())) from e
        for handle, (record, tensors, head) in written.items():
            last = record.tracked.last_shape
            store.cache.put(handle, record.stored.version, head, tensors, last)

    def _queued(
        self, pipe: redis.client.Pipeline, handle: str, record: Record
    ) -> tuple[Record, dict[str, torch.Tensor], str]:
        """Queue the record's writes; (record, its tensors, its lineage head)."""
        store, key = self._store, self._store._key(handle)
        tensors = tensor_fields(record.tracked.object_state)
        read = self._read.get(handle)
        read = None if isinstance(read, UnknownStateError) else read
        before = set() if read is None else set(read[1])
        new = {n: encoded(t) for n, t in tensors.items() if n not in before}
        heads = lineage.extended(
            [] if read is None else read[2], record.stored.version, record.stored.digest
        )
        header = store._header(record.stored, tensors.keys(), heads)
        last = shape_json(record.tracked.last_shape)
        pipe.hset(key, mapping={"header": header, "last": last, **new})
        if gone := sorted(before - tensors.keys()):
            pipe.hdel(key, *gone)
        pipe.expire(key, store._ttl)
        return record, tensors, heads[0]

    def _were_written(self, written: dict[str, tuple[Record, object, str]]) -> bool:
        """Whether the store holds every record's version (MULTI/EXEC wrote all or none)."""
        pipe = self._store._client.pipeline(transaction=False)
        for handle in written:
            pipe.hget(self._store._key(handle), "header")
        with self._store._reported():
            raws = pipe.execute()
        for (record, _, head), raw in zip(written.values(), raws, strict=True):
            try:
                stored, _, heads = self._store._parsed(raw)
            except UnknownStateError:
                return False
            if lineage.steps_behind(heads, stored.version, record.stored.version, head) is None:
                return False
        return True
