"""Waiting and step retries, bounded by a deadline, in the engine's (possibly simulated) time.

Two uses of tenacity, never around the same call as botocore's retries:
- `poll_until`: call an observation repeatedly (a short first poll, then every `interval`) until
  a predicate holds, stopping before the deadline would pass.
- `retry_step`: re-run a whole step after a *retryable* `AwsCallError` (botocore already gave up on
  that call), with jittered exponential backoff, also stopping before the deadline.
Sleeps go through `Clock.sleep`, so a rehearsal at time scale 60 polls every 5 simulated seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, retry_if_result, wait_random_exponential

from migrator.aws.kms import AwsCallError
from migrator.engine.clock import Clock
from migrator.engine.errors import DeadlineExceeded

T = TypeVar("T")

MIN_POLL = 1.0  # never poll DescribeCustomKeyStores faster than once a second per runner (quota: 5 rps shared)


def _stop_at(clock: Clock, deadline: float | None) -> Callable[[RetryCallState], bool]:
    """Stop when the next sleep would end after `deadline` (a real epoch instant)."""

    def stop(state: RetryCallState) -> bool:
        if deadline is None:
            return False
        upcoming = (state.upcoming_sleep or 0.0) / clock.scale
        return clock.now() + upcoming >= deadline

    return stop


def poll_schedule(interval: float, expected: float | None = None,
                  elapsed: Callable[[], float] | None = None) -> Callable[[RetryCallState], float]:
    """When to look next: a short first poll, then the plan's interval, then, around the moment the
    change is expected to finish, once a second (the floor) so the window is not stretched by up to a
    whole interval; past that moment plus two intervals, back to the interval.

    `expected` is the likely duration in seconds (AWS documents about five minutes for connect and
    disconnect; the engine passes what it measured for the previous wait), `elapsed()` the seconds
    since the change started.
    """
    interval = max(interval, MIN_POLL)
    first = max(MIN_POLL, min(interval, interval / 5))

    def wait(state: RetryCallState) -> float:
        if state.attempt_number == 1:
            return first
        if expected is None or elapsed is None:
            return interval
        now = elapsed()
        if now + interval < expected - MIN_POLL:
            return interval
        if now < expected - MIN_POLL:
            return max(MIN_POLL, expected - MIN_POLL - now)  # land one floor-poll before the expected end
        if now < expected + 2 * interval:
            return MIN_POLL
        return interval

    return wait


def poll_until(observe: Callable[[], T], done: Callable[[T], bool], *, clock: Clock, interval: float,
               deadline: float | None, what: str, expected: float | None = None,
               on_poll: Callable[[T, float], None] | None = None) -> T:
    """Observe until `done(observation)`; raise DeadlineExceeded if the deadline comes first.

    `on_poll(observation, next_sleep_seconds)` lets the caller show the last state and the next poll.
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
        wait=poll_schedule(interval, expected, lambda: clock.elapsed(started)),
        stop=_stop_at(clock, deadline),
        sleep=clock.sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
    return retrying(attempt)


def retry_step(step: Callable[[], T], *, clock: Clock, deadline: float | None, max_attempts: int = 6,
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
