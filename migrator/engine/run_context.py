"""The services of one run that every Driver of it uses: journal writes, output, the clock, AWS, approval,
hooks, the postponed cut-over, secrets and preflight (the `RunServices` protocol of engine/driver.py).

Journal writes come first and are mirrored to the observer (the CLI's renderer); `_crash_point` is the
crash-matrix seam after every journal write. Nothing here knows a Driver: each method takes plain
values (a migration id, a frozen `HookFacts`, an `Observation`), so calls go one way.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from migrator.aws.kms import KmsApplier
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import Observation
from migrator.engine import cutover
from migrator.engine.environment import Environment
from migrator.engine.errors import Blocked
from migrator.engine.hooks import HookFacts, HookResult
from migrator.plan import KeystorePlan, Plan

if TYPE_CHECKING:
    from migrator.journal.models import EventView
    from migrator.preflight.base import Finding


def _crash_point(seq: int) -> None:
    """Test seam for the crash matrix: die by SIGKILL right after journal event `seq` is committed.

    Only active when XKSMIGRATE_TEST_KILL_AFTER_SEQ is set; it proves that every journal point is
    a safe place to die (resume must end in completed or rolled_back with nothing lost).
    """
    target = os.environ.get("XKSMIGRATE_TEST_KILL_AFTER_SEQ")
    if target and target.isdigit() and int(target) == seq:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class RunContext:
    """What the Drivers of one run share (implements driver.RunServices)."""

    def __init__(self, env: Environment, plan: Plan, run_id: str, options: dict[str, object] | None = None):
        self.env, self.plan, self.run_id = env, plan, run_id
        self.journal, self.clock, self.who = env.journal, env.clock, env.who
        self.dry_run, self.retry_stuck = env.dry_run, env.retry_stuck
        self.rollback_budget = max(plan.max_disconnected, 900.0)
        self.requests: Counter[str] = env.clients.request_counter
        self._base_calls: dict[int, Counter[str]] = {}
        self._start_calls: dict[int, Counter[str]] = {}
        self.kms = KmsApplier(env.clients.client("kms"))
        self.options: dict[str, object] = dict(options or {})
        self.lock_lost = False
        self._emit_lock = threading.Lock()
        # AWS: connecting or disconnecting "takes approximately five minutes"; refined by each wait.
        self.expected_change_seconds: float = 300.0

    # -- journal and output -----------------------------------------------------------------
    def _emit(self, mid: int | None, seq: int, kind: str, **data: object) -> None:
        with self._emit_lock:  # verification threads report concurrently
            self.env.observer.event({"type": "event", "run_id": self.run_id, "migration": mid, "seq": seq,
                                     "kind": kind, "at": self.clock.now(), **data})

    def record(self, mid: int | None, *, kind: str, operation: str | None = None, outcome: str | None = None,
               request_id: str | None = None, detail: dict[str, object] | None = None) -> int:
        seq = self.journal.record(self.run_id, kind=kind, migration_id=mid, operation=operation, outcome=outcome,
                                  request_id=request_id, detail=detail)
        _crash_point(seq)
        self._emit(mid, seq, kind, operation=operation, outcome=outcome, request_id=request_id, detail=detail)
        return seq

    def transition(self, mid: int, from_state: str, to_state: str, *, detail: object = None,
                   **fields: object) -> int:
        event_detail = detail if isinstance(detail, dict) else None
        columns: dict[str, Any] = dict(fields)  # migration columns, checked by the journal
        if "outcome" in columns:  # the store's outcome: on the row and on the event, in one transaction
            outcome = columns.pop("outcome")
            seq = self.journal.transition(mid, to_state, detail=event_detail, outcome=_text(outcome),
                                          migration_outcome=outcome, **columns)
        else:
            seq = self.journal.transition(mid, to_state, detail=event_detail, **columns)
        _crash_point(seq)
        self._emit(mid, seq, "transition", from_state=from_state, to_state=to_state, detail=event_detail)
        return seq

    def update(self, mid: int, **fields: object) -> None:
        self.journal.update_migration(mid, **fields)

    def progress(self, event: dict[str, object]) -> None:
        self.env.observer.event(event)

    def note(self, mid: int, outcome: str, message: str) -> None:
        """A note with an outcome (cut-over's `postponed` / `released`)."""
        self.record(mid, kind="note", outcome=outcome, detail={"message": message})

    def events(self, run_id: str) -> list[EventView]:
        return self.journal.events(run_id)

    def track(self, mid: int, persisted_calls: dict[str, int]) -> None:
        """Count this process's AWS requests for `mid` on top of what earlier processes counted."""
        self._base_calls[mid] = Counter(persisted_calls or {})
        self._start_calls[mid] = Counter(self.requests)

    def api_calls_for(self, mid: int) -> dict[str, int]:
        now = Counter(self.requests)
        now.subtract(self._start_calls.get(mid, Counter()))
        total = self._base_calls.get(mid, Counter()) + now
        return {k: v for k, v in sorted(total.items()) if v > 0}

    # -- hooks, decisions and waits that need the outside world ---------------------------------
    def hook(self, mid: int, event: str, facts: HookFacts) -> None:
        if self.env.hooks is None:
            return

        def record(result: HookResult) -> None:
            self.record(mid, kind="hook", operation=event, outcome="ok" if result.ok else "failed",
                        detail={"hook": result.hook, "event": event, "exit_code": result.exit_code,
                                "output": result.output})

        self.env.hooks.fire(event, facts, record)

    def approve(self, question: str) -> bool:
        return bool(self.env.approve(question))

    def wait_for_cutover(self, mid: int, on_postponed: Callable[[], None]) -> bool:
        def progress(after_seq: int) -> None:
            self.progress({"type": "progress", "run_id": self.run_id, "migration": mid, "state": "postponed",
                           "connection_state": None, "window_seconds": None,
                           "budget_seconds": self.plan.max_disconnected, "next_poll_seconds": 1.0,
                           "simulated": self.clock.simulated, "since_seq": after_seq})

        return cutover.wait_for_release(self, self.run_id, mid, self.options, on_postponed=on_postponed,
                                        progress=progress, lock_lost=lambda: self.lock_lost)

    def secret(self, ref: str) -> SecretValue:
        if self.env.secret_resolver is None:
            raise Blocked(f"no way to resolve secret reference {ref}")
        return self.env.secret_resolver(ref)

    def preflight(self, mid: int, keystore: KeystorePlan, snapshot: Observation) -> list[Finding]:
        """The engine's gate and the read-only inspector; every finding is journaled."""
        from migrator.preflight.gate import GateInputs, run_gate

        findings = run_gate(GateInputs(
            plan=self.plan, keystore=keystore, snapshot=snapshot, clients=self.env.clients, secret=self.secret,
            extra_roots_pem=tuple(self.env.extra_roots_pem), resolve=self.env.resolve,
            include_cloudwatch=self.env.include_cloudwatch, unfinished_runs=self._other_unfinished()))
        for f in findings:
            self.record(mid, kind="finding", outcome=f.status,
                        detail={"check": f.check, "message": f.message, "remedy": f.remedy})
        return findings

    def _other_unfinished(self) -> tuple[str, ...]:
        try:
            runs = self.journal.unfinished_runs(self.plan.region, self.plan.account_id)
        except Exception:  # a journal hiccup must not fail preflight; the check only warns
            return ()
        return tuple(r.id for r in runs if r.id != self.run_id)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
