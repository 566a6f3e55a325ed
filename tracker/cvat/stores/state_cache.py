"""A replica's copies of recently used object states, so that a step reads from Redis only what
the copy lacks.

A stored field never changes once written (`redis_store.py`) within one history of the object,
and a copy is used only when the header shows it is of that history (`lineage.py`: a version
number alone can name two states after a failover lost one). So a copy stays right field by
field: a step whose object this replica stepped last reads nothing but the object's header; one
whose object another replica stepped since reads only the fields written there. The copies are
the engine's own tensors (on its device), bounded by a memory budget
(least recently used out); the store still validates every step against Redis.
"""

from __future__ import annotations

import dataclasses
import threading

import torch

from tracker.cvat.shape_tracker import Shape
from tracker.cvat.state_budget import StateBudget


@dataclasses.dataclass(eq=False)
class CachedObject:
    """An object's fields as of `version` (whose lineage head is `head`), and the shape that
    version answered."""

    version: int
    head: str
    fields: dict[str, torch.Tensor]
    last_shape: Shape | None
    _cache: StateCache | None = dataclasses.field(default=None, repr=False)
    _handle: str = ""

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.fields.values())

    def release(self) -> None:
        """Dropped by the budget: forget the copy (the state itself stays in Redis)."""
        if self._cache is not None:
            self._cache._forget(self._handle, self)


class StateCache:
    def __init__(self, max_bytes: int) -> None:
        self._budget = StateBudget(max_bytes, what="cached copy of a state")
        self._objects: dict[str, CachedObject] = {}
        self._lock = threading.RLock()  # the budget calls back into `_forget`

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, handle: str) -> CachedObject | None:
        with self._lock:
            return self._objects.get(handle)

    def put(
        self,
        handle: str,
        version: int,
        head: str,
        fields: dict[str, torch.Tensor],
        last: Shape | None,
    ) -> None:
        """Keep a copy of what was just committed (never before: a copy must be of a state
        that Redis holds)."""
        if self._budget.max_bytes == 0:
            return  # no cache: every step reads its object whole
        cached = CachedObject(version, head, dict(fields), last, self, handle)
        with self._lock:
            self._objects[handle] = cached
            self._budget.add(cached)

    def _forget(self, handle: str, cached: CachedObject) -> None:
        with self._lock:
            if self._objects.get(handle) is cached:
                del self._objects[handle]
