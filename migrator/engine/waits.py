"""Waiting and step retries, bounded by a deadline, in the engine's (possibly simulated) time.

Two uses of tenacity, never around the same call as botocore's retries:
- `poll_until`: call an observation repeatedly (a short first poll, then every `interval`) until
  a predicate holds, stopping before the deadline would pass.
- `retry_step`: re-run a whole step after a *retryable* `AwsCallError` (botocore already gave up on
  that call), with jittered exponential backoff, also stopping before the deadline.
Sleeps go through `Clock.sleep`, so a rehearsal at time scale 60 polls every 5 simulated seconds.
A deadline may be a callable read again before each sleep: `xksmigrate extend` moves it mid-wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, retry_if_result, wait_random_exponential

from migrator.aws.kms import AwsCallError
from migrator.engine.clock import Clock, leave_signals_to_the_main_thread
from migrator.engine.errors import DeadlineExceeded

T = TypeVar("T")

MIN_POLL = 1.0  # never poll DescribeCustomKeyStores faster than once a second per runner (quota: 5 rps shared)

# A real epoch instant, None (unbounded), or a function that says it now (a budget that can be extended).
Deadline = float | Callable[[], float | None] | None


def resolve(deadline: Deadline) -> float | None:
    """The deadline's instant as of now."""
    return deadline() if callable(deadline) else deadline


def _stop_at(clock: Clock, deadline: Deadline) -> Callable[[RetryCallState], bool]:
    """Stop when the next sleep would end after `deadline` (read again each time)."""

    def stop(state: RetryCallState) -> bool:
        instant = resolve(deadline)
        if instant is None:
            return False
        upcoming = (state.upcoming_sleep or 0.0) / clock.scale
        return clock.now() + upcoming >= instant

    return stop


CALL_FLOOR = 5.0  # a call always gets this long (simulated seconds, at least 1 real second) to answer


class CallTimedOut(DeadlineExceeded):
    """An AWS call did not answer within the remaining budget (it may still land: the next step observes)."""


def call_within(action: Callable[[], T], *, clock: Clock, deadline: Deadline, what: str) -> T:
    """`action()`, but given up once `deadline` has passed (and the call had CALL_FLOOR to answer).

    botocore's read timeout is fixed when the client is made, and its retries multiply it; a call in the window
    must instead end with the budget, so a hung call becomes a rollback decision, not a hang. The call runs in a
    daemon thread; given up, it may still reach AWS later, which is safe because every step observes the store
    before it acts. Unbounded (no thread) when there is no deadline.
    """
    if resolve(deadline) is None:
        return action()
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        leave_signals_to_the_main_thread()
        try:
            outcome.append((True, action()))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome.append((False, exc))

    started = clock.now()
    floor = max(CALL_FLOOR / clock.scale, 1.0)
    worker = threading.Thread(target=target, daemon=True, name=f"aws-{what}")
    worker.start()
    while True:
        worker.join(0.1)
        if not worker.is_alive():
            break
        instant, now = resolve(deadline), clock.now()
        if instant is not None and now >= instant and now >= started + floor:
            raise CallTimedOut(f"{what} had not answered after {clock.elapsed(started):.1f}s")
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]  # what action() returned


def poll_schedule(interval: float, expected: float | None = None, elapsed: Callable[[], float] | None = None,
                  floor: float = MIN_POLL) -> Callable[[RetryCallState], float]:
    """When to look next: a short first poll, then the plan's interval, then, around the moment the
    change is expected to finish, every `floor` seconds so the window is not stretched by up to a
    whole interval; past that moment plus two intervals, back to the interval.

    `expected` is the likely duration in seconds (AWS documents about five minutes for connect and
    disconnect; the engine passes what it measured for the previous wait), `elapsed()` the seconds
    since the change started. `floor` is MIN_POLL for a runner that polls alone; 0 when its cell's poller
    spaces the looks itself (one look a second for the whole cell, each answering every store that asked),
    and then the floor's stretch starts two intervals before the expected end, since asking costs nothing.
    """
    interval = max(interval, MIN_POLL)
    first = max(MIN_POLL, min(interval, interval / 5))

    def wait(state: RetryCallState) -> float:
        if state.attempt_number == 1:
            return first
        if expected is None or elapsed is None:
            return interval
        now = elapsed()
        lead = MIN_POLL if floor >= MIN_POLL else 2 * interval  # a cell's looks are shared: start asking early
        if now + interval < expected - lead:
            return interval
        if now < expected - lead:
            return max(MIN_POLL, expected - lead - now)  # land `lead` before the expected end
        if now < expected + 2 * interval:
            return floor
        return interval

    return wait


def poll_until(observe: Callable[[], T], done: Callable[[T], bool], *, clock: Clock, interval: float,
               deadline: Deadline, what: str, expected: float | None = None,
               on_poll: Callable[[T, float], None] | None = None, floor: float = MIN_POLL) -> T:
    """Observe until `done(observation)`; raise DeadlineExceeded if the deadline comes first.

    `on_poll(observation, next_sleep_seconds)` lets the caller show the last state and the next poll;
    `floor`: see poll_schedule.
    """
    last: list[T] = []
    started = clock.now()

    def attempt() -> T:
        value = observe()
        last[:] = [value]
        return value

    def before_sleep(state: RetryCallState) -> None:
        if on_poll and last:
            on_poll(last[0], state.upcoming_sleep)

    def give_up(state: RetryCallState) -> T:
        raise DeadlineExceeded(what, last[0] if last else None)

    retrying = Retrying(
        # A throttled or failed observation (botocore's own retries exhausted) is one missed poll, not a failure.
        retry=retry_if_result(lambda v: not done(v)) | retry_if_exception(
            lambda e: isinstance(e, AwsCallError) and e.retryable),
        wait=poll_schedule(interval, expected, lambda: clock.elapsed(started), floor),
        stop=_stop_at(clock, deadline),
        sleep=clock.sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
    return retrying(attempt)


def retry_step(step: Callable[[], T], *, clock: Clock, deadline: Deadline, max_attempts: int = 6,
               on_retry: Callable[[AwsCallError, int], None] | None = None) -> T:
    """Run `step`; after a retryable AwsCallError run it again (it observes before acting)."""

    def stop(state: RetryCallState) -> bool:
        return state.attempt_number >= max_attempts or _stop_at(clock, deadline)(state)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry and isinstance(exc, AwsCallError):
            on_retry(exc, state.attempt_number)

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, AwsCallError) and e.retryable),
        wait=wait_random_exponential(multiplier=2, max=30),  # full jitter, as botocore does
        stop=stop,
        sleep=clock.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(step)
