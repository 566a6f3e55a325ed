"""A replica's admission control (`tracker.serve.admission`) as a plain unit, without Ray: a
clock that moves only when a test moves it, estimates set by the test, and work that runs in
real threads but ends only when the test lets it. No assertion reads the wall clock."""

from __future__ import annotations

import threading
import time

import pytest

from tracker.cvat.lambda_protocol import timeouts
from tracker.serve.admission import Admission, Refusal, StepEstimate, Ticket

BUDGET = 10.0
STEP = 3.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Work:
    """A computation in its own thread, as a replica runs one, held until `finish`."""

    def __init__(self, admission: Admission, ticket: Ticket, name: str, log: list) -> None:
        self.started, self._release = threading.Event(), threading.Event()
        self.outcome: object = "not returned"

        def compute() -> str:
            log.append(name)
            self.started.set()
            assert self._release.wait(timeout=60), "the test never let it finish"
            return name

        def thread() -> None:
            self.outcome = admission.run(ticket, compute)

        self._thread = threading.Thread(target=thread, daemon=True)
        self._thread.start()

    def finish(self) -> object:
        self._release.set()
        return self.join()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> object:
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the request's thread never ended"
        return self.outcome


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def admission(clock) -> Admission:
    return Admission(BUDGET, StepEstimate(STEP), clock)


def _computing(admission: Admission, log: list, name: str = "a") -> Work:
    ticket = admission.admit(admission.clock())
    assert isinstance(ticket, Ticket)
    work = Work(admission, ticket, name, log)
    assert work.started.wait(timeout=60)
    return work


def test_the_estimate_starts_where_told_and_follows_recent_steps():
    estimate = StepEstimate(10.0, weight=0.25)
    assert estimate.seconds == 10.0
    estimate.record(2.0)
    assert estimate.seconds == pytest.approx(8.0)
    for _ in range(40):
        estimate.record(2.0)
    assert estimate.seconds == pytest.approx(2.0, abs=1e-3)


def test_an_idle_replica_admits_a_request_longer_than_its_budget(clock):
    admission = Admission(BUDGET, StepEstimate(BUDGET * 5), clock)
    assert isinstance(admission.admit(clock()), Ticket), "refusing could not help an idle replica"
    assert admission.in_progress() == 1, "counted from its admission"


def test_admits_only_what_can_end_before_its_deadline(admission, clock):
    log: list = []
    running = _computing(admission, log)  # 3 s left of it
    assert isinstance(admission.admit(clock()), Ticket)  # ends at 3 + 3 = 6 <= 10
    assert isinstance(admission.admit(clock()), Ticket)  # 9 <= 10
    refused = admission.admit(clock())  # would end at 12
    assert refused == Refusal(retry_after_s=2, ahead=3, waited=False)
    assert admission.in_progress() == 3, "a refusal is not counted"
    clock.now = 2.0  # the running one has 1 s left: 2 + 1 + 6 + 3 = 12
    arrived_earlier = admission.admit(arrived=1.0)  # its deadline counts from its arrival: 11
    assert isinstance(arrived_earlier, Refusal)
    assert isinstance(admission.admit(clock()), Ticket), "12 <= 2 + 10"
    running.finish()


def test_a_request_that_waited_too_long_is_refused_at_its_turn_and_computes_nothing(
    admission, clock
):
    log: list = []
    running = _computing(admission, log)
    waiting = admission.admit(clock())
    assert isinstance(waiting, Ticket)
    late = Work(admission, waiting, "late", log)
    clock.now = 8.0  # the first took 8 s: 8 + 3 > 10, the waiting one cannot end in time
    assert running.finish() == "a"
    _until(lambda: late.started.is_set() or not late.alive())
    assert not late.started.is_set(), "the late request was not computed"
    outcome = late.join()
    assert isinstance(outcome, Refusal) and outcome.waited and outcome.retry_after_s >= 1
    assert log == ["a"], "the late request was not computed"
    assert admission.in_progress() == 0


def test_a_computation_whose_caller_has_gone_counts_until_its_thread_ends(admission, clock):
    log: list = []
    running = _computing(admission, log)
    running_ticket = admission._running
    waiting = admission.admit(clock())
    assert isinstance(waiting, Ticket)
    later = Work(admission, waiting, "later", log)
    admission.cancel(running_ticket)  # Ray Serve's timeout cancelled the coroutine
    assert admission.in_progress() == 2, "its thread still computes"
    admission.cancel(waiting)
    assert admission.in_progress() == 1, "a request cancelled before its turn stops counting"
    assert later.join() is None, "...and its thread returns nothing"
    assert running.finish() == "a"
    assert admission.in_progress() == 0
    assert log == ["a"], "the cancelled request never computed (nor committed)"


def test_turns_are_taken_in_arrival_order(admission, clock):
    log: list = []
    running = _computing(admission, log)
    tickets = [admission.admit(clock()) for _ in range(2)]
    assert all(isinstance(t, Ticket) for t in tickets)
    running.finish()  # nothing computes now; "b" arrived first, but "c"'s thread asks first
    second = Work(admission, tickets[1], "c", log)
    _until(lambda: second.started.is_set() or _waiters(admission) == 1)
    assert log == ["a"], "a later arrival does not take an earlier one's turn"
    first = Work(admission, tickets[0], "b", log)
    assert first.started.wait(timeout=60)
    assert log == ["a", "b"]
    first.finish()
    assert second.finish() == "c"
    assert log == ["a", "b", "c"]


def _waiters(admission: Admission) -> int:
    """Threads waiting for their turn (CPython's Condition keeps them in `_waiters`)."""
    return len(admission._turns._waiters)


def _until(condition, polls: int = 6000) -> None:
    """Wait for another thread to reach a state (a bound against hanging, not a measurement)."""
    for _ in range(polls):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the other thread never got there")


def test_each_computation_moves_the_estimate(admission, clock):
    log: list = []
    running = _computing(admission, log)
    clock.now = 7.0
    running.finish()
    assert admission.estimate.seconds == pytest.approx(STEP + 0.25 * (7.0 - STEP))


def test_the_admission_budget_ends_inside_the_servers_request_timeout():
    budget = timeouts.admission_budget(timeouts.SERVER_REQUEST_TIMEOUT_S)
    assert budget == timeouts.SERVER_REQUEST_TIMEOUT_S - timeouts.ANSWER_MARGIN_S
    assert 0 < timeouts.admission_budget(1.0) < 1.0, "a short timeout keeps half"
