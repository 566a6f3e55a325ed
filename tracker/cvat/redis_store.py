"""Tracking states in Redis (or CVAT's kvrocks), so that any replica continues any object and a
restarted function loses nothing.

The store is shared with CVAT, so nothing is pickled: each object is one hash whose `header` field
is JSON and whose other fields are single tensors in safetensors format, one per memory entry:
`mem:c`/`ptr:c` for the conditioning frame, `mem:N`/`ptr:N` for tracked frame N. Fields never
change once written, so a step writes only what is new (the frame's memory and pointer) and
deletes what memory attention no longer reads. Only plain hash and key commands, pipelines,
WATCH/MULTI/EXEC and EXPIRE are used: no Lua and no modules, which kvrocks does not all have.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import redis
import safetensors.torch
import torch

from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.state_store import (
    STATE_TTL_SECONDS,
    StateConflictError,
    StoreUnavailableError,
    UnknownStateError,
    check_handle,
    conflict_message,
    forked,
    new_handle,
    unknown_state_message,
)
from tracker.engine.streaming import MemoryEntry, ObjectState, StreamingSam2

_FORMAT = 1
_KEY_PREFIX = "cvat-sam2-tracker:object:"


def tensor_fields(state: ObjectState) -> dict[str, torch.Tensor]:
    """The state's tensors by field name; a name always holds the same tensor."""
    fields = {}
    for name, entry in [("c", state.conditioning)] + [(str(e.frame_idx), e) for e in state.recent]:
        if entry.maskmem_features is not None:
            fields[f"mem:{name}"] = entry.maskmem_features
        fields[f"ptr:{name}"] = entry.obj_ptr
    return fields


def _encoded(tensor: torch.Tensor) -> bytes:
    return safetensors.torch.save({"t": tensor.detach().contiguous().cpu()})


def _decoded(data: bytes, device: torch.device) -> torch.Tensor:
    return safetensors.torch.load(data)["t"].to(device)


class RedisStateStore:
    """States in Redis under a key per object, expiring `ttl_seconds` after their last use."""

    def __init__(
        self,
        client: redis.Redis,
        engine: StreamingSam2,
        model_key: str,
        where: str,
        ttl_seconds: int = STATE_TTL_SECONDS,
    ) -> None:
        self._client = client
        self._engine = engine
        self._model_key = model_key
        self._where = where
        self._ttl = ttl_seconds

    def describe(self) -> str:
        return f"Redis at {self._where}"

    def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers."""
        with self._reported():
            self._client.ping()

    def put(self, tracked: TrackedObject) -> str:
        handle = new_handle()
        fields = {name: _encoded(t) for name, t in tensor_fields(tracked.object_state).items()}
        with self._reported(), self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(handle), mapping={"header": self._header(tracked), **fields})
            pipe.expire(self._key(handle), self._ttl)
            pipe.execute()
        return handle

    def checkout(self, handle: str) -> RedisCheckout:
        return RedisCheckout(self, check_handle(handle))

    def _key(self, handle: str) -> str:
        return _KEY_PREFIX + handle

    def _header(self, tracked: TrackedObject) -> str:
        last = tracked.last_shape
        return json.dumps(
            {
                "format": _FORMAT,
                "model": self._model_key,
                "type": tracked.shape_type,
                "width": tracked.width,
                "height": tracked.height,
                "frame": tracked.object_state.frame_idx,
                "last": None if last is None else {"type": last.type, "points": last.points},
                "bare": tracked.bare_points,
            },
            separators=(",", ":"),
        )

    def _restored(self, raw: dict[bytes, bytes]) -> TrackedObject:
        header = json.loads(raw[b"header"])
        if header.get("format") != _FORMAT or header.get("model") != self._model_key:
            raise UnknownStateError(
                f"This object was started by a SAM2 tracker with another model or version "
                f"({header.get('model')}; this one runs {self._model_key}); run the tracker "
                "again from the current frame."
            )
        device = self._engine.device

        def entry(name: str, frame_idx: int) -> MemoryEntry:
            memory = raw.get(f"mem:{name}".encode())
            pointer = _decoded(raw[f"ptr:{name}".encode()], device)
            memory = None if memory is None else _decoded(memory, device)
            return MemoryEntry(frame_idx, memory, pointer)

        frames = sorted(int(k[4:]) for k in raw if k.startswith(b"ptr:") and k != b"ptr:c")
        state = self._engine.restore(
            header["frame"], entry("c", 0), [entry(str(i), i) for i in frames]
        )
        last = header["last"]
        return TrackedObject(
            state,
            header["type"],
            header["width"],
            header["height"],
            last_shape=None if last is None else Shape(last["type"], last["points"]),
            bare_points=header["bare"],
        )

    def _reported(self) -> contextlib.AbstractContextManager[None]:
        return _reported(self._where)


class RedisCheckout:
    """WATCHes the object's key while it is stepped; the commit fails if anything changed it."""

    def __init__(self, store: RedisStateStore, handle: str) -> None:
        self._store, self._key = store, store._key(handle)
        with store._reported():
            self._pipe = store._client.pipeline(transaction=True)
            try:
                self._pipe.watch(self._key)
                raw = self._pipe.hgetall(self._key)
            except BaseException:
                self._pipe.reset()
                raise
        if not raw or b"header" not in raw:
            self.close()
            raise UnknownStateError(unknown_state_message())
        try:
            stored = store._restored(raw)
        except BaseException:
            self.close()
            raise
        self._stored_fields = {k.decode() for k in raw} - {"header"}
        self.tracked = forked(stored)

    def commit(self) -> None:
        tensors = tensor_fields(self.tracked.object_state)
        new = {name: _encoded(t) for name, t in tensors.items() if name not in self._stored_fields}
        gone = sorted(self._stored_fields - tensors.keys())
        pipe, store = self._pipe, self._store
        try:
            with store._reported():
                pipe.multi()
                pipe.hset(self._key, mapping={"header": store._header(self.tracked), **new})
                if gone:
                    pipe.hdel(self._key, *gone)
                pipe.expire(self._key, store._ttl)
                pipe.execute()
        except redis.WatchError as e:
            raise StateConflictError(conflict_message()) from e
        finally:
            self.close()

    def close(self) -> None:
        self._pipe.reset()


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
