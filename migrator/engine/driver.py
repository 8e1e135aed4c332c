"""Drives one key store through the machine table (engine/machine.py): a short loop over its rows.

Every step observes the live store before it acts and is safe to run again, so `resume` simply runs
the steps of the persisted state. The journal is written before each side effect (the state move,
then a `call` event) and after it (a `result` event with the AWS request id). The row of the state
says what a failure means (block, roll back, stuck), which budget bounds the step, and whether a
transient AWS error is retried; the step functions below only say what to do.

The Driver is handed what it may use as `RunServices` (journal writes, output, clock, approval,
hooks, cut-over wait, preflight). Those services never receive the Driver back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from migrator.aws.kms import AwsCallError, needs_disconnect, update_parameters
from migrator.aws.roles import RoleUnavailable
from migrator.aws.store_config import Observation, StoreConfig
from migrator.engine import controls, machine, runbook
from migrator.engine.errors import Blocked, DeadlineExceeded, NothingToDo, StepFailed
from migrator.engine.hooks import HookFailed, facts_for
from migrator.engine.machine import Budget, Expect, OnFailure, Row
from migrator.engine.services import RunServices
from migrator.engine.store_ops import Credential, DriftDetected, StoreOps
from migrator.engine.verify import select_verify_keys
from migrator.engine.waits import Deadline, retry_step
from migrator.plan import KeystorePlan
from migrator.preflight.accounts import refusal as role_refusal
from migrator.preflight.base import NO_CHANGES, nothing_to_do

if TYPE_CHECKING:
    from transitions import EventData

    from migrator.journal.models import MigrationView
    from migrator.preflight.base import Finding

Fields = dict[str, object]  # what a move journals on the migration row (and its event's `detail`)


class Driver:
    """One key store migration, from its persisted state to a terminal one."""

    def __init__(self, services: RunServices, migration: MigrationView, keystore_plan: KeystorePlan):
        self.services, self.ks = services, keystore_plan
        # The store's own Region and account (a plan may reach several), and the KMS of that cell.
        self.plan, self.clock = services.plan.for_store(keystore_plan), services.clock
        self.kms = services.kms_for(keystore_plan)
        self.mid: int = migration.id
        self.ops = StoreOps(services, migration.id, migration.keystore_id or "", window=self.window,
                            state=lambda: self.state, expected=self.expected, checkpoint=self.checkpoint,
                            bound=self.budget_deadline, kms=self.kms, plan=self.plan)
        self.snapshot: dict[str, object] | None = migration.snapshot
        self.disconnected_at: float | None = migration.disconnected_at
        self.attempts: dict[str, object] = dict(migration.attempts or {})
        self.state: str = migration.state
        self._restore_needed = False  # rollback_disconnect's finding, for rollback_restore in the same pass
        self._steps: dict[str, Callable[[], Fields | None]] = {
            name: getattr(self, f"step_{name}") for row in machine.ROWS for name in row.step_names}
        self._machine = machine.build(self, migration.state, self._persist)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop_at: tuple[str, ...] = ()) -> str:
        """Run rows until a terminal state (or one of `stop_at`); returns it. KeyboardInterrupt and LockLostStop
        pass through."""
        with self.services.turn(self.mid):
            if self.state == "stuck" and self.services.retry_stuck:
                self.enter_retry_stuck()
            while not (row := machine.row(self.state)).terminal and self.state not in stop_at:
                try:
                    self._run_row(row)
                except Blocked as exc:
                    self.stop_unchanged(str(exc), "no_changes" if isinstance(exc, NothingToDo) else "blocked")
                except Exception as exc:
                    self.on_failure(exc)
        return self.state

    def _run_row(self, row: Row) -> None:
        self.checkpoint()
        if row.budget is Budget.REFUSE_PAST and (d := self.deadline()) is not None and self.clock.now() >= d:
            raise DeadlineExceeded(f"{self.state}, before the next forward call (a resume after the budget?)")
        steps, advance, after = row.steps, row.advance, row.after
        fields: Fields | None = None
        if row.detour and (fields := getattr(self, f"when_{row.detour.when}")()) is not None:
            steps, advance, after = row.detour.steps, row.detour.advance, None
        for name in steps:
            step = self._steps[name]
            if row.retry_transient:  # nothing changed yet: transient AWS errors get retries
                fields = retry_step(step, clock=self.clock, deadline=None, max_attempts=4, on_retry=self.ops.on_retry)
            else:
                fields = step()
        assert advance is not None
        self.move(advance[0], **(fields or {}))
        if after:
            self.hook(after)

    def on_failure(self, exc: Exception) -> None:
        """Route a failure by the row of the state it happened in: block, roll back, or stuck."""
        if isinstance(exc, DriftDetected) and (trigger := machine.row(self.state).drift_trigger):
            self.on_drift(exc, trigger)
            return
        reason = describe_failure(exc)
        failure = machine.row(self.state).on_failure
        if failure is OnFailure.BLOCK and isinstance(exc, AwsCallError | StepFailed | DeadlineExceeded):
            self.stop_unchanged(reason)
        elif failure is OnFailure.ROLL_BACK:
            self.attempts["rollback_started_at"] = self.clock.now()
            self.attempts["connect_retries_left"] = 1
            self.move(failure.trigger, error=reason, attempts=self.attempts,
                      detail={"reason": reason, "window_seconds": self.window()})
        elif failure is OnFailure.STUCK:
            self.move(failure.trigger, outcome="stuck", error=reason,
                      detail={"reason": reason, **self.manual_help(), **self.final_seen()})
            self.hook("stuck")
        else:
            raise exc

    def checkpoint(self) -> None:
        """An operator's `xksmigrate abort` (from any machine): blocks before the disconnect, rolls back in the
        window (engine/controls.py); asked at each row and before every AWS call of this store."""
        if (abort := self.services.abort_requested()) is not None:
            controls.stop_for(abort, machine.row(self.state).on_failure)

    def on_drift(self, exc: DriftDetected, trigger: str) -> None:
        """The live store contradicts the journal: journal both configurations and stop for the operator.

        Neither forward (that would overwrite what someone put there) nor back (the snapshot may no longer be
        what they want): `stuck`, exit 5, with the commands; `resume --retry-stuck` restores the snapshot.
        """
        reason = str(exc)
        drift = {"state": exc.state, "expected": [c.to_dict() for c in exc.expected], "live": exc.live.to_dict()}
        self.services.record(self.mid, kind="note", operation="DescribeCustomKeyStores", outcome="drift",
                             detail={"message": reason, **drift})
        self.move(trigger, outcome="stuck", error=reason,
                  detail={"reason": reason, **drift, **self.manual_help()})
        self.hook("stuck")

    def stop_unchanged(self, reason: str, outcome: str = "blocked") -> None:
        """End `blocked`: nothing changed; `outcome` `no_changes` when the store already has the target."""
        if machine.destination(self.state, OnFailure.BLOCK.trigger) is None:
            raise RuntimeError(f"cannot block from {self.state}: {reason}")
        self.move(OnFailure.BLOCK.trigger, outcome=outcome, error=reason, detail={"reason": reason})

    def move(self, trigger: str, **fields: object) -> None:
        """Fire a trigger of the machine table; `_persist` journals it before the state changes."""
        self._machine.events[trigger].trigger(self, **fields)

    def _persist(self, event: EventData) -> None:
        """Journal a state move before it happens in memory (transitions' before_state_change)."""
        fields = dict(event.kwargs)
        transition = event.transition
        assert transition is not None and transition.dest is not None  # every row of the table has one
        detail = fields.pop("detail", None)
        fields["api_calls"] = self.services.api_calls_for(self.mid)
        self.services.transition(self.mid, transition.source, transition.dest, detail=detail, **fields)

    # -- entry points an operator chooses (the `entries` of terminal rows) -----------------------
    def enter_operator_rollback(self) -> None:
        """Return a completed store to its recorded original configuration."""
        if not self.services.approve(self._question(rollback=True)):
            raise Blocked("the operator declined the rollback; nothing was changed")
        now = self.clock.now()
        self.attempts = {"rollback_started_at": now, "connect_retries_left": 1, "operator_rollback": True}
        self.disconnected_at = now  # a new window: the rollback disconnects the store right away
        self.move("operator_rollback", attempts=self.attempts, disconnected_at=now, verified_at=None,
                  window_seconds=None, outcome=None, error=None,
                  detail={"reason": "operator-initiated rollback", "by": self.services.who})

    def enter_retry_stuck(self) -> None:
        self.attempts.pop("rollback_started_at", None)
        self.move("retry_rollback", outcome=None, detail={"reason": "operator asked to retry the rollback"})

    # -- journal and output plumbing --------------------------------------------------------------
    @property
    def store_id(self) -> str:
        return self.ops.store_id

    @property
    def last_seen(self) -> Observation | None:
        return self.ops.last_seen

    def hook(self, event: str) -> None:
        facts = facts_for(self.plan, self.ks, run_id=self.services.run_id, store_id=self.store_id,
                          store_state=self.state, window_seconds=self.window(), dry_run=self.services.dry_run)
        ran = True  # unless the hooks say none ran
        try:
            ran = self.services.hook(self.mid, event, facts)
        finally:
            if ran:
                self.ops.forget_last_look()  # a hook may have acted on the store: the next step looks again

    def manual_help(self) -> dict[str, object]:
        original = self.original if self.snapshot else None
        return runbook.stuck_help(self.plan.region, self.store_id, original, self.last_seen)

    # -- what the store should hold, and the clocks -----------------------------------------------
    @property
    def original(self) -> StoreConfig:
        assert self.snapshot is not None
        return StoreConfig.from_dict(self.snapshot)

    @property
    def desired(self) -> StoreConfig:
        return StoreConfig.for_target(self.ks.target, self.original)

    def expected(self) -> tuple[StoreConfig, ...]:
        """What the journal says the store holds in the current state (machine.Row.expects); () = unchecked."""
        expects = machine.row(self.state).expects
        if self.snapshot is None or expects is Expect.UNCHECKED:
            return ()
        return {Expect.ORIGINAL: (self.original,), Expect.TARGET: (self.desired,),
                Expect.EITHER: (self.original, self.desired)}[expects]

    @property
    def secret_only(self) -> bool:
        """The plan changes only the credential's secret: no describe can show whether KMS holds it."""
        return self.ks.target.credential is not None and self.desired.matches(self.original)

    def deadline(self) -> float | None:
        """The real instant the downtime budget ends (None before the disconnect, or an update in place)."""
        start = self.disconnected_at
        if start is None:  # an update in place bounds its proof by the same budget, from the update on
            since = self.attempts.get("in_place_since")
            start = float(since) if isinstance(since, int | float) else None
        if start is None:
            return None
        return start + self.services.budget_seconds() / self.clock.scale

    def rollback_deadline(self) -> float:
        started = self.attempts.get("rollback_started_at")
        start = float(started) if isinstance(started, int | float) else self.clock.now()
        return start + self.services.rollback_budget / self.clock.scale

    def budget_deadline(self) -> float | None:
        """The deadline of the current row's budget (machine.Budget)."""
        budget = machine.row(self.state).budget
        if budget is Budget.NONE:
            return None
        return self.rollback_deadline() if budget is Budget.ROLLBACK else self.deadline()

    def window(self, until: float | None = None) -> float | None:
        if self.disconnected_at is None:
            return None
        return round(self.clock.elapsed(self.disconnected_at, until), 3)

    # -- before the disconnect ---------------------------------------------------------------------
    def step_snapshot(self) -> Fields:
        try:
            obs = self.kms.find_store(store_id=self.ks.id, name=None if self.ks.id else self.ks.name)
        except RoleUnavailable as exc:  # nothing can be called in that account: preflight's finding, journaled
            found = role_refusal(self.ks, exc, self.services.plan)
            self.services.record(self.mid, kind="finding", outcome=found.status,
                                 detail={"check": found.check, "message": found.message, "remedy": found.remedy})
            raise Blocked(f"{found.check}: {found.message}") from None
        if obs is None:
            raise Blocked(f"keystore.exists: key store {self.ks.ref} does not exist in {self.plan.region}")
        if not obs.is_external:
            raise Blocked(f"keystore.type: key store {obs.id} is {obs.type}, not an external key store")
        self.ops.store_id = obs.id
        keys = select_verify_keys(self.kms, obs, self.ks.verify_key_ids, on_excluded=self._note_excluded_key)
        self.snapshot = {**obs.to_dict(), "verify_keys": keys, "region": self.plan.region,
                         "observed_at": self.clock.now()}
        return {"keystore_id": obs.id, "snapshot": self.snapshot, "detail": {"snapshot": self.snapshot}}

    def _note_excluded_key(self, key_id: str, state: str) -> None:
        self.ops.note(f"verify key {key_id} is {state}: left out of verification (it cannot prove the store)",
                      key_id=key_id, key_state=state)

    def verified_keystore(self) -> KeystorePlan:
        """The plan's store with the verify keys the snapshot kept (a named key that is disabled or pending
        deletion was left out with a note), so preflight judges the keys the run will really use."""
        assert self.snapshot is not None
        kept = self.snapshot.get("verify_keys")
        if not self.ks.verify_key_ids or not isinstance(kept, list):
            return self.ks
        return dataclasses.replace(self.ks, verify_key_ids=tuple(str(k["key_id"]) for k in kept))

    def _preflight(self, again: bool = False) -> list[Finding]:
        assert self.snapshot is not None
        findings = self.services.preflight(self.mid, self.verified_keystore(), Observation.from_dict(self.snapshot))
        holding = [f for f in findings if f.status in ("block", "unverified")]  # fail closed (preflight/base.py)
        if holding and nothing_to_do(findings):
            raise NothingToDo(f"{NO_CHANGES} ({self.store_id or self.ks.ref})")
        if holding:
            reasons = "; ".join(f"{f.check}: {f.message}" if f.status == "block" else
                                f"{f.check} unverified: {f.message} (to check it: {f.remedy or 'see plan'}; or "
                                f"--accept-unverified {f.check})" for f in holding)
            raise Blocked(("preflight again before the disconnect: " if again else "") + reasons)
        return findings

    def step_preflight(self) -> Fields:
        findings = self._preflight()
        return {"detail": {"warnings": sum(f.status == "warn" for f in findings), "checks": len(findings),
                           "accepted": sum(f.status == "accepted" for f in findings)}}

    def step_approval(self) -> Fields:
        if self.services.wait_for_cutover(self.mid, lambda: self.hook("postponed")):
            self._preflight(again=True)  # postponed: the world may have changed while we waited
        if not self.services.approve(self._question()):
            raise Blocked("the operator declined the disconnect; nothing was changed")
        return {"detail": {"approved_by": self.services.who}}

    def _question(self, rollback: bool = False) -> str:
        if not rollback and self.when_update_in_place() is not None:
            return (f"Update {self.store_id} in place now (no disconnect)? The new configuration is proven with "
                    f"round trips; budget {self.services.budget_seconds():g} s, then automatic rollback.")
        target = self.original if rollback else self.desired
        what = "restored" if rollback else "reconnected"
        return (f"Disconnect {self.store_id} now? Its keys stay unusable until the store is {what} "
                f"to {target.uri_endpoint} ({target.connectivity}) and verified; "
                f"budget {self.services.budget_seconds():g} s, then automatic rollback.")

    def _still_the_snapshot(self) -> None:
        """Before anything changes: the store must still hold the snapshot (else blocked, with the drift journaled)."""
        live = self.ops.observe()
        if not live.config.matches(self.original):
            self.services.record(self.mid, kind="note", operation="DescribeCustomKeyStores", outcome="drift",
                                 detail={"state": self.state, "expected": [self.original.to_dict()],
                                         "live": live.to_dict()})
            raise Blocked("keystore.unchanged: the key store changed since the snapshot: "
                          f"{self.original.describe_diff(live.config)}; start a new run")

    def when_update_in_place(self) -> Fields | None:
        """The detour of `approved`: {} when the change needs no disconnect (credential, URI path), else None."""
        params = update_parameters(self.store_id, self.desired, self.original, self.ks.target.credential is not None)
        return None if needs_disconnect(params) else {}

    def step_begin_update_in_place(self) -> Fields:
        """No disconnect, no window: the budget now bounds the update and its proof (`deadline`)."""
        self._still_the_snapshot()
        self.attempts["in_place_since"] = self.clock.now()
        return {"attempts": self.attempts,
                "detail": {"target": self.desired.to_dict(), "in_place": True,
                           "budget_seconds": self.services.budget_seconds()}}

    def step_begin_disconnect(self) -> Fields:
        # The cell's turn first (several stores of one account-Region at once): the store is still connected
        # while it waits, and its window, which starts below, does not queue behind the others' at its end.
        waited = self.ops.kms.admit_window() * self.clock.scale
        if waited >= 1.0:
            self.ops.note(f"waited {waited:.1f}s for the cell's request budget before disconnecting",
                          waited_seconds=round(waited, 1))
        self._still_the_snapshot()
        try:
            self.hook("before-disconnect")
        except HookFailed as exc:
            raise Blocked(str(exc)) from None
        self.disconnected_at = self.clock.now()
        return {"disconnected_at": self.disconnected_at, "detail": {"budget_seconds": self.services.budget_seconds()}}

    # -- the critical section ----------------------------------------------------------------------
    def step_disconnect(self) -> Fields:
        self.ops.ensure_disconnected(self.budget_deadline)
        return {"detail": {"window_seconds": self.window()}}

    def step_begin_update(self) -> Fields:
        return {"detail": {"target": self.desired.to_dict()}}

    def step_update(self) -> Fields:
        self.ops.apply_config(self.desired, self.target_credential(), self.budget_deadline,
                              invisible=self.secret_only)
        return {"detail": {"config": self.desired.to_dict()}}

    def step_begin_connect(self) -> Fields:
        return {}

    def step_connect(self) -> Fields:
        self.ensure_connected(self.budget_deadline)
        return {"reconnected_at": self.clock.now()}

    def when_connect_did_not_hold(self) -> Fields | None:
        """The detour of `connected`/`verifying`: look before proving. A store that is not CONNECTED (a resume
        long after, someone disconnected it) goes back to connecting if a connect still fits, else back."""
        deadline = self.budget_deadline
        obs = retry_step(self.ops.observe, clock=self.clock, deadline=deadline, on_retry=self.ops.on_retry)
        if obs.state == "CONNECTED":
            return None
        reason = f"the connect did not hold: the store is {obs.state} in {self.state}"
        if not self.ops.retry_fits(deadline):
            raise StepFailed(f"{reason}; no budget left for another connect")
        self.ops.note(f"{reason}; connecting again", connection_state=obs.state)
        return {"detail": {"reason": reason, "connection_state": obs.state}}

    def step_begin_verify(self) -> Fields:
        return {}

    def step_verify(self) -> Fields:
        self.prove_keys(self.budget_deadline)
        now = self.clock.now()
        self.hook("verified")
        return {"outcome": "completed", "verified_at": now, "window_seconds": self.window(now),
                "detail": {"window_seconds": self.window(now), **self.final_seen()}}

    # -- the way back (one row, five idempotent steps) ---------------------------------------------
    def step_rollback_begin(self) -> None:
        self.hook("rolling-back")
        if "rollback_started_at" not in self.attempts:  # a retried stuck rollback starts its budget anew
            self.attempts["rollback_started_at"] = self.clock.now()
            self.services.update(self.mid, attempts=self.attempts)

    def step_rollback_disconnect(self) -> None:
        """Disconnect only if restoring needs it: a credential or path is restored while CONNECTED."""
        obs = self.ops.observe()
        self._restore_needed = not obs.config.matches(self.original) or self.secret_only
        restore = update_parameters(self.store_id, self.original, obs.config, self.ks.target.credential is not None)
        if self._restore_needed and obs.state != "DISCONNECTED" and needs_disconnect(restore):
            if self.disconnected_at is None:  # e.g. an update in place that failed: the window starts now
                self.disconnected_at = self.clock.now()
                self.services.update(self.mid, disconnected_at=self.disconnected_at)
            self.ops.ensure_disconnected(self.budget_deadline)

    def step_rollback_restore(self) -> None:
        if self._restore_needed:
            self.ops.apply_config(self.original, self.original_credential(), self.budget_deadline,
                                  invisible=self.secret_only)
            self.ops.note("original configuration restored", config=self.original.to_dict())

    def step_rollback_connect(self) -> None:
        self.ensure_connected(self.budget_deadline)
        self.hook("after-connect")

    def step_rollback_verify(self) -> Fields:
        self.prove_keys(self.budget_deadline)
        now = self.clock.now()
        self.hook("rolled-back")
        return {"outcome": "rolled_back", "verified_at": now, "window_seconds": self.window(now),
                "detail": {"window_seconds": self.window(now), **self.final_seen()}}

    def final_seen(self) -> Fields:
        """The configuration last seen live, journaled with the end of the window (`status` shows it as final)."""
        return {"final": self.last_seen.config.to_dict()} if self.last_seen is not None else {}

    # -- observe-before-act building blocks ---------------------------------------------------------
    def ensure_connected(self, deadline: Deadline) -> None:
        """Connect and wait for CONNECTED; a transient FAILED gets one more disconnect+connect if it fits."""
        def persist(attempts: dict[str, object]) -> None:
            self.services.update(self.mid, attempts=attempts)

        self.ops.ensure_connected(deadline, self.attempts, persist)

    def prove_keys(self, deadline: Deadline) -> None:
        """DescribeKey Enabled plus an Encrypt+Decrypt round trip per verify key, inside the budget."""
        assert self.snapshot is not None
        verify_keys = self.snapshot.get("verify_keys")
        self.ops.prove_keys([str(k["key_id"]) for k in verify_keys] if isinstance(verify_keys, list) else [], deadline)

    # -- credentials -------------------------------------------------------------------------------
    def target_credential(self) -> Credential | None:
        cred = self.ks.target.credential
        return None if cred is None else (cred.access_key_id, self.services.secret(cred.secret_ref))

    def original_credential(self) -> Credential | None:
        """The credential to restore on rollback: only needed when the run changed it."""
        if self.ks.target.credential is None:
            return None
        ref = self.ks.original_credential
        if ref is None:
            raise Blocked("the run changed the proxy credential and the plan gives no original_credential")
        return (ref.access_key_id or self.original.access_key_id, self.services.secret(ref.secret_ref))


def describe_failure(exc: Exception) -> str:
    """The one-line reason journaled for a failure."""
    if isinstance(exc, DeadlineExceeded):
        return f"downtime budget exhausted while {exc.what}"
    if isinstance(exc, AwsCallError | StepFailed):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"
