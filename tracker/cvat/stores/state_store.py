"""Where tracking states live between the requests of CVAT's lambda protocol.

CVAT's AI Tools carry each object's state through the browser (JSON, signed by CVAT), so the
state CVAT sees is only a token, `<handle>.<version>`: 128 random bits naming the object and the
number of steps it has taken. The tensors stay here, in process memory (`MemoryStateStore`) or in
Redis (`redis_store.py`), which survives restarts and is shared by replicas. Both give
the same guarantees, through one `Transaction` per request:

- a request's objects are read, stepped outside any lock, and committed together: every object
  of the request moves on, or none does (optimistic concurrency: if anything else stepped one of
  them meanwhile, the commit fails with `StateConflictError` and nothing is written);
- an object's version says which step it is at, so a repeated request (a retry after a lost
  answer, a duplicate) is recognised and never steps an object twice
  (`tracker.cvat.lambda_protocol.lambda_api`);
- a state expires `STATE_TTL_SECONDS` after its last use, as CVAT's signed states do.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from tracker.cvat.shape_tracker import Shape, TrackedObject
from tracker.cvat.state_budget import StateBudget, dropped_state_message

#: CVAT refuses states signed more than 8 hours ago; ours live as long after their last use.
STATE_TTL_SECONDS = 8 * 3600
_HANDLE_BYTES = 16  # 128 bits: unguessable, so a handle is as good as a capability
_TOKEN_PATTERN = re.compile(r"([A-Za-z0-9_-]{22})\.(0|[1-9][0-9]{0,9})")


class StateError(ValueError):
    """A state that cannot be stepped; the message says what the user should do."""


class UnknownStateError(StateError):
    """The handle is not one of ours, or its state expired or was lost."""


class StateConflictError(StateError):
    """Another request stepped the same object at the same time."""


class StaleStateError(StateConflictError):
    """The state sent is older than the stored one: the object was stepped on another frame."""


class StateDroppedError(StateError):
    """The state was dropped to keep memory within the budget."""


class StoreUnavailableError(RuntimeError):
    """The store cannot be reached; the message names it (an operator's problem, not the user's)."""


class StoreConnectionLostError(StoreUnavailableError):
    """The connection a transaction watched its objects on was lost during its commit, and what
    it was to write is not in the store: nothing of the request was saved, so running it again
    is safe and is the remedy (a transient fault, not a conflict with another request)."""


def new_handle() -> str:
    return secrets.token_urlsafe(_HANDLE_BYTES)


def token(handle: str, version: int) -> str:
    """The state CVAT carries for an object: its handle and the step it is at."""
    return f"{handle}.{version}"


def parse_token(state: object) -> tuple[str, int]:
    """`(handle, version)` of a state; one that is not even well-formed was forged, mangled or
    made by an older version of this tracker: refuse it before any lookup."""
    match = _TOKEN_PATTERN.fullmatch(state) if isinstance(state, str) else None
    if match is None:
        raise UnknownStateError(unknown_state_message())
    return match[1], int(match[2])


def unknown_state_message() -> str:
    return (
        "This object's tracking state is unknown or expired (states are kept 8 hours after their "
        "last use, and in memory only until the function restarts unless Redis is configured); "
        "run the tracker again from the current frame."
    )


def conflict_message() -> str:
    return (
        "This object was tracked by another request at the same time; no object of this request "
        "was changed. Track each object from one place at a time, and run the tracker again."
    )


def connection_lost_message(where: str) -> str:
    return (
        f"The connection to the tracking-state store ({where}) was lost while this step was "
        "being saved; the step was not saved (no object of this request was changed). Run it "
        "again: the tracker on this frame, from the same state."
    )


def stale_message() -> str:
    return (
        "This object's state is older than the one stored: it has been tracked onto another "
        "frame since (by another request, or another browser tab); no object of this request "
        "was changed. Run the tracker again from the current frame."
    )


@dataclasses.dataclass(frozen=True)
class Stored:
    """What a store knows of an object without reading its tensors: enough to tell a step from
    a repeat. `digest` names the frame of the step that made `version` ("" for the start)."""

    version: int  # the steps taken since the start
    shape_type: str
    width: int
    height: int
    bare_points: bool  # CVAT sent the start as a bare rectangle: answered alike
    digest: str = ""
    outside: bool = False  # SAM2 saw no object on that frame
    # Where the newest prompt was: the client's frame number (None when it sent none), the
    # direction of the walk (+1, -1; 0 until prompted twice), and the engine state's frame_idx
    # minus `version` (a prompt again starts a record whose state is already frames along).
    prompt_frame: int | None = None
    walk: int = 0
    offset: int = 0


@dataclasses.dataclass(eq=False)
class Record:
    """An object to write: what is stored of it and its state at `stored.version`."""

    stored: Stored
    tracked: TrackedObject


class Transaction(Protocol):
    """One request's view of a store: reads, then one all-or-nothing commit."""

    def stored(self, handle: str) -> Stored:
        """The object's stored version and kind; raises StateError if it cannot be used."""

    def states(self, handles: Sequence[str]) -> dict[str, TrackedObject]:
        """Copies of the objects' states at their stored versions, to be stepped; a store may
        leave `last_shape` None where reading it costs (`last_shapes` reads it when needed).
        Raises StateConflictError when an object moved on since `stored` read it (what was read
        then is gone: a conflict, to be read again, never an expired state)."""

    def last_shapes(self, handles: Sequence[str]) -> dict[str, Shape | None]:
        """The shapes the objects' stored versions answered (those of the very versions
        `stored` gives, even where nothing is committed after); raises StateConflictError when
        an object moved on since."""

    def commit(self, records: dict[str, Record]) -> None:
        """Write every record (new objects and stepped ones) or none: raises
        StateConflictError if an object read by this transaction changed since, and
        StoreConnectionLostError if the store's connection was lost and nothing was written."""


