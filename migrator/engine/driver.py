"""Drives one key store through the machine: one step per persisted state.

Every step observes the live store before it acts and is safe to run again, so `resume` simply
runs the step of the persisted state. The journal is written before each side effect (the state
move, then a `call` event) and after it (a `result` event with the AWS request id). A failure in
the critical section (between the disconnect and a verified reconnect) rolls back; a failure of
the rollback ends in `stuck` with the next commands for the operator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.store_config import Observation, StoreConfig
from migrator.engine import machine
from migrator.engine.waits import DeadlineExceeded, poll_until, retry_step

TRANSIENT_CONNECT_ERRORS = ("INTERNAL_ERROR", "NETWORK_ERRORS")  # worth one more disconnect+connect
# Past the budget, no forward Disconnect/Update/Connect: from these states the store goes straight back.
BEFORE_CONNECT = ("disconnecting", "disconnected", "updating", "updated")


class StepFailed(Exception):
    """The forward path cannot continue; the store must go back to its original configuration."""


class Blocked(Exception):
    """Preflight (or the operator) stopped the run before anything changed."""


class Driver:
    """One key store migration. `ctx` is the engine's RunContext (journal, clock, observer...)."""

    def __init__(self, ctx: Any, migration: Any, keystore_plan: Any):
        self.ctx, self.ks = ctx, keystore_plan
        self.mid: int = migration.id
        self.store_id: str = migration.keystore_id or ""
        self.snapshot: dict[str, Any] | None = migration.snapshot
        self.disconnected_at: float | None = migration.disconnected_at
        self.attempts: dict[str, Any] = dict(migration.attempts or {})
        self.kms: KmsApplier = ctx.kms
        self.state: str = migration.state
        machine.build(self, migration.state, self._persist)

    # -- journal plumbing -----------------------------------------------------------------
    def _persist(self, event: Any) -> None:
        """Journal a state move before it happens in memory (transitions' before_state_change)."""
        fields = dict(event.kwargs)
        detail = fields.pop("detail", None)
        fields["api_calls"] = self.ctx.api_calls_for(self.mid)
        self.ctx.transition(self.mid, event.transition.source, event.transition.dest, detail=detail, **fields)

    def call(self, operation: str, action: Callable[[], str | None], **detail: Any) -> str | None:
        """Journal the intent, make the call, journal the outcome (request id or error)."""
        self.ctx.record(self.mid, kind="call", operation=operation, outcome="started", detail=detail or None)
        try:
            request_id = action()
        except AwsCallError as exc:
            self.ctx.record(self.mid, kind="result", operation=operation, outcome="error",
                            request_id=exc.request_id, detail={"code": exc.code, "message": exc.message})
            raise
        self.ctx.record(self.mid, kind="result", operation=operation, outcome="ok", request_id=request_id)
        return request_id

    def note(self, message: str, **detail: Any) -> None:
        self.ctx.record(self.mid, kind="note", detail={"message": message, **detail})

    # -- configuration views ---------------------------------------------------------------
    @property
    def original(self) -> StoreConfig:
        assert self.snapshot is not None
        return StoreConfig.from_dict(self.snapshot)

    @property
    def desired(self) -> StoreConfig:
        return StoreConfig.for_target(self.ks.target, self.original)

    def deadline(self) -> float | None:
        """The real instant the downtime budget ends (None before the disconnect)."""
        if self.disconnected_at is None:
            return None
        return self.disconnected_at + self.ctx.plan.max_disconnected / self.ctx.clock.scale

    def rollback_deadline(self) -> float:
        started = float(self.attempts.get("rollback_started_at") or self.ctx.clock.now())
        return started + self.ctx.rollback_budget / self.ctx.clock.scale

    def window(self, until: float | None = None) -> float | None:
        if self.disconnected_at is None:
            return None
        return round(self.ctx.clock.elapsed(self.disconnected_at, until), 3)

    def observe(self) -> Observation:
        if self.ctx.lock_lost:
            from migrator.engine.run_context import LockLostStop

            raise LockLostStop
        obs = self.kms.describe(self.store_id)
        self.ctx.observed(self.mid, obs, self)
        return obs

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> str:
        """Run steps until a terminal state; returns it. KeyboardInterrupt passes through."""
        steps: dict[str, Callable[[], None]] = {
            "pending": self.step_snapshot, "snapshotted": self.step_preflight, "preflighted": self.step_approval,
            "approved": self.step_begin_disconnect, "disconnecting": self.step_disconnect,
            "disconnected": self.step_begin_update, "updating": self.step_update, "updated": self.step_begin_connect,
            "connecting": self.step_connect, "connected": self.step_begin_verify,
            "verifying": self.step_verify, "rolling_back": self.step_rollback,
        }
        if self.state == "stuck" and self.ctx.retry_stuck:
            self.step_retry_stuck()
        while self.state not in machine.TERMINAL:
            step = steps[self.state]
            try:
                if self.state in machine.UNCHANGED:  # nothing changed yet: transient AWS errors get retries
                    retry_step(step, clock=self.ctx.clock, deadline=None, max_attempts=4,
                               on_retry=self.ctx.on_retry(self.mid))
                elif self.state in BEFORE_CONNECT and (d := self.deadline()) is not None and self.ctx.clock.now() >= d:
                    raise DeadlineExceeded(f"{self.state}, before the next forward call (a resume after the budget?)")
                else:
                    step()
            except Blocked as exc:
                self.stop_unchanged(str(exc))
            except Exception as exc:  # KeyboardInterrupt and LockLostStop are BaseExceptions: they pass
                self.on_failure(exc)
        return self.state

    def on_failure(self, exc: Exception) -> None:
        """Route a failure by where it happened: blocked, roll back, or stuck."""
        reason = _describe(exc)
        expected = isinstance(exc, AwsCallError | StepFailed | DeadlineExceeded)
        if self.state in machine.UNCHANGED and expected:
            self.stop_unchanged(reason)
        elif self.state in machine.CRITICAL:
            self.attempts["rollback_started_at"] = self.ctx.clock.now()
            self.attempts["connect_retries_left"] = 1
            self.move("fail", error=reason, attempts=self.attempts,
                      detail={"reason": reason, "window_seconds": self.window()})
        elif self.state == "rolling_back":
            self.move("rollback_failed", outcome="stuck", error=reason,
                      detail={"reason": reason, **self.ctx.manual_help(self)})
            self.ctx.hook("stuck", self)
        else:
            raise exc

    # -- before the disconnect -------------------------------------------------------------
    def step_snapshot(self) -> None:
        ref_id, ref_name = self.ks.id, self.ks.name
        obs = self.kms.find_store(store_id=ref_id, name=None if ref_id else ref_name)
        if obs is None:
            raise Blocked(f"keystore.exists: key store {self.ks.ref} does not exist in {self.ctx.plan.region}")
        if obs.type != "EXTERNAL_KEY_STORE":
            raise Blocked(f"keystore.type: key store {obs.id} is {obs.type}, not an external key store")
        self.store_id = obs.id
        keys = self.ctx.select_verify_keys(self, obs)
        self.snapshot = {**obs.to_dict(), "verify_keys": keys, "region": self.ctx.plan.region,
                         "observed_at": self.ctx.clock.now()}
        self.move("take_snapshot", keystore_id=obs.id, snapshot=self.snapshot, detail={"snapshot": self.snapshot})

    def step_preflight(self) -> None:
        findings = self.ctx.preflight(self)
        blocking = [f for f in findings if f.status == "block"]
        if blocking:
            raise Blocked("; ".join(f"{f.check}: {f.message}" for f in blocking))
        self.move("pass_preflight", detail={"warnings": sum(f.status == "warn" for f in findings),
                                            "checks": len(findings)})

    def step_approval(self) -> None:
        if self.ctx.wait_for_cutover(self):  # postponed: the world may have changed while we waited
            findings = self.ctx.preflight(self)
            blocking = [f for f in findings if f.status == "block"]
            if blocking:
                raise Blocked("preflight again before the disconnect: "
                              + "; ".join(f"{f.check}: {f.message}" for f in blocking))
        if not self.ctx.approve(self):
            raise Blocked("the operator declined the disconnect; nothing was changed")
        self.move("approve", detail={"approved_by": self.ctx.who})

    def step_begin_disconnect(self) -> None:
        live = self.observe()
        if not live.config.matches(self.original):
            raise Blocked("keystore.unchanged: the key store changed since the snapshot: "
                          f"{_diff(self.original, live.config)}; start a new run")
        from migrator.engine.hooks import HookFailed

        try:
            self.ctx.hook("before-disconnect", self)
        except HookFailed as exc:
            raise Blocked(str(exc)) from None
        self.disconnected_at = self.ctx.clock.now()
        self.move("start_disconnect", disconnected_at=self.disconnected_at,
                  detail={"budget_seconds": self.ctx.plan.max_disconnected})

    def stop_unchanged(self, reason: str) -> None:
        if machine.destination(self.state, "block") is None:
            raise RuntimeError(f"cannot block from {self.state}: {reason}")
        self.move("block", outcome="blocked", error=reason, detail={"reason": reason})

    # -- the critical section --------------------------------------------------------------
    def ensure_disconnected(self, *, deadline: float | None = None, then: str | None = "observe_disconnected") -> None:
        deadline = deadline if deadline is not None else self.deadline()

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

        retry_step(step, clock=self.ctx.clock, deadline=deadline, on_retry=self.ctx.on_retry(self.mid))
        self.wait_for(("DISCONNECTED",), deadline, "waiting for DISCONNECTED")
        if then:
            self.move(then, detail={"window_seconds": self.window()})
            self.ctx.hook("after-disconnect", self)

    def step_disconnect(self) -> None:
        self.ensure_disconnected()

    def step_connect(self) -> None:
        self.ensure_connected()

    def step_begin_update(self) -> None:
        self.move("start_update", detail={"target": self.desired.to_dict()})

    def step_update(self) -> None:
        self.apply_config(self.desired, self.ctx.target_credential(self), self.deadline())
        self.move("observe_updated", detail={"config": self.desired.to_dict()})

    def apply_config(self, want: StoreConfig, credential: Any, deadline: float | None) -> None:
        """Make KMS hold `want`, then prove it with DescribeCustomKeyStores (a rollback point)."""
        from migrator.aws.kms import update_parameters

        def step() -> None:
            obs = self.observe()
            if obs.config.matches(want):
                return
            if obs.state != "DISCONNECTED":
                raise StepFailed(f"the store is {obs.state}, not DISCONNECTED, so its connectivity cannot change")
            params = update_parameters(self.store_id, want, obs.config, credential is not None)
            shown = {k: v for k, v in params.items() if k != "CustomKeyStoreId"}
            if credential is not None:
                shown["XksProxyAuthenticationCredential"] = {"AccessKeyId": credential[0],
                                                             "RawSecretAccessKey": credential[1].ref}
            self.call("UpdateCustomKeyStore",
                      lambda: self.kms.update(self.store_id, want, obs.config, credential), parameters=shown)
            after = self.observe()
            if not after.config.matches(want):
                raise StepFailed("after UpdateCustomKeyStore KMS shows "
                                 f"{_diff(want, after.config)}, not the requested configuration")

        retry_step(step, clock=self.ctx.clock, deadline=deadline, on_retry=self.ctx.on_retry(self.mid))

    def step_begin_connect(self) -> None:
        self.move("start_connect")

    def ensure_connected(self, *, deadline: float | None = None, then: str | None = "observe_connected") -> None:
        deadline = deadline if deadline is not None else self.deadline()
        retries_left = int(self.attempts.get("connect_retries_left", 1))
        while True:
            def step() -> Observation:
                obs = self.observe()
                if obs.state == "DISCONNECTED":
                    self.call("ConnectCustomKeyStore", lambda: self.kms.connect(self.store_id))
                elif obs.state == "DISCONNECTING":
                    self.wait_for(("DISCONNECTED",), deadline, "waiting for DISCONNECTED before connecting")
                    self.call("ConnectCustomKeyStore", lambda: self.kms.connect(self.store_id))
                return obs

            first = retry_step(step, clock=self.ctx.clock, deadline=deadline, on_retry=self.ctx.on_retry(self.mid))
            obs = first if first.state in ("CONNECTED", "FAILED") else self.wait_for(
                ("CONNECTED", "FAILED"), deadline, "waiting for CONNECTED")
            if obs.state == "CONNECTED":
                break
            if obs.error_code in TRANSIENT_CONNECT_ERRORS and retries_left > 0 and self.retry_fits(deadline):
                retries_left -= 1
                self.attempts["connect_retries_left"] = retries_left
                self.ctx.update(self.mid, attempts=self.attempts)
                self.note(f"connect FAILED with {obs.error_code}; disconnecting to try once more")
                self.ensure_disconnected(deadline=deadline, then=None)
                continue
            raise StepFailed(f"connect FAILED with ConnectionErrorCode {obs.error_code}"
                             + ("; no budget left for another disconnect+connect"
                                if obs.error_code in TRANSIENT_CONNECT_ERRORS and retries_left > 0 else ""))
        if then:
            self.move(then, reconnected_at=self.ctx.clock.now())
        self.ctx.hook("after-connect", self)

    def retry_fits(self, deadline: float | None) -> bool:
        """Is there budget for another disconnect+connect? If not, going back now returns the keys sooner."""
        if deadline is None:
            return True
        left = (deadline - self.ctx.clock.now()) * self.ctx.clock.scale
        return left > 2 * self.ctx.expected_change_seconds + 2 * self.ctx.plan.poll_interval

    def wait_for(self, states: tuple[str, ...], deadline: float | None, what: str) -> Observation:
        """Poll until the store reaches one of `states`; learns how long such a change takes."""
        started = self.ctx.clock.now()
        obs = poll_until(self.observe, lambda o: o.state in states, clock=self.ctx.clock,
                         interval=self.ctx.plan.poll_interval, deadline=deadline, what=what,
                         expected=self.ctx.expected_change_seconds, on_poll=self.ctx.on_poll(self.mid, self))
        took = self.ctx.clock.elapsed(started)
        if took > 2 * self.ctx.plan.poll_interval:  # a real transition, not an already-finished one
            self.ctx.expected_change_seconds = took
        return obs

    def step_begin_verify(self) -> None:
        self.move("start_verify")

    def step_verify(self) -> None:
        self.prove_keys(self.deadline())
        now = self.ctx.clock.now()
        self.ctx.hook("verified", self)
        self.move("verify_ok", outcome="completed", verified_at=now, window_seconds=self.window(now),
                  detail={"window_seconds": self.window(now)})
        self.ctx.hook("completed", self)

    def prove_keys(self, deadline: float | None) -> None:
        """DescribeKey Enabled plus an Encrypt+Decrypt round trip per verify key, inside the budget.

        Keys are proven in parallel (each in a daemon thread, so Ctrl-C is never held up): the
        window ends when the slowest key works, not when the sum of all round trips has passed.
        """
        assert self.snapshot is not None
        keys = [k["key_id"] for k in self.snapshot.get("verify_keys") or []]
        if not keys:
            raise StepFailed("no key to verify with")
        errors: dict[str, BaseException] = {}
        threads = [threading.Thread(target=self._prove_key_into, args=(key_id, deadline, errors), daemon=True,
                                    name=f"verify-{key_id}") for key_id in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        if errors:
            key_id, exc = next(iter(errors.items()))
            raise exc if isinstance(exc, Exception) else StepFailed(f"verifying {key_id}: {exc}")

    def _prove_key_into(self, key_id: str, deadline: float | None, errors: dict[str, BaseException]) -> None:
        try:
            self.prove_key(key_id, deadline)
        except BaseException as exc:  # reported by the caller's thread
            errors[key_id] = exc

    def prove_key(self, key_id: str, deadline: float | None) -> None:
        context = {"xksmigrate-run": self.ctx.run_id}

        def attempt() -> str:
            try:
                info = self.kms.describe_key(key_id)
                if info.state != "Enabled":
                    return f"KeyState {info.state}"
                enc, dec = self.kms.round_trip(key_id, context)
            except AwsCallError as exc:
                if exc.code == "KMSInvalidStateException" or exc.retryable:
                    return f"{exc.code}: {exc.message}"  # changes take up to 5 minutes to be fully effective
                raise
            self.ctx.record(self.mid, kind="result", operation="Encrypt+Decrypt", outcome="ok",
                            request_id=dec, detail={"key_id": key_id, "encrypt_request_id": enc})
            return "ok"

        poll_until(attempt, lambda r: r == "ok", clock=self.ctx.clock, interval=self.ctx.plan.poll_interval,
                   deadline=deadline, what=f"verifying key {key_id}", on_poll=self.ctx.on_poll(self.mid, self))

    # -- rollback --------------------------------------------------------------------------
    def step_rollback(self) -> None:
        """Back to the snapshot: disconnect if needed, restore the config, connect, verify."""
        self.ctx.hook("rolling-back", self)
        if "rollback_started_at" not in self.attempts:  # an operator rollback of a completed run
            self.attempts["rollback_started_at"] = self.ctx.clock.now()
            self.ctx.update(self.mid, attempts=self.attempts)
        deadline = self.rollback_deadline()
        if self.disconnected_at is None:  # an operator rollback of a completed run starts a new window
            self.disconnected_at = self.ctx.clock.now()
            self.ctx.update(self.mid, disconnected_at=self.disconnected_at)
        obs = self.observe()
        if not obs.config.matches(self.original):
            if obs.state != "DISCONNECTED":
                self.ensure_disconnected(deadline=deadline, then=None)
            self.apply_config(self.original, self.ctx.original_credential(self), deadline)
            self.note("original configuration restored", config=self.original.to_dict())
        self.ensure_connected(deadline=deadline, then=None)
        self.prove_keys(deadline)
        now = self.ctx.clock.now()
        self.ctx.hook("rolled-back", self)
        self.move("rollback_ok", outcome="rolled_back", verified_at=now, window_seconds=self.window(now),
                  detail={"window_seconds": self.window(now)})

    def begin_operator_rollback(self) -> None:
        """An operator asked to return a completed store to its recorded original configuration."""
        if not self.ctx.approve(self, rollback=True):
            raise Blocked("the operator declined the rollback; nothing was changed")
        now = self.ctx.clock.now()
        self.attempts = {"rollback_started_at": now, "connect_retries_left": 1, "operator_rollback": True}
        self.disconnected_at = now  # a new window: the rollback disconnects the store right away
        self.move("operator_rollback", attempts=self.attempts, disconnected_at=now, verified_at=None,
                  window_seconds=None, outcome=None, error=None,
                  detail={"reason": "operator-initiated rollback", "by": self.ctx.who})

    def step_retry_stuck(self) -> None:
        self.attempts.pop("rollback_started_at", None)
        self.move("retry_rollback", outcome=None, detail={"reason": "operator asked to retry the rollback"})

    def move(self, trigger: str, **kwargs: Any) -> None:
        """Fire a trigger of the machine table; `_persist` journals it before the state changes."""
        self.trigger(trigger, **kwargs)  # type: ignore[attr-defined]  # bound by transitions


def _diff(want: StoreConfig, got: StoreConfig) -> str:
    parts = [f"{k}={getattr(got, k)!r} (expected {getattr(want, k)!r})"
             for k in want.__dataclass_fields__ if getattr(want, k) != getattr(got, k)]
    return ", ".join(parts) or "no difference"


def _describe(exc: Exception) -> str:
    if isinstance(exc, DeadlineExceeded):
        return f"downtime budget exhausted while {exc.what}"
    if isinstance(exc, AwsCallError | StepFailed):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"

