"""A memory budget over all live tracking states (or image embeddings) of one agent, dropping the
least recently used.

cvat-cli's agent keeps every state for 8 hours after its last use, with no cap on their number,
so without a budget a day of annotation could exhaust a GPU. States the agent has already let go
of are not counted: the budget holds them by weak reference only.
"""

from __future__ import annotations

import collections
import logging
import weakref
from typing import Protocol

from tracker.engine.errors import ModelConfigError, Parameter

_log = logging.getLogger(__name__)


class Budgeted(Protocol):
    def nbytes(self) -> int: ...

    def release(self) -> None:
        """Free the state's tensors; tracking it afterwards must fail with a clear message."""


class StateBudget:
    def __init__(self, max_bytes: int, what: str = "tracking state") -> None:
        self.max_bytes = max_bytes
        self.what = what  # for the log
        # id -> (weak reference, bytes when last counted), least recently used first.
        self._states: collections.OrderedDict[int, tuple[weakref.ref[Budgeted], int]] = (
            collections.OrderedDict()
        )
        self._total = 0

    def live_states(self) -> list[Budgeted]:
        return [s for ref, _ in self._states.values() if (s := ref()) is not None]

    def total_bytes(self) -> int:
        return self._total

    def add(self, state: Budgeted) -> None:
        """Count a new state, dropping the least recently used ones while over the budget."""
        key = id(state)
        self._states[key] = (weakref.ref(state, lambda _, key=key: self._forget(key)), 0)
        self.touch(state)

    def touch(self, state: Budgeted) -> None:
        """Mark `state` as just used and re-count it (a state grows until its memory is full)."""
        key = id(state)
        if key not in self._states:
            return
        ref, counted = self._states[key]
        size = state.nbytes()
        self._states[key] = (ref, size)
        self._states.move_to_end(key)
        self._total += size - counted
        self._enforce(keep=key)

    def _forget(self, key: int) -> None:
        _, counted = self._states.pop(key, (None, 0))
        self._total -= counted

    def _enforce(self, keep: int) -> None:
        for key in list(self._states):
            if self._total <= self.max_bytes:
                break
            if key == keep:
                continue
            state = self._states[key][0]()
            self._forget(key)
            if state is not None:
                state.release()
                _log.info("Dropped the least recently used %s to stay within budget", self.what)


def dropped_state_message(max_state_memory_mb: int) -> ModelConfigError:
    """What tracking a dropped state answers; its parameter is phrased by the caller's syntax."""
    return ModelConfigError(
        f"This object's tracking state was dropped to keep memory within {max_state_memory_mb} "
        "MB; run the tracker again from the current frame, or give the states more memory with ",
        Parameter("max_state_memory_mb", 2 * max_state_memory_mb),
        ".",
    )
