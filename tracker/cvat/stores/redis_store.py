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
EXPIRE are used: no Lua and no modules, which kvrocks does not all have.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator, Sequence

import redis
import safetensors.torch
import torch

from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.stores import lineage
from tracker.cvat.stores.state_cache import CachedObject, StateCache
from tracker.cvat.stores.state_store import (
    STATE_TTL_SECONDS,
    Record,
    StateConflictError,
    Stored,
    StoreUnavailableError,
    UnknownStateError,
    conflict_message,
    unknown_state_message,
)
from tracker.engine.streaming import MemoryEntry, ObjectState, StreamingSam2

_FORMAT = 2
_KEY_PREFIX = "cvat-sam2-tracker:object:"


def tensor_fields(state: ObjectState) -> dict[str, torch.Tensor]:
    """The state's tensors by field name; a name always holds the same tensor."""
    fields = {}
    named = [(f"c{e.frame_idx or ''}", e) for e in state.conditioning]  # "c": the first prompt
    for name, entry in named + [(str(e.frame_idx), e) for e in state.recent]:
        if entry.maskmem_features is not None:
            fields[f"mem:{name}"] = entry.maskmem_features
        fields[f"ptr:{name}"] = entry.obj_ptr
    return fields


def _encoded(tensor: torch.Tensor) -> bytes:
    return safetensors.torch.save({"t": tensor.detach().contiguous().cpu()})


def _decoded(data: bytes, device: torch.device) -> torch.Tensor:
    return safetensors.torch.load(data)["t"].to(device)


def _shape_json(shape: Shape | None) -> bytes:
    """The shape as zlib-compressed JSON: a mask's RLE is written with every step, and its runs
    compress well."""
    value = None if shape is None else {"type": shape.type, "points": shape.points}
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), level=1)


def _shape_of(raw: bytes | None) -> Shape | None:
    value = None if raw is None else json.loads(zlib.decompress(raw))
    return None if value is None else Shape(value["type"], value["points"])


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
        return json.dumps(
            {
                "format": _FORMAT,
                "model": self._model_key,
                "type": stored.shape_type,
                "width": stored.width,
                "height": stored.height,
                "bare": stored.bare_points,
                "version": stored.version,
                "digest": stored.digest,
                "outside": stored.outside,
                "prompt": [stored.prompt_frame, stored.walk, stored.offset],
                "fields": sorted(fields),
                "heads": list(heads),
            },
            separators=(",", ":"),
        )

    def _parsed(self, raw: bytes | None) -> tuple[Stored, list[str], list[str]]:
        if raw is None:
            raise UnknownStateError(unknown_state_message())
        header = json.loads(raw)
        if header.get("format") != _FORMAT or header.get("model") != self._model_key:
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
        return _reported(self._where)


class _RedisTransaction:
    """Reads through a plain pipeline after the WATCH; writes through the watching one."""

    def __init__(
        self, store: RedisStateStore, watching: redis.client.Pipeline, handles: Sequence[str]
    ) -> None:
        self._store, self._watching = store, watching
        self._read: dict[str, tuple[Stored, list[str], list[str]] | UnknownStateError] = {}
        if handles:
            pipe = store._client.pipeline(transaction=False)
            for handle in handles:
                pipe.hget(store._key(handle), "header")
            for handle, raw in zip(handles, pipe.execute(), strict=True):
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

    def states(self, handles: Sequence[str]) -> dict[str, TrackedObject]:
        """Restored from this replica's copy where it has one, reading only the fields it lacks
        (all objects' reads in one round trip; none when every copy is current). The last shape
        comes from a current copy or stays None: `last_shapes` reads it where it is needed."""
        store, plans = self._store, []
        pipe = store._client.pipeline(transaction=False)
        for handle in handles:
            stored, names, _ = self._read[handle]  # type: ignore[misc]
            cached, current = self._copy(handle)
            copies = {} if cached is None else cached.fields
            have = {n: copies[n] for n in names if n in copies}
            unread = [n for n in names if n not in have]
            if unread:
                pipe.hmget(store._key(handle), unread)
            plans.append((handle, stored, have, unread, cached.last_shape if current else None))
        with store._reported():
            replies = iter(pipe.execute() if len(pipe) else [])
        states = {}
        for handle, stored, have, unread, last in plans:
            values = next(replies) if unread else []
            if None in values:
                raise UnknownStateError(unknown_state_message())  # expired while we read it
            device = store._engine.device
            fields = have | {n: _decoded(v, device) for n, v in zip(unread, values, strict=True)}
            state = store._restored(stored.version + stored.offset, fields)
            states[handle] = TrackedObject(
                state, stored.shape_type, stored.width, stored.height, last_shape=last
            )
        return states

    def last_shapes(self, handles: Sequence[str]) -> dict[str, Shape | None]:
        store, shapes, unread = self._store, {}, []
        for handle in handles:
            self.stored(handle)  # raises for an unknown object
            cached, current = self._copy(handle)
            if current:
                shapes[handle] = cached.last_shape
            else:
                unread.append(handle)
        if unread:
            pipe = store._client.pipeline(transaction=False)
            for handle in unread:
                pipe.hget(store._key(handle), "last")
            with store._reported():
                shapes.update(zip(unread, map(_shape_of, pipe.execute()), strict=True))
        return shapes

    def commit(self, records: dict[str, Record]) -> None:
        store, pipe = self._store, self._watching
        written = {}
        try:
            with store._reported():
                pipe.multi()
                for handle, record in records.items():
                    key = store._key(handle)
                    tensors = tensor_fields(record.tracked.object_state)
                    read = self._read.get(handle)
                    read = None if isinstance(read, UnknownStateError) else read
                    before = set() if read is None else set(read[1])
                    new = {n: _encoded(t) for n, t in tensors.items() if n not in before}
                    heads = lineage.extended(
                        [] if read is None else read[2], record.stored.version, record.stored.digest
                    )
                    header = store._header(record.stored, tensors.keys(), heads)
                    last = _shape_json(record.tracked.last_shape)
                    pipe.hset(key, mapping={"header": header, "last": last, **new})
                    if gone := sorted(before - tensors.keys()):
                        pipe.hdel(key, *gone)
                    pipe.expire(key, store._ttl)
                    written[handle] = (record, tensors, heads[0])
                pipe.execute()
        except redis.WatchError as e:
            raise StateConflictError(conflict_message()) from e
        for handle, (record, tensors, head) in written.items():
            last = record.tracked.last_shape
            store.cache.put(handle, record.stored.version, head, tensors, last)


@contextlib.contextmanager
def _reported(where: str) -> Iterator[None]:
    """Turns Redis failures into StoreUnavailableError naming the server, never a crash."""
    try:
        yield
    except redis.WatchError:
        raise
    except redis.AuthenticationError as e:
        raise StoreUnavailableError(
            f"Redis at {where} refused to authenticate us ({e}); check "
            "CVAT_FUNCTIONS_REDIS_PASSWORD."
        ) from e
    except redis.RedisError as e:
        raise StoreUnavailableError(
            f"The tracking-state store, Redis at {where}, cannot be used ({e}); check that it "
            "runs and that CVAT_FUNCTIONS_REDIS_HOST and CVAT_FUNCTIONS_REDIS_PORT point to it."
        ) from e
