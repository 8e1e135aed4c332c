"""How the key stores of one run are driven together (engine/runner.py starts, resumes and ends the run).

Forward: every store the run still has to change is snapshotted and preflighted before the first
disconnect, so a block on any store stops the whole run with nothing changed; the same store named
twice in a plan (once by id, once by name) blocks even before that. Then the stores go one at a time in
plan order, and none starts after one that did not complete.

Operator rollback: every store the run changed, in reverse order. It is refused with nothing changed
when a later run in the journal changed one of those stores since, or when a store no longer holds what
this run left (drift). The operator's request is journaled before the first change, so a resume
continues the rollback instead of reporting the forward run's `completed`.

A run whose stores ended differently - some changed, others not (blocked) or restored - is `partial`
(exit 5, operator action needed), never "nothing changed".
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from migrator.aws.kms import AwsCallError
from migrator.aws.store_config import StoreConfig
from migrator.engine import machine
from migrator.engine.driver import Driver
from migrator.engine.errors import Blocked
from migrator.engine.results import worse
from migrator.engine.run_context import RunContext
from migrator.plan import KeystorePlan
from migrator.preflight.gate import same_store_findings

if TYPE_CHECKING:
    from migrator.journal.models import MigrationView, RunView
    from migrator.journal.repository import Journal

ROLLBACK_REQUESTED = "operator_rollback"  # note outcome: the operator asked to roll the whole run back
ROLLBACK_STOPPED = "operator_rollback_stopped"  # note outcome: refused or declined; the request ends here
# A later run's migration in one of these states never touched the store; one restored to its own
# original configuration (rolled_back) left exactly what this run left, which the drift check confirms.
UNTOUCHED = (*machine.UNCHANGED, "blocked", "rolled_back")
# States in which a store may be disconnected: a preflight of another store must not lengthen that window.
IN_WINDOW = tuple(s for s in machine.STATES if s not in machine.UNCHANGED and not machine.row(s).terminal)
Locker = Callable[[str, int], str | None]  # lock(store id, migration id): None, or who holds it


def outcome_before(request: Mapping[str, object]) -> tuple[str, int]:
    """The run's outcome and exit code before the rollback was requested (what stands if it changes nothing)."""
    code = request.get("exit_code")
    return str(request.get("run_outcome") or "completed"), code if isinstance(code, int) else 0


