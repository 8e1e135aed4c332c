"""Observe-before-act operations on one key store, each journaled before and after its side effect.

These are the building blocks the Driver's steps are made of: look at the store (a note whenever its
connection state changes), call AWS with a `call` event before and a `result` event after, disconnect
unless already on the way, make KMS hold a configuration and prove it, wait for a state on the
predictive poll schedule. Each is safe to run again after a crash, because each observes first.
Every observation is also compared with what the journal says the store holds in the current state
(the Driver's `expected()`): a configuration the run did not put there is drift, never papered over.
Every call (observations too) first passes the Driver's `checkpoint` (an operator's `abort` stops the
run there) and is bounded by the row's budget (`waits.call_within`): a hung call ends with the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from migrator.aws.kms import AwsCallError, KmsApplier, needs_disconnect, update_parameters
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import Observation, StoreConfig
from migrator.engine.errors import LockLostStop, StepFailed
from migrator.engine.services import RunServices
from migrator.engine.verify import KeyProver
from migrator.engine.waits import MIN_POLL, CallTimedOut, Deadline, call_within, poll_until, resolve, retry_step
from migrator.plan import Plan

Credential = tuple[str, SecretValue]
_R = TypeVar("_R")
REUSE_SECONDS = 5.0  # (simulated) a look this young, made after the store's last change, serves the next step
TRANSIENT_CONNECT_ERRORS = ("INTERNAL_ERROR", "NETWORK_ERRORS")  # worth one more disconnect+connect


class DriftDetected(Exception):
    """The live store holds a configuration the journal does not account for (someone changed it by hand)."""

    def __init__(self, state: str, expected: tuple[StoreConfig, ...], live: Observation):
        self.state, self.expected, self.live = state, expected, live
        closest = min(expected, key=lambda config: len(config.diff(live.config)))
        wanted = " or ".join(f"{c.connectivity} {c.uri_endpoint}" for c in expected)
        super().__init__(f"drift: in {state} the journal says the key store holds {wanted}, but it is "
                         f"{live.state} with {live.config.connectivity} {live.config.uri_endpoint} "
                         f"({closest.describe_diff(live.config)}); the run changed nothing more")


class StoreOps:
    """One store's AWS conversation for a Driver; `window()` and `state()` come from the Driver."""

    def __init__(self, services: RunServices, mid: int, store_id: str, *,
                 window: Callable[[], float | None], state: Callable[[], str],
                 expected: Callable[[], tuple[StoreConfig, ...]] = tuple,
                 checkpoint: Callable[[], None] = lambda: None, bound: Deadline = None,
                 kms: KmsApplier | None = None, plan: Plan | None = None):
        self.services, self.mid, self.store_id = services, mid, store_id
        # the store's cell and its view of the plan (Region, account); the run's when not given
        self.kms, self.clock, self.plan = kms or services.kms, services.clock, plan or services.plan
        self.window, self.state, self.expected = window, state, expected
        self.checkpoint, self.bound = checkpoint, bound  # the operator's abort; the current row's deadline
        self.last_seen: Observation | None = None
        self._seen_asked_at: float | None = None  # when last_seen was asked for (its look started no earlier)
        self._changed_at: float | None = None  # when this run last sent the store a change

    def _within(self, action: Callable[[], _R], what: str) -> _R:
        return call_within(action, clock=self.clock, deadline=self.bound, what=what)

    # -- the journal around each call ---------------------------------------------------------------
    def call(self, operation: str, action: Callable[[], str | None], **detail: object) -> str | None:
        """Check the lock is still ours, journal the intent, make the call, journal the outcome (request id, error)."""
        if self.services.lock_lost:  # asked now, not at the last heartbeat: a mutating call needs the lock
            raise LockLostStop
        self.checkpoint()
        self.services.record(self.mid, kind="call", operation=operation, outcome="started", detail=detail or None)
        if self.services.lock_lost:  # again: the write may have waited out a database blip that took the lock
            raise LockLostStop
        self._changed_at = self.clock.now()  # every look asked before now may show the store before the change
        try:
            request_id = self._within(action, operation)
        except AwsCallError as exc:
            self.services.record(self.mid, kind="result", operation=operation, outcome="error",
                                 request_id=exc.request_id, detail={"code": exc.code, "message": exc.message})
            raise
        except CallTimedOut as exc:  # given up at the budget's end; it may still land (the next step observes)
            self.services.record(self.mid, kind="result", operation=operation, outcome="timeout",
                                 detail={"message": str(exc)})
            raise
        self.services.record(self.mid, kind="result", operation=operation, outcome="ok", request_id=request_id)
        return request_id

    def note(self, message: str, **detail: object) -> None:
        self.services.record(self.mid, kind="note", detail={"message": message, **detail})

    def on_retry(self, exc: AwsCallError, attempt: int) -> None:
        self.services.record(self.mid, kind="note", operation=exc.operation, outcome="retry",
                             request_id=exc.request_id, detail={"code": exc.code, "attempt": attempt})

    def on_poll(self, observation: object, next_sleep: float) -> None:
        last = self.last_seen
        self.services.progress({
            "type": "progress", "run_id": self.services.run_id, "migration": self.mid, "state": self.state(),
            "connection_state": last.state if last else None, "waiting_on": str(observation)[:120],
            "window_seconds": self.window(), "budget_seconds": self.services.budget_seconds(),
            "next_poll_seconds": next_sleep, "simulated": self.clock.simulated})

    def observe(self, *, polling: bool = False, reuse: bool = False) -> Observation:
        """DescribeCustomKeyStores; a lost lock stops here, before anything else reaches AWS.

        `polling`: a wait for a change to finish (its look can yield to a step's). `reuse`: the step may act on
        the last look instead of a new one when it was asked for after the run's last change to the store and
        is at most REUSE_SECONDS old: the look that showed DISCONNECTED serves the update, the update's proof
        serves the connect, so a shared poller's next tick is not on the window's critical path three times.
        """
        if self.services.lock_lost:
            raise LockLostStop
        self.checkpoint()
        if reuse and self._fresh_enough():
            assert self.last_seen is not None
            return self._checked(self.last_seen)
        asked = self.clock.now()
        obs = self._within(lambda: self.kms.describe(self.store_id, polling), "DescribeCustomKeyStores")
        previous, self.last_seen, self._seen_asked_at = self.last_seen, obs, asked
        if previous is None or (previous.state, previous.error_code) != (obs.state, obs.error_code):
            self.services.record(self.mid, kind="note", operation="DescribeCustomKeyStores",
                                 detail={"connection_state": obs.state, "connection_error_code": obs.error_code or None,
                                         "window_seconds": self.window()})
        return self._checked(obs)

    def forget_last_look(self) -> None:
        """Something outside the run may have acted on the store (a hook ran): no step reuses the last look."""
        self._seen_asked_at = None

    def _fresh_enough(self) -> bool:
        asked, changed = self._seen_asked_at, self._changed_at
        if self.last_seen is None or asked is None or (changed is not None and asked < changed):
            return False
        return self.clock.elapsed(asked) <= REUSE_SECONDS

    def _checked(self, obs: Observation) -> Observation:
        """`obs`, unless it holds a configuration the journal does not account for in the current state."""
        expected = self.expected()
        if expected and not any(config.matches(obs.config) for config in expected):
            raise DriftDetected(self.state(), expected, obs)
        return obs

    # -- observe, then act ----------------------------------------------------------------------------
    def ensure_disconnected(self, deadline: Deadline) -> None:
        """Disconnect unless the store is already disconnected or on its way; wait for DISCONNECTED."""
        def step() -> Observation:
            obs = self.observe(reuse=True)
            if obs.state in ("CONNECTED", "CONNECTING", "FAILED"):
                try:
                    self.call("DisconnectCustomKeyStore", lambda: self.kms.disconnect(self.store_id),
                              observed=obs.state)
                except AwsCallError as exc:
                    if exc.code != "CustomKeyStoreInvalidStateException":  # already on its way: observe again
                        raise
            return obs

        retry_step(step, clock=self.clock, deadline=deadline, on_retry=self.on_retry)
        self.wait_for(("DISCONNECTED",), deadline, "waiting for DISCONNECTED")

    def apply_config(self, want: StoreConfig, credential: Credential | None, deadline: Deadline, *,
                     invisible: bool = False) -> None:
        """Make KMS hold `want`, then prove it with DescribeCustomKeyStores (a rollback point).

        `invisible`: the change is only the credential's secret, which no describe shows, so the update is
        sent even when the configuration already matches (sending the same credential again is harmless).
        A change that needs no disconnect (credential, URI path) is made in any connection state.
        """
        def step() -> None:
            obs = self.observe(reuse=True)
            if obs.config.matches(want) and not invisible:
                return
            params = update_parameters(self.store_id, want, obs.config, credential is not None)
            if obs.state != "DISCONNECTED" and needs_disconnect(params):
                raise StepFailed(f"the store is {obs.state}, not DISCONNECTED, so its connectivity cannot change")
            shown: dict[str, object] = {k: v for k, v in params.items() if k != "CustomKeyStoreId"}
            if credential is not None:
                shown["XksProxyAuthenticationCredential"] = {"AccessKeyId": credential[0],
                                                             "RawSecretAccessKey": credential[1].ref}
            self.call("UpdateCustomKeyStore",
                      lambda: self.kms.update(self.store_id, want, obs.config, credential), parameters=shown)
            after = self.observe()
            if not after.config.matches(want):
                raise StepFailed("after UpdateCustomKeyStore KMS shows a configuration other than the requested one "
                                 f"(requested -> shown: {want.describe_diff(after.config)})")

        retry_step(step, clock=self.clock, deadline=deadline, on_retry=self.on_retry)

    def start_connect(self, deadline: Deadline) -> Observation:
        """ConnectCustomKeyStore unless the store is already connecting or connected (after a disconnect
        still under way, once it is DISCONNECTED); returns the first observation."""
        def step() -> Observation:
            obs = self.observe(reuse=True)
            if obs.state == "DISCONNECTED":
                self.call("ConnectCustomKeyStore", lambda: self.kms.connect(self.store_id))
            elif obs.state == "DISCONNECTING":
                self.wait_for(("DISCONNECTED",), deadline, "waiting for DISCONNECTED before connecting")
                self.call("ConnectCustomKeyStore", lambda: self.kms.connect(self.store_id))
            return obs

        return retry_step(step, clock=self.clock, deadline=deadline, on_retry=self.on_retry)

    def ensure_connected(self, deadline: Deadline, attempts: dict[str, object],
                         persist: Callable[[dict[str, object]], None]) -> None:
        """Connect and wait for CONNECTED; a transient FAILED gets one more disconnect+connect if it fits.

        `attempts["connect_retries_left"]` counts that extra try across resumes; `persist` journals it
        before the extra disconnect, so a crash in between cannot grant a second one.
        """
        retries_left = int(str(attempts.get("connect_retries_left", 1)))
        while True:
            first = self.start_connect(deadline)
            obs = first if first.state in ("CONNECTED", "FAILED") else self.wait_for(
                ("CONNECTED", "FAILED"), deadline, "waiting for CONNECTED")
            if obs.state == "CONNECTED":
                return
            if obs.error_code in TRANSIENT_CONNECT_ERRORS and retries_left > 0 and self.retry_fits(deadline):
                retries_left -= 1
                attempts["connect_retries_left"] = retries_left
                persist(attempts)
                self.note(f"connect FAILED with {obs.error_code}; disconnecting to try once more")
                self.ensure_disconnected(deadline)
                continue
            raise StepFailed(f"connect FAILED with ConnectionErrorCode {obs.error_code}"
                             + ("; no budget left for another disconnect+connect"
                                if obs.error_code in TRANSIENT_CONNECT_ERRORS and retries_left > 0 else ""))

    def retry_fits(self, deadline: Deadline) -> bool:
        """Is there budget for another disconnect+connect? If not, going back now returns the keys sooner."""
        instant = resolve(deadline)
        if instant is None:
            return True
        left = (instant - self.clock.now()) * self.clock.scale
        return left > 2 * self.services.expected_change_seconds + 2 * self.plan.poll_interval

    def wait_for(self, states: tuple[str, ...], deadline: Deadline, what: str) -> Observation:
        """Poll until the store reaches one of `states`; learns how long such a change takes."""
        started = self.clock.now()
        obs = poll_until(lambda: self.observe(polling=True), lambda o: o.state in states, clock=self.clock,
                         interval=self.plan.poll_interval, deadline=deadline, what=what,
                         expected=self.services.expected_change_seconds, on_poll=self.on_poll,
                         floor=0.0 if self.kms.paced_looks else MIN_POLL)
        took = self.clock.elapsed(started)
        if took > 2 * self.plan.poll_interval:  # a real transition, not an already-finished one
            self.services.expected_change_seconds = took
        return obs

    def prove_keys(self, key_ids: list[str], deadline: Deadline) -> None:
        """Round trips with every key; one that failed for its own reason while others proved the store is a
        journaled warning, not a failure."""
        prover = KeyProver(self.kms, self.clock, run_id=self.services.run_id, interval=self.plan.poll_interval,
                           record_ok=self._record_round_trip, on_poll=self.on_poll)
        for unusable in prover.prove_all(key_ids, deadline):
            self.services.record(self.mid, kind="note", operation="Encrypt+Decrypt", outcome="warn",
                                 detail={"message": f"verify key {unusable.key_id} is unusable for its own reason "
                                                    f"({unusable.reason}); the store was proven with its other keys",
                                         "key_id": unusable.key_id, "reason": unusable.reason})

    def _record_round_trip(self, key_id: str, encrypt_rid: str | None, decrypt_rid: str | None) -> None:
        self.services.record(self.mid, kind="result", operation="Encrypt+Decrypt", outcome="ok",
                             request_id=decrypt_rid, detail={"key_id": key_id, "encrypt_request_id": encrypt_rid})
