"""A memory budget over all live tracking states of one agent, dropping the least recently used.

cvat-cli's agent keeps every state for 8 hours after its last use, with no cap on their number,
so without a budget a day of annotation could exhaust a GPU. States the agent has already let go
of are not counted: the budget holds them by weak reference only.
"""

from __future__ import annotations

import collections
import logging
import weakref
from typing import Protocol

_log = logging.getLogger(__name__)


class Budgeted(Protocol):
    def nbytes(self) -> int: ...

    def release(self) -> None:
        """Free the state's tensors; tracking it afterwards must fail with a clear message."""


class StateBudget:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._states: collections.OrderedDict[int, weakref.ref[Budgeted]] = (
            collections.OrderedDict()
        )

    def live_states(self) -> list[Budgeted]:
        return [s for ref in self._states.values() if (s := ref()) is not None]

    def total_bytes(self) -> int:
        return sum(state.nbytes() for state in self.live_states())

    def add(self, state: Budgeted) -> None:
        """Count a new state, dropping the least recently used ones while over the budget."""
        key = id(state)
        self._states[key] = weakref.ref(state, lambda _, key=key: self._states.pop(key, None))
        self._enforce(keep=state)

    def touch(self, state: Budgeted) -> None:
        """Mark `state` as just used and re-check the budget (a state grows until it is full)."""
        key = id(state)
        if key in self._states:
            self._states.move_to_end(key)
            self._enforce(keep=state)

    def _enforce(self, keep: Budgeted) -> None:
        total = self.total_bytes()
        for key in list(self._states):
            if total <= self.max_bytes:
                break
            state = self._states[key]()
            if state is None or state is keep:
                continue
            total -= state.nbytes()
            state.release()
            del self._states[key]
            _log.info("Dropped the least recently used tracking state to stay within the budget")
