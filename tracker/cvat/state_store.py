"""Where tracking states live between the requests of CVAT's lambda protocol.

CVAT's AI Tools carry each object's state through the browser (JSON, signed by CVAT), so the
state CVAT sees is only a handle of 128 random bits; the tensors stay here, in process memory
(`MemoryStateStore`) or in Redis (`tracker.cvat.redis_store`), which survives restarts and is
shared by replicas. Both give the same guarantees:

- a step is taken on a checked-out copy and committed only if nothing else stepped the object
  meanwhile: of two requests stepping one object at once, one wins and the other gets
  `StateConflictError` (optimistic concurrency: no locks held across model work);
- a state expires `STATE_TTL_SECONDS` after its last use, as CVAT's signed states do.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol

from tracker.cvat.shape_tracker import TrackedObject
from tracker.cvat.state_budget import StateBudget, dropped_state_message

#: CVAT refuses states signed more than 8 hours ago; ours live as long after their last use.
STATE_TTL_SECONDS = 8 * 3600
_HANDLE_BYTES = 16  # 128 bits: unguessable, so a handle is as good as a capability
_HANDLE_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")


class StateError(ValueError):
    """A state that cannot be stepped; the message says what the user should do."""


class UnknownStateError(StateError):
    """The handle is not one of ours, or its state expired or was lost."""


class StateConflictError(StateError):
    """Another request stepped the same object at the same time."""


class StateDroppedError(StateError):
    """The state was dropped to keep memory within the budget."""


class StoreUnavailableError(RuntimeError):
    """The store cannot be reached; the message names it (an operator's problem, not the user's)."""


def new_handle() -> str:
    return secrets.token_urlsafe(_HANDLE_BYTES)


def check_handle(handle: object) -> str:
    """A handle that is not even well-formed was forged or mangled: refuse it before any lookup."""
    if not isinstance(handle, str) or not _HANDLE_PATTERN.fullmatch(handle):
        raise UnknownStateError(unknown_state_message())
    return handle


def unknown_state_message() -> str:
    return (
        "This object's tracking state is unknown or expired (states are kept 8 hours after their "
        "last use, and in memory only until the function restarts unless Redis is configured); "
        "run the tracker again from the current frame."
    )


def conflict_message() -> str:
    return (
        "This object was tracked by another request at the same time; its state is unchanged by "
        "this one. Track each object from one place at a time, and run the tracker again."
    )


class Checkout(Protocol):
    """One object's state, taken out of a store to be stepped once."""

    tracked: TrackedObject

    def commit(self) -> None:
        """Store the stepped state; raises StateConflictError if another step came first."""

    def close(self) -> None:
        """Release what the checkout holds; committing afterwards is not allowed."""


class StateStore(Protocol):
    def put(self, tracked: TrackedObject) -> str:
        """Store a newly started object; returns its handle."""

    def checkout(self, handle: str) -> Checkout:
        """Take an object out to step it; raises StateError for a handle that cannot be used."""

    def describe(self) -> str:
        """Where states live, for logs and health checks."""


def forked(tracked: TrackedObject) -> TrackedObject:
    """A copy to step: the stored state stays as it is until the step is committed."""
    assert tracked.object_state is not None, "dropped states are refused before a checkout"
    return dataclasses.replace(tracked, object_state=tracked.object_state.fork())


@dataclasses.dataclass(eq=False)
class _Held:
    tracked: TrackedObject
    last_used: float


class MemoryStateStore:
    """States in this process, under a memory budget over all of them (least recently used out).

    Nuclio's Python runtime runs one process per worker, so this store is for one-worker
    functions; several workers or replicas need the Redis store.
    """

    def __init__(
        self,
        max_state_memory_mb: int,
        ttl_seconds: float = STATE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_state_memory_mb = max_state_memory_mb
        self.budget = StateBudget(max_state_memory_mb * 1024 * 1024)
        self._ttl = ttl_seconds
        self._clock = clock
        self._held: collections.OrderedDict[str, _Held] = collections.OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"process memory (max_state_memory_mb={self.max_state_memory_mb})"

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._held)

    def put(self, tracked: TrackedObject) -> str:
        handle = new_handle()
        with self._lock:
            self._expire()
            self._held[handle] = _Held(tracked, self._clock())
        self.budget.add(tracked)
        return handle

    def checkout(self, handle: str) -> _MemoryCheckout:
        check_handle(handle)
        with self._lock:
            self._expire()
            held = self._held.get(handle)
            if held is None:
                raise UnknownStateError(unknown_state_message())
            if held.tracked.object_state is None:
                raise StateDroppedError(dropped_state_message(self.max_state_memory_mb))
            return _MemoryCheckout(self, handle, held.tracked)

    def _commit(self, handle: str, base_frame: int, stepped: TrackedObject) -> None:
        with self._lock:
            held = self._held.get(handle)
            if held is None:
                raise UnknownStateError(unknown_state_message())
            current = held.tracked.object_state
            if current is None:
                raise StateDroppedError(dropped_state_message(self.max_state_memory_mb))
            if current.frame_idx != base_frame:
                raise StateConflictError(conflict_message())
            held.tracked.object_state = stepped.object_state
            held.tracked.last_shape = stepped.last_shape
            held.last_used = self._clock()
            self._held.move_to_end(handle)
        self.budget.touch(held.tracked)

    def _expire(self) -> None:
        """Forget states unused for the TTL; the oldest come first, so stop at the first fresh."""
        deadline = self._clock() - self._ttl
        while self._held:
            handle, held = next(iter(self._held.items()))
            if held.last_used > deadline:
                break
            del self._held[handle]


class _MemoryCheckout:
    def __init__(self, store: MemoryStateStore, handle: str, stored: TrackedObject) -> None:
        self._store, self._handle = store, handle
        self._base_frame = stored.object_state.frame_idx
        self.tracked = forked(stored)

    def commit(self) -> None:
        self._store._commit(self._handle, self._base_frame, self.tracked)

    def close(self) -> None:
        pass