class WholeRun:
    """The stores of one run. The runner reads `drivers` (last looks) and `keep_run` afterwards."""

    def __init__(self, ctx: RunContext, migrations: Sequence[MigrationView], keystores: Mapping[str, KeystorePlan],
                 lock: Locker):
        self.ctx, self.migrations, self.keystores, self.lock = ctx, list(migrations), keystores, lock
        self.drivers: dict[int, Driver] = {}
        # The run's own (outcome, exit code) when this command changed nothing and must not overwrite it;
        # `reopened` says whether the run row was marked running (and so must be given that outcome back).
        self.keep_run: tuple[str, int] | None = None
        self.reopened = True

    def _journal(self) -> Journal:
        return self.ctx.journal

    def _run(self) -> RunView:
        return self.ctx.journal_call(lambda: self._journal().get_run(self.ctx.run_id))

    def _error_of(self, mid: int) -> str | None:
        return self.ctx.journal_call(lambda: self._journal().get_migration(mid).error)

    def rollback_request(self) -> dict[str, object] | None:
        """The detail of the run's operator-rollback request still in force, or None (none, or it ended)."""
        note = self.ctx.journal_call(
            lambda: self._journal().latest_note(self.ctx.run_id, (ROLLBACK_REQUESTED, ROLLBACK_STOPPED)))
        return dict(note.detail) if note is not None and note.outcome == ROLLBACK_REQUESTED else None

    # -- forward -----------------------------------------------------------------------------------
    def forward(self) -> tuple[str, str]:
        """Preflight every store, then drive them in plan order; (outcome, message)."""
        todo = [m for m in self.migrations
                if not machine.row(m.state).terminal or (m.state == "stuck" and self.ctx.retry_stuck)]
        ids = {m.id: m.keystore_id or self._resolve(m) for m in self.migrations}
        if self._block_duplicates(todo, ids):
            return self.outcome()
        for m in self.migrations:  # every store of the run, as long as this runner drives any of it
            if (held := self._take(m, ids[m.id])) is not None:
                return "locked", held
        drivers = [self.drivers[m.id] for m in todo]
        if not any(d.state in IN_WINDOW for d in drivers):
            for d in drivers:
                if d.state in ("pending", "snapshotted") and d.run(stop_at=("preflighted",)) == "blocked":
                    why = self._error_of(d.mid)
                    return self._stop_unchanged(f"{d.ks.ref} blocked before the first disconnect, so no key store "
                                                f"of this run is changed: {why}")
        for d in drivers:
            final = d.run()
            if final != "completed":
                return self._stop_unchanged(f"not started: {d.store_id or d.ks.ref} ended {final}")
        return self.outcome()

    def _resolve(self, m: MigrationView) -> str | None:
        ks = self.keystores[m.keystore_ref]
        if ks.id:
            return ks.id
        with contextlib.suppress(AwsCallError):  # the snapshot step retries and reports it
            found = self.ctx.kms.find_store(name=ks.name)
            return found.id if found else None
        return None

    def _take(self, m: MigrationView, store_id: str | None) -> str | None:
        """Lock the store and make its Driver; who holds the lock when another runner does."""
        if store_id and (held := self.lock(store_id, m.id)) is not None:
            return held
        self.ctx.track(m.id, m.api_calls)
        self.drivers[m.id] = Driver(self.ctx, m, self.keystores[m.keystore_ref])
        return None

    def _block_duplicates(self, todo: Sequence[MigrationView], ids: Mapping[int, str | None]) -> bool:
        """The same store named twice: journal the finding on both entries and block every unchanged store."""
        found = same_store_findings([(m.keystore_ref, m.keystore_id or ids.get(m.id)) for m in self.migrations])
        if not found:
            return False
        for index, f in sorted(found.items()):
            self.ctx.record(self.migrations[index].id, kind="finding", outcome=f.status,
                            detail={"check": f.check, "message": f.message, "remedy": f.remedy})
        reason = "; ".join(sorted({f"{f.check}: {f.message}" for f in found.values()}))
        for m in todo:
            if m.state in machine.UNCHANGED:
                self.ctx.track(m.id, m.api_calls)
                Driver(self.ctx, m, self.keystores[m.keystore_ref]).stop_unchanged(reason)
        return True

    def _stop_unchanged(self, reason: str) -> tuple[str, str]:
        """Every store of the run not changed yet ends `blocked` with `reason`; then the run's outcome."""
        for d in self.drivers.values():
            if d.state in machine.UNCHANGED:
                d.stop_unchanged(reason)
        return self.outcome()

    # -- operator rollback -----------------------------------------------------------------------------
    def roll_back(self, before: tuple[str, int], reopen: Callable[[], None] | None = None) -> tuple[str, str]:
        """Every store the run changed, in reverse order. `reopen` (the `rollback` command; None: a resume of
        it) marks the run running again once the checks pass; `before` is the run's outcome until then."""
        todo = [m for m in reversed(self.migrations) if m.state in ("completed", "rolling_back", "stuck")]
        if reopen is not None:
            self.keep_run, self.reopened = before, False
        for m in todo:
            if (held := self._take(m, m.keystore_id)) is not None:
                return "locked", held
        if reopen is not None:
            refusals = [why for m in todo if m.state == "completed" and (why := self._refusal(m))]
            if refusals:
                reason = "operator rollback refused, nothing was changed: " + "; ".join(refusals)
                self.ctx.record(None, kind="note", outcome=ROLLBACK_STOPPED, detail={"message": reason})
                return "blocked", reason
            reopen()
            self.keep_run, self.reopened = None, True
            self.ctx.record(None, kind="note", outcome=ROLLBACK_REQUESTED, detail={
                "message": "operator rollback: every key store the run changed, in reverse order",
                "by": self.ctx.who, "keystores": [m.keystore_id for m in todo], "run_outcome": before[0],
                "exit_code": before[1], "pid": os.getpid(), "host": socket.gethostname()})
        for m in todo:
            d = self.drivers[m.id]
            if d.state == "completed":
                why = self._refusal(m)
                if why is None:
                    try:
                        d.enter_operator_rollback()
                    except Blocked as exc:
                        why = str(exc)
                if why is not None:
                    return self._rollback_stopped(why, before)
            if d.run() != "rolled_back":
                break
        return self.outcome()

    def _refusal(self, m: MigrationView) -> str | None:
        """Why rolling `m` back would undo a change this run did not make (a later run, drift), or None."""
        store_id, run_id = m.keystore_id or m.keystore_ref, self.ctx.run_id
        later = [x for x in self.ctx.journal_call(lambda: self._journal().later_migrations(run_id, store_id))
                 if x.state not in UNTOUCHED]
        if later:
            runs = ", ".join(f"{x.run_id} ({x.state})" for x in later)
            return (f"{store_id}: a later run changed this key store since {run_id}: {runs}; rolling back {run_id} "
                    "would overwrite what that run put in place (roll that run back first, or plan a new run)")
        if not m.snapshot:
            return f"{store_id}: the journal holds no snapshot to restore"
        left = StoreConfig.for_target(self.keystores[m.keystore_ref].target, StoreConfig.from_dict(m.snapshot))
        try:
            live = self.ctx.kms.describe(store_id)
        except AwsCallError as exc:
            return f"{store_id}: cannot observe the key store before its rollback: {exc}"
        if not live.config.matches(left):
            return (f"{store_id} drifted since {run_id}: {left.describe_diff(live.config)}; the run left "
                    f"{_shown(left)}, the key store holds {_shown(live.config)}")
        return None

    def _rollback_stopped(self, why: str, before: tuple[str, int]) -> tuple[str, str]:
        self.ctx.record(None, kind="note", outcome=ROLLBACK_STOPPED, detail={"message": why})
        run = self._run()
        if not any(m.attempts.get("operator_rollback") for m in run.migrations):
            self.keep_run = before  # nothing was rolled back: the run's own outcome stands
            return "blocked", why
        outcome, message = self.outcome()
        return outcome, f"{why}; {message}" if message else why

    # -- the run's outcome -----------------------------------------------------------------------------
    def outcome(self) -> tuple[str, str]:
        """The worst store's outcome, or `partial` when some stores changed and others did not."""
        run = self._run()
        worst = "completed"
        for m in run.migrations:
            worst = worse(worst, m.state if machine.row(m.state).terminal else "interrupted")
        states = {m.state for m in run.migrations}
        if "completed" in states and worst in ("blocked", "rolled_back"):
            return "partial", partial_message(run.id, run.migrations)
        return worst, ""


def partial_message(run_id: str, migrations: Sequence[MigrationView]) -> str:
    """Which stores changed and which did not, and the way out."""
    def names(state: str, with_error: bool = False) -> str:
        return ", ".join((m.keystore_id or m.keystore_ref) + (f" ({m.error})" if with_error and m.error else "")
                         for m in migrations if m.state == state)

    parts = [f"changed, now on the plan's target: {names('completed')}"]
    if restored := names("rolled_back"):
        parts.append(f"restored to the original configuration: {restored}")
    if unchanged := names("blocked", with_error=True):
        parts.append(f"never changed: {unchanged}")
    return (f"partial: some key stores of the run changed and some did not; {'; '.join(parts)}. "
            f"`xksmigrate rollback {run_id}` returns the changed ones to their original configuration")


def _shown(config: StoreConfig) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if v) + "}"