class StateStore(Protocol):
    def transaction(self, handles: Sequence[str]) -> contextlib.AbstractContextManager[Transaction]:
        """A transaction over the objects of `handles` (existing ones; new ones need none)."""

    def describe(self) -> str:
        """Where states live, for logs and health checks."""


def forked(tracked: TrackedObject) -> TrackedObject:
    """A copy to step: the stored state stays as it is until the step is committed."""
    assert tracked.object_state is not None, "dropped states are refused before a step"
    return dataclasses.replace(tracked, object_state=tracked.object_state.fork())


@dataclasses.dataclass(eq=False)
class _Held:
    record: Record
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

    @contextlib.contextmanager
    def transaction(self, handles: Sequence[str]) -> Iterator[_MemoryTransaction]:
        yield _MemoryTransaction(self)

    def _get(self, handle: str) -> Record:
        with self._lock:
            self._expire()
            held = self._held.get(handle)
            if held is None:
                raise UnknownStateError(unknown_state_message())
            if held.record.tracked.object_state is None:
                raise StateDroppedError(dropped_state_message(self.max_state_memory_mb))
            return held.record

    def _commit(self, seen: dict[str, int], records: dict[str, Record]) -> None:
        with self._lock:
            for handle, version in seen.items():
                held = self._held.get(handle)
                if held is None or held.record.tracked.object_state is None:
                    raise StateConflictError(conflict_message())  # expired or dropped meanwhile
                if held.record.stored.version != version:
                    raise StateConflictError(conflict_message())
            now = self._clock()
            for handle, record in records.items():
                held = self._held.get(handle)
                if held is None:
                    self._held[handle] = _Held(record, now)
                    continue
                # The budget knows the held object: it moves on in place.
                kept = held.record.tracked
                kept.object_state, kept.last_shape = (
                    record.tracked.object_state,
                    record.tracked.last_shape,
                )
                held.record = Record(record.stored, kept)
                held.last_used = now
                self._held.move_to_end(handle)
        for handle in records:
            held = self._held.get(handle)
            if held is not None:
                if handle in seen:
                    self.budget.touch(held.record.tracked)
                else:
                    self.budget.add(held.record.tracked)

    def _expire(self) -> None:
        """Forget states unused for the TTL; the oldest come first, so stop at the first fresh."""
        deadline = self._clock() - self._ttl
        while self._held:
            handle, held = next(iter(self._held.items()))
            if held.last_used > deadline:
                break
            del self._held[handle]


class _MemoryTransaction:
    def __init__(self, store: MemoryStateStore) -> None:
        self._store = store
        self._seen: dict[str, Record] = {}

    def stored(self, handle: str) -> Stored:
        if handle not in self._seen:
            record = self._store._get(handle)
            # A snapshot: a commit elsewhere moves the held object on in place.
            self._seen[handle] = Record(record.stored, forked(record.tracked))
        return self._seen[handle].stored

    def states(self, handles: Sequence[str]) -> dict[str, TrackedObject]:
        return {h: forked(self._seen[h].tracked) for h in handles}

    def last_shapes(self, handles: Sequence[str]) -> dict[str, Shape | None]:
        return {h: self._seen[h].tracked.last_shape for h in handles}

    def commit(self, records: dict[str, Record]) -> None:
        seen = {h: r.stored.version for h, r in self._seen.items()}
        self._store._commit(seen, records)
