"""Admission control for one replica: admit only what can finish before its deadline.

A replica computes one request at a time (one device, and SAM2's image predictor keeps the
current image in itself). Each request gets a deadline when it arrives: its arrival plus
`timeouts.admission_budget` of `serve --request-timeout`. `Admission.admit` (on the event loop)
admits it only if the work queued ahead of it and its own, estimated from a running average of
recent computations on this replica (`StepEstimate`), end before that deadline; otherwise it is
refused at once (`Refusal`) with a hint of when a new request would fit (HTTP's Retry-After).
An idle replica admits whatever arrives: refusing could not help it, and its time is measured.

An admitted request computes in a thread of its own through `Admission.run`, which takes turns
in arrival order and checks the deadline again when the turn comes: a request that waited too
long is refused without computing, and one whose caller has gone (`cancel`, Ray Serve's request
timeout) computes nothing. A request is counted (`in_progress`) from its admission until its
thread ends, so a computation that outlives its cancelled coroutine still counts.

No Ray here: this is plain threading, tested with an injected clock and estimate.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class StepEstimate:
    """Seconds one computation takes on this replica: an exponentially weighted average of
    recent ones (each new duration moves it by `weight` of the difference), starting from
    `initial_s`. Give a start that errs long (the replica's warm-up, which took the first and
    slowest passes), so a fresh replica admits too little rather than too much."""

    def __init__(self, initial_s: float, weight: float = 0.25) -> None:
        if initial_s <= 0 or not 0 < weight <= 1:
            raise ValueError("initial_s must be positive and weight in (0, 1]")
        self._seconds = initial_s
        self._weight = weight
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        return self._seconds

    def record(self, duration_s: float) -> None:
        with self._lock:
            self._seconds += self._weight * (max(duration_s, 0.0) - self._seconds)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A request refused without computing: ask again after `retry_after_s` whole seconds."""

    retry_after_s: int
    ahead: int  # requests queued ahead of it (computing or waiting)
    waited: bool  # False: refused at arrival; True: when its turn came, too late


@dataclasses.dataclass(eq=False)
class Ticket:
    """An admitted request: its deadline (on the admission's clock) and what was ahead of it."""

    deadline: float
    ahead: int
    cancelled: bool = False


class Admission:
    """One replica's queue of admitted requests, in arrival order, one computing at a time.

    `budget_s` is the time from a request's arrival to the end of its computation; `clock` is a
    monotonic clock in seconds (injected by the tests). Thread-safe.
    """

    def __init__(
        self,
        budget_s: float,
        estimate: StepEstimate,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_s = budget_s
        self.estimate = estimate
        self.clock = clock
        self._turns = threading.Condition()
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._running: Ticket | None = None
        self._running_since = 0.0

    def in_progress(self) -> int:
        """Admitted requests that are waiting for their turn or computing, counted until their
        thread ends (a computation whose caller has gone included)."""
        with self._turns:
            return len(self._waiting) + (self._running is not None)

    def waiting(self) -> int:
        with self._turns:
            return len(self._waiting)

    def admit(self, arrived: float) -> Ticket | Refusal:
        """A `Ticket` when the work ahead and this request can end by `arrived` + budget (or
        when nothing is ahead), else a `Refusal` with the time after which a new request
        would fit. A ticket must then be `run` (or `cancel`led): it counts until then."""
        with self._turns:
            now = self.clock()
            ahead = len(self._waiting) + (self._running is not None)
            wait = self._wait_s(now, len(self._waiting))
            deadline = arrived + self.budget_s
            if ahead and now + wait + self.estimate.seconds > deadline:
                return Refusal(self._retry_after(wait), ahead, waited=False)
            ticket = Ticket(deadline, ahead)
            self._waiting.append(ticket)
            return ticket

    def run(self, ticket: Ticket, work: Callable[[], T]) -> T | Refusal | None:
        """In the request's own thread: wait for the ticket's turn, then `work()`'s result;
        a `Refusal` (nothing computed) if the turn comes too late to end by the deadline, or
        None if the ticket was cancelled before its turn. Errors of `work` propagate."""
        with self._turns:
            try:
                refusal = self._wait_for_turn(ticket)
            except BaseException:
                self._drop(ticket)
                raise
            if refusal is not None or ticket.cancelled:
                self._drop(ticket)
                return refusal
            self._waiting.remove(ticket)  # its turn: first, and nothing computing
            self._running, self._running_since = ticket, self.clock()
        try:
            return work()
        finally:
            with self._turns:
                self.estimate.record(self.clock() - self._running_since)
                self._running = None
                self._turns.notify_all()

    def cancel(self, ticket: Ticket) -> None:
        """The caller has gone (Ray Serve's timeout cancelled it): a ticket not yet computing
        never will, and stops counting now; one computing counts until it ends."""
        with self._turns:
            ticket.cancelled = True
            self._drop(ticket)

    def _wait_for_turn(self, ticket: Ticket) -> Refusal | None:
        """Wait (holding `_turns` between waits) until the ticket is first and nothing
        computes; a Refusal when that comes later than the ticket's latest start."""
        while not ticket.cancelled:
            now = self.clock()
            first = self._running is None and self._waiting and self._waiting[0] is ticket
            late = ticket.ahead and now + self.estimate.seconds > ticket.deadline
            if late:
                wait = self._wait_s(now, len(self._waiting))
                return Refusal(self._retry_after(wait), self._waiting.index(ticket), waited=True)
            if first:
                return None
            latest_start = ticket.deadline - self.estimate.seconds
            self._turns.wait(timeout=max(latest_start - now, 0.0) if ticket.ahead else None)
        return None

    def _drop(self, ticket: Ticket) -> None:
        """Take a ticket that will not compute out of the queue (holding `_turns`)."""
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            self._turns.notify_all()

    def _wait_s(self, now: float, waiting: int) -> float:
        """Seconds until the computing request and the first `waiting` queued ones are done."""
        seconds = self.estimate.seconds
        running = 0.0
        if self._running is not None:
            running = max(seconds - (now - self._running_since), 0.0)
        return running + seconds * waiting

    def _retry_after(self, wait_s: float) -> int:
        """Whole seconds after which a new request, with a whole budget, would fit behind the
        work queued now (at least 1)."""
        return max(1, math.ceil(wait_s + self.estimate.seconds - self.budget_s))
