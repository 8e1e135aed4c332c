"""What a Driver may use during a run: journal writes, output, the clock, AWS, decisions, hooks.

Everything a step needs from outside the key store goes through here, so the Driver (steps.py)
stays a readable list of observe-then-act steps. Journal writes come first and are mirrored to the
observer (the CLI's renderer); `_crash_point` is the crash-matrix seam after every journal write.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import Observation
from migrator.engine.driver import Blocked
from migrator.plan import Plan

if TYPE_CHECKING:
    from migrator.engine.driver import Driver
    from migrator.engine.runner import Environment


def _crash_point(seq: int) -> None:
    """Test seam for the crash matrix: die by SIGKILL right after journal event `seq` is committed.

    Only active when XKSMIGRATE_TEST_KILL_AFTER_SEQ is set; it proves that every journal point is
    a safe place to die (resume must end in completed or rolled_back with nothing lost).
    """
    target = os.environ.get("XKSMIGRATE_TEST_KILL_AFTER_SEQ")
    if target and target.isdigit() and int(target) == seq:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class LockLostStop(BaseException):
    """Our lock was removed (xksmigrate unlock) or its session died: stop before the next side effect."""


class RunContext:
    """What a Driver may use: journal writes, the clock, AWS, preflight, approval, hooks."""

    def __init__(self, env: Environment, plan: Plan, run_id: str):
        self.env, self.plan, self.run_id = env, plan, run_id
        self.journal, self.clock, self.who = env.journal, env.clock, env.who
        self.retry_stuck = env.retry_stuck
        self.rollback_budget = max(plan.max_disconnected, 900.0)
        self.requests: Counter[str] = env.clients.request_counter
        self._base_calls: dict[int, Counter[str]] = {}
        self._start_calls: dict[int, Counter[str]] = {}
        self.last_seen: dict[int, Observation] = {}
        self.kms = KmsApplier(env.clients.client("kms"))
        self.options: dict[str, Any] = {}
        self.lock_message = ""
        self.lock_lost = False
        self._emit_lock = threading.Lock()
        # AWS: connecting or disconnecting "takes approximately five minutes"; refined by each wait.
        self.expected_change_seconds: float = 300.0

    # -- journal and output -----------------------------------------------------------------
    def _emit(self, mid: int | None, seq: int, kind: str, **data: Any) -> None:
        with self._emit_lock:  # verification threads report concurrently
            self.env.observer.event({"type": "event", "run_id": self.run_id, "migration": mid, "seq": seq,
                                     "kind": kind, "at": self.clock.now(), **data})

    def record(self, mid: int | None, *, kind: str, operation: str | None = None, outcome: str | None = None,
               request_id: str | None = None, detail: dict[str, Any] | None = None) -> int:
        seq = self.journal.record(self.run_id, kind=kind, migration_id=mid, operation=operation, outcome=outcome,
                                  request_id=request_id, detail=detail)
        _crash_point(seq)
        self._emit(mid, seq, kind, operation=operation, outcome=outcome, request_id=request_id, detail=detail)
        return seq

    def transition(self, mid: int, from_state: str, to_state: str, *, detail: dict[str, Any] | None = None,
                   **fields: Any) -> int:
        if "outcome" in fields:  # the store's outcome: on the row and on the event, in one transaction
            outcome = fields.pop("outcome")
            seq = self.journal.transition(mid, to_state, detail=detail, outcome=outcome, migration_outcome=outcome,
                                          **fields)
        else:
            seq = self.journal.transition(mid, to_state, detail=detail, **fields)
        _crash_point(seq)
        self._emit(mid, seq, "transition", from_state=from_state, to_state=to_state, detail=detail)
        return seq

    def update(self, mid: int, **fields: Any) -> None:
        self.journal.update_migration(mid, **fields)

    def track(self, mid: int, persisted_calls: dict[str, int]) -> None:
        """Count this process's AWS requests for `mid` on top of what earlier processes counted."""
        self._base_calls[mid] = Counter(persisted_calls or {})
        self._start_calls[mid] = Counter(self.requests)

    def api_calls_for(self, mid: int) -> dict[str, int]:
        now = Counter(self.requests)
        now.subtract(self._start_calls.get(mid, Counter()))
        total = self._base_calls.get(mid, Counter()) + now
        return {k: v for k, v in sorted(total.items()) if v > 0}

    def observed(self, mid: int, obs: Observation, driver: Driver) -> None:
        previous = self.last_seen.get(mid)
        self.last_seen[mid] = obs
        if previous is None or (previous.state, previous.error_code) != (obs.state, obs.error_code):
            self.record(mid, kind="note", operation="DescribeCustomKeyStores",
                        detail={"connection_state": obs.state, "connection_error_code": obs.error_code or None,
                                "window_seconds": driver.window()})

    def on_poll(self, mid: int, driver: Driver) -> Callable[[Any, float], None]:
        def progress(observation: Any, next_sleep: float) -> None:
            last = self.last_seen.get(mid)
            self.env.observer.event({
                "type": "progress", "run_id": self.run_id, "migration": mid, "state": driver.state,
                "connection_state": last.state if last else None, "waiting_on": str(observation)[:120],
                "window_seconds": driver.window(), "budget_seconds": self.plan.max_disconnected,
                "next_poll_seconds": next_sleep, "simulated": self.clock.simulated})
        return progress

    def on_retry(self, mid: int) -> Callable[[AwsCallError, int], None]:
        def retried(exc: AwsCallError, attempt: int) -> None:
            self.record(mid, kind="note", operation=exc.operation, outcome="retry",
                        request_id=exc.request_id, detail={"code": exc.code, "attempt": attempt})
        return retried

    # -- hooks ------------------------------------------------------------------------------
    def hook(self, name: str, driver: Driver) -> None:
        if self.env.hooks is not None:
            self.env.hooks.fire(name, self, driver)

    # -- decisions that need the outside world ------------------------------------------------
    def approve(self, driver: Driver, rollback: bool = False) -> bool:
        target = driver.original if rollback else driver.desired
        what = "restored" if rollback else "reconnected"
        question = (f"Disconnect {driver.store_id} now? Its keys stay unusable until the store is {what} "
                    f"to {target.uri_endpoint} ({target.connectivity}) and verified; "
                    f"budget {self.plan.max_disconnected:g} s, then automatic rollback.")
        return bool(self.env.approve(question))

    def wait_for_cutover(self, driver: Driver) -> bool:
        """Hold before the disconnect (gh-ost's postponed cut-over); True if the run waited.

        Released by `xksmigrate proceed RUN_ID` (an event in the journal, so from any machine that
        shares it), by deleting the flag file, or at `cutover_at`. Survives a resume: the settings
        live in the run's options.
        """
        opts = self.options
        flag, at = opts.get("postpone_flag_file"), opts.get("cutover_at")
        if not (opts.get("postpone") or flag or at):
            return False
        events = self.journal.events(self.run_id)
        if any(e.kind == "note" and e.outcome == "released" and e.migration_id == driver.mid for e in events):
            return False
        if flag and not os.path.exists(flag) and not any(e.outcome == "postponed" for e in events):
            with open(flag, "a"):
                pass  # gh-ost creates the flag file; the operator deletes it to cut over
        how = [f"xksmigrate proceed {self.run_id}"] + ([f"rm {flag}"] if flag else [])
        if at:
            how.append(time.strftime("wait until %Y-%m-%d %H:%M:%S", time.localtime(float(at))))
        if not any(e.outcome == "postponed" and e.migration_id == driver.mid for e in events):
            self.record(driver.mid, kind="note", outcome="postponed",
                        detail={"message": "cut-over postponed; release with: " + " or ".join(how)})
            self.hook("postponed", driver)
        after = max((e.seq for e in events), default=0)
        while True:
            reason = None
            if any(e.kind == "note" and e.outcome == "proceed" for e in self.journal.events(self.run_id)):
                reason = "xksmigrate proceed"
            elif flag and not os.path.exists(flag):
                reason = f"{flag} removed"
            elif at and time.time() >= float(at):
                reason = "cut-over time reached"
            if reason:
                break
            if self.lock_lost:
                raise LockLostStop
            self.env.observer.event({"type": "progress", "run_id": self.run_id, "migration": driver.mid,
                                     "state": "postponed", "connection_state": None, "window_seconds": None,
                                     "budget_seconds": self.plan.max_disconnected, "next_poll_seconds": 1.0,
                                     "simulated": self.clock.simulated, "since_seq": after})
            time.sleep(1.0)  # real time: a cut-over is chosen on the wall clock, not the simulated one
        self.record(driver.mid, kind="note", outcome="released", detail={"message": f"cut-over released: {reason}"})
        return True

    def secret(self, ref: str) -> SecretValue:
        if self.env.secret_resolver is None:
            raise Blocked(f"no way to resolve secret reference {ref}")
        return self.env.secret_resolver(ref)

    def target_credential(self, driver: Driver) -> tuple[str, SecretValue] | None:
        cred = driver.ks.target.credential
        return None if cred is None else (cred.access_key_id, self.secret(cred.secret_ref))

    def original_credential(self, driver: Driver) -> tuple[str, SecretValue] | None:
        """The credential to restore on rollback: only needed when the run changed it."""
        if driver.ks.target.credential is None:
            return None
        ref = driver.ks.original_credential
        if ref is None:
            raise Blocked("the run changed the proxy credential and the plan gives no original_credential")
        return (ref.access_key_id or driver.original.access_key_id, self.secret(ref.secret_ref))

    def select_verify_keys(self, driver: Driver, obs: Observation) -> list[dict[str, str]]:
        """The keys whose round trips prove the store works, chosen while they are still usable."""
        connected = obs.state == "CONNECTED"
        if driver.ks.verify_key_ids:
            chosen = []
            for key_id in driver.ks.verify_key_ids:
                info = self.kms.describe_key(key_id)
                if info.custom_key_store_id != obs.id:
                    owner = info.custom_key_store_id or "no custom key store"
                    raise Blocked(f"keys.verify_keys: verify key {key_id} belongs to {owner}, not to {obs.id}")
                chosen.append({"key_id": info.key_id, "arn": info.arn, "state": info.state})
            return chosen
        keys = self.kms.keys_of_store(obs.id, want_enabled=3,
                                      states=("Enabled",) if connected else ("Enabled", "Unavailable"))
        if not keys:
            raise Blocked(f"keys.verifiable: key store {obs.id} has no Enabled KMS key to verify with; "
                          "name one in verify.key_ids")
        return [{"key_id": k.key_id, "arn": k.arn, "state": k.state} for k in keys]

    def preflight(self, driver: Driver) -> list[Any]:
        from migrator.preflight import gate

        findings = gate.essential_checks(self, driver)
        findings += gate.inspector_checks(self, driver)
        for f in findings:
            self.record(driver.mid, kind="finding", outcome=f.status,
                        detail={"check": f.check, "message": f.message, "remedy": f.remedy})
        return findings

    def manual_help(self, driver: Driver) -> dict[str, Any]:
        from migrator.engine import runbook

        return runbook.stuck_help(self.plan.region, driver.store_id, driver.snapshot, self.last_seen.get(driver.mid))
