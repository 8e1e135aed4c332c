"""Observe-before-act operations on one key store, each journaled before and after its side effect.

These are the building blocks the Driver's steps are made of: look at the store (a note whenever its
connection state changes), call AWS with a `call` event before and a `result` event after, disconnect
unless already on the way, make KMS hold a configuration and prove it, wait for a state on the
predictive poll schedule. Each is safe to run again after a crash, because each observes first.
"""

from __future__ import annotations

from collections.abc import Callable

from migrator.aws.kms import AwsCallError, update_parameters
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import Observation, StoreConfig
from migrator.engine.errors import LockLostStop, StepFailed
from migrator.engine.services import RunServices
from migrator.engine.waits import poll_until, retry_step

Credential = tuple[str, SecretValue]


class StoreOps:
    """One store's AWS conversation for a Driver; `window()` and `state()` come from the Driver."""

    def __init__(self, services: RunServices, mid: int, store_id: str, *,
                 window: Callable[[], float | None], state: Callable[[], str]):
        self.services, self.mid, self.store_id = services, mid, store_id
        self.kms, self.clock, self.plan = services.kms, services.clock, services.plan
        self.window, self.state = window, state
        self.last_seen: Observation | None = None

    # -- the journal around each call ---------------------------------------------------------------
    def call(self, operation: str, action: Callable[[], str | None], **detail: object) -> str | None:
        """Journal the intent, make the call, journal the outcome (request id or error)."""
        self.services.record(self.mid, kind="call", operation=operation, outcome="started", detail=detail or None)
        try:
            request_id = action()
        except AwsCallError as exc:
            self.services.record(self.mid, kind="result", operation=operation, outcome="error",
                                 request_id=exc.request_id, detail={"code": exc.code, "message": exc.message})
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
            "window_seconds": self.window(), "budget_seconds": self.plan.max_disconnected,
            "next_poll_seconds": next_sleep, "simulated": self.clock.simulated})

    def observe(self) -> Observation:
        """DescribeCustomKeyStores; a lost lock stops here, before anything else reaches AWS."""
        if self.services.lock_lost:
            raise LockLostStop
        obs = self.kms.describe(self.store_id)
        previous, self.last_seen = self.last_seen, obs
        if previous is None or (previous.state, previous.error_code) != (obs.state, obs.error_code):
            self.services.record(self.mid, kind="note", operation="DescribeCustomKeyStores",
                                 detail={"connection_state": obs.state, "connection_error_code": obs.error_code or None,
                                         "window_seconds": self.window()})
        return obs

    # -- observe, then act ----------------------------------------------------------------------------
    def ensure_disconnected(self, deadline: float | None) -> None:
        """Disconnect unless the store is already disconnected or on its way; wait for DISCONNECTED."""
        def step() -> Observation:
            obs = self.observe()
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

    def apply_config(self, want: StoreConfig, credential: Credential | None, deadline: float | None) -> None:
        """Make KMS hold `want`, then prove it with DescribeCustomKeyStores (a rollback point)."""
        def step() -> None:
            obs = self.observe()
            if obs.config.matches(want):
                return
            if obs.state != "DISCONNECTED":
                raise StepFailed(f"the store is {obs.state}, not DISCONNECTED, so its connectivity cannot change")
            params = update_parameters(self.store_id, want, obs.config, credential is not None)
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

    def start_connect(self, deadline: float | None) -> Observation:
        """ConnectCustomKeyStore unless the store is already connecting or connected (after a disconnect
        still under way, once it is DISCONNECTED); returns the first observation."""
        def step() -> Observation:
            obs = self.observe()
            if obs.state == "DISCONNECTED":
                self.call("ConnectCustomKeyStore", lambda: self.kms.connect(self.store_id))
            elif obs.state == "DISCONNECTING":
                self.wait_for(("DISCONNECTED",), deadline, "waiting for DISCONNECTED before connecting")
                self.call("ConnectCustomKeyStore", lambda: self.kms.connect(self.store_id))
            return obs

        return retry_step(step, clock=self.clock, deadline=deadline, on_retry=self.on_retry)

    def retry_fits(self, deadline: float | None) -> bool:
        """Is there budget for another disconnect+connect? If not, going back now returns the keys sooner."""
        if deadline is None:
            return True
        left = (deadline - self.clock.now()) * self.clock.scale
        return left > 2 * self.services.expected_change_seconds + 2 * self.plan.poll_interval

    def wait_for(self, states: tuple[str, ...], deadline: float | None, what: str) -> Observation:
        """Poll until the store reaches one of `states`; learns how long such a change takes."""
        started = self.clock.now()
        obs = poll_until(self.observe, lambda o: o.state in states, clock=self.clock,
                         interval=self.plan.poll_interval, deadline=deadline, what=what,
                         expected=self.services.expected_change_seconds, on_poll=self.on_poll)
        took = self.clock.elapsed(started)
        if took > 2 * self.plan.poll_interval:  # a real transition, not an already-finished one
            self.services.expected_change_seconds = took
        return obs
