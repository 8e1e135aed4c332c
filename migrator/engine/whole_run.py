"""How the key stores of one run are driven together (engine/runner.py starts, resumes and ends the run).

Forward: every store the run still has to change is snapshotted and preflighted before the first
disconnect, so a block on any store stops the whole run with nothing changed; the same store named
twice in a plan (once by id, once by name) blocks even before that. Then the stores go one at a time in
plan order, and none starts after one that did not complete.

Operator rollback (`xksmigrate rollback RUN_ID`) is a run of its own, linked both ways: its options say
`rolls_back: RUN_ID`, and RUN_ID gets a `rolled_back_by` note before the first change; RUN_ID's own record
(its stores `completed`, its windows) is never touched. The rollback run starts with a copy of every store
RUN_ID left changed (`completed`, RUN_ID's snapshot and target) and takes them back in reverse order. It
is refused with nothing changed (every store `blocked`, exit 3) when a later run changed one of those
stores since, when a store no longer holds what RUN_ID left (drift), or when the operator declines. Its
options say what it is, so `resume` continues it like any run.

A run whose stores ended differently - some changed, others not (blocked) or restored - is `partial`
(exit 5, operator action needed), never "nothing changed".
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
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
from migrator.preflight.base import NO_CHANGES
from migrator.preflight.gate import same_store_findings

if TYPE_CHECKING:
    from migrator.journal.models import MigrationView, RunView
    from migrator.journal.repository import Journal

ROLLBACK_REQUESTED = "operator_rollback"  # rollback run's note: its checks passed, its changes start
ROLLBACK_STOPPED = "operator_rollback_stopped"  # rollback run's note: refused or declined; it ends here
ROLLED_BACK_BY = "rolled_back_by"  # the undone run's note: detail {run_id, by, at}
UNFINISHED_ROLLBACK = ("running", "interrupted", "failed", "stuck")  # a rollback run that still holds its stores
# A later run's migration in one of these states never touched the store; one restored to its own
# original configuration (rolled_back) left exactly what this run left, which the drift check confirms.
UNTOUCHED = (*machine.UNCHANGED, "blocked", "rolled_back")
# States in which a store may be disconnected: a preflight of another store must not lengthen that window.
IN_WINDOW = tuple(s for s in machine.STATES if s not in machine.UNCHANGED and not machine.row(s).terminal)
Locker = Callable[[str, int], str | None]  # lock(store id, migration id): None, or who holds it


def restored_stores(journal: Journal, run_id: str) -> set[str]:
    """The key stores of `run_id` that a rollback run of it has restored (rolled_back) since."""
    return {m.keystore_id or m.keystore_ref for r in journal.rollbacks_of(run_id) for m in r.migrations
            if m.state == "rolled_back"}


def still_changed(journal: Journal, run: RunView) -> list[MigrationView]:
    """The stores `run` left changed (completed) that no rollback of it has restored: what a rollback takes back."""
    restored = restored_stores(journal, run.id)
    return [m for m in run.migrations if m.state == "completed" and (m.keystore_id or m.keystore_ref) not in restored]


def run_links(journal: Journal, run: RunView) -> dict[str, str | None]:
    """`rolls_back` (the run this one rolls back) and `rolled_back_by` (the latest run that rolled it back)."""
    rolls_back = (run.options or {}).get("rolls_back")
    note = journal.latest_note(run.id, (ROLLED_BACK_BY,))
    by = note.detail.get("run_id") if note is not None else None
    return {"rolls_back": str(rolls_back) if rolls_back else None, "rolled_back_by": str(by) if by else None}


def rolled_back_message(undone: str) -> str:
    return f"rolled back {undone}: every key store it changed is on its original configuration again, verified"


class WholeRun:
    """The stores of one run. The runner reads `drivers` (last looks) afterwards."""

    def __init__(self, ctx: RunContext, migrations: Sequence[MigrationView], keystores: Mapping[str, KeystorePlan],
                 lock: Locker):
        self.ctx, self.migrations, self.keystores, self.lock = ctx, list(migrations), keystores, lock
        self.drivers: dict[int, Driver] = {}

    def _journal(self) -> Journal:
        return self.ctx.journal

    def _run(self) -> RunView:
        return self.ctx.journal_call(lambda: self._journal().get_run(self.ctx.run_id))

    def _outcome_of(self, mid: int) -> str | None:
        return next((m.outcome for m in self._run().migrations if m.id == mid), None)

    def _error_of(self, mid: int) -> str | None:
        return self.ctx.journal_call(lambda: self._journal().get_migration(mid).error)

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
                    if self._outcome_of(d.mid) == "no_changes":  # the others are still preflighted
                        continue
                    why = self._error_of(d.mid)
                    return self._stop_unchanged(f"{d.ks.ref} blocked before the first disconnect, so no key store "
                                                f"of this run is changed: {why}")
            if already := [d.store_id or d.ks.ref for d in drivers if self._outcome_of(d.mid) == "no_changes"]:
                return self._stop_unchanged(  # as `plan` says: a plan that would change only some is blocked
                    f"{', '.join(already)} already {'has' if len(already) == 1 else 'have'} the target "
                    "configuration: drop it from the plan to change the others; no key store of this run is changed")
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
            found = self.ctx.kms_for(ks).find_store(name=ks.name)
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

    # -- operator rollback: this run rolls back another ------------------------------------------------
    def roll_back(self, undone: str, first: bool) -> tuple[str, str]:
        """Every store of this rollback run, in reverse order of `undone`'s plan; `first`: the `rollback` command
        (a resume: False). Locks and checks come first; then the request and the link, then the changes."""
        todo = [m for m in reversed(self.migrations) if m.state in ("completed", "rolling_back", "stuck")]
        if not todo:
            return self.outcome()
        for m in todo:
            if (held := self._take(m, m.keystore_id)) is not None:
                if first:  # another runner has the store: this rollback never started
                    self._leave_unchanged(f"not rolled back, nothing was changed: {held}")
                return "locked", held
        if self._stopped():  # refused or declined before a kill: it ends as it was going to
            return self._rollback_stopped(None)
        refusals = [why for m in todo if m.state == "completed" and (why := self._refusal(m, undone))]
        if refusals:
            untouched = all(m.state == "completed" for m in todo)
            return self._rollback_stopped(f"operator rollback of {undone} refused"
                                          + (", nothing was changed: " if untouched else ": ") + "; ".join(refusals))
        self._request(undone, todo)
        for m in todo:
            d = self.drivers[m.id]
            if d.state == "completed":
                why = self._refusal(m, undone)  # again: an earlier store's rollback took minutes
                if why is None:
                    try:
                        d.enter_operator_rollback()
                    except Blocked as exc:
                        why = str(exc)
                if why is not None:
                    return self._rollback_stopped(why)
            self._link(undone)  # the operator said yes: before the first AWS change, `undone` names this run
            if d.run() != "rolled_back":  # stuck: the stores after it wait for `resume --retry-stuck`
                break
        return self.outcome()

    def _request(self, undone: str, todo: Sequence[MigrationView]) -> None:
        """The checks passed: this run's request, journaled once (a resume finds it)."""
        journal, run_id = self._journal(), self.ctx.run_id
        if self.ctx.journal_call(lambda: journal.latest_note(run_id, (ROLLBACK_REQUESTED,))) is None:
            self.ctx.record(None, kind="note", outcome=ROLLBACK_REQUESTED, detail={
                "message": f"operator rollback of {undone}: every key store it changed, in reverse order",
                "rolls_back": undone, "by": self.ctx.who, "keystores": [m.keystore_id for m in todo],
                "pid": os.getpid(), "host": socket.gethostname()})

    def _link(self, undone: str) -> None:
        """`undone`'s note naming this run, journaled once: `status`/`history` of `undone` say who rolled it back.
        Not before the operator's yes, so a declined or refused rollback leaves `undone`'s record as it was."""
        journal, run_id = self._journal(), self.ctx.run_id
        link = self.ctx.journal_call(lambda: journal.latest_note(undone, (ROLLED_BACK_BY,)))
        if link is None or link.detail.get("run_id") != run_id:
            self.ctx.journal_call(lambda: journal.record(undone, kind="note", outcome=ROLLED_BACK_BY, detail={
                "run_id": run_id, "by": self.ctx.who, "at": time.time(),
                "message": f"rolled back by {run_id} (xksmigrate status {run_id})"}))

    def _stopped(self) -> bool:
        note = self.ctx.journal_call(
            lambda: self._journal().latest_note(self.ctx.run_id, (ROLLBACK_REQUESTED, ROLLBACK_STOPPED)))
        return note is not None and note.outcome == ROLLBACK_STOPPED

    def _refusal(self, m: MigrationView, undone: str) -> str | None:
        """Why rolling `m` back would undo a change `undone` did not make (a later run, drift), or None."""
        store_id, journal = m.keystore_id or m.keystore_ref, self._journal()
        later = [x for x in self.ctx.journal_call(lambda: journal.later_migrations(undone, store_id,
                                                                                   exclude=self.ctx.run_id))
                 if x.state not in UNTOUCHED]
        if later:
            mine = {r.id for r in self.ctx.journal_call(lambda: journal.rollbacks_of(undone))}
            if under_way := [x.run_id for x in later if x.run_id in mine]:
                return (f"{store_id}: {under_way[0]}, a rollback of {undone}, has not finished; continue it with: "
                        f"xksmigrate resume {under_way[0]}")
            later = [x for x in later if x.state != "completed" or store_id not in self._restored(x.run_id)]
        if later:
            runs = ", ".join(f"{x.run_id} ({x.state})" for x in later)
            return (f"{store_id}: a later run changed this key store since {undone}: {runs}; rolling back {undone} "
                    "would overwrite what that run put in place (roll that run back first, or plan a new run)")
        if not m.snapshot:
            return f"{store_id}: the journal holds no snapshot to restore"
        left = StoreConfig.for_target(self.keystores[m.keystore_ref].target, StoreConfig.from_dict(m.snapshot))
        try:
            live = self.ctx.kms_for(m.keystore_ref).describe(store_id)
        except AwsCallError as exc:
            return f"{store_id}: cannot observe the key store before its rollback: {exc}"
        if not live.config.matches(left):
            return (f"{store_id} drifted since {undone}: {left.describe_diff(live.config)}; the run left "
                    f"{_shown(left)}, the key store holds {_shown(live.config)}")
        return None

    def _restored(self, run_id: str) -> set[str]:
        return self.ctx.journal_call(lambda: restored_stores(self._journal(), run_id))

    def _rollback_stopped(self, why: str | None) -> tuple[str, str]:
        """Refused or declined (`why`; None: journaled before a kill): every store not rolled back yet ends
        `blocked` (this run changed nothing there), and the run's outcome follows from its stores."""
        if why is not None:
            self.ctx.record(None, kind="note", outcome=ROLLBACK_STOPPED, detail={"message": why})
        else:
            note = self.ctx.journal_call(lambda: self._journal().latest_note(self.ctx.run_id, (ROLLBACK_STOPPED,)))
            why = str(note.detail.get("message") if note is not None else "operator rollback stopped")
        self._leave_unchanged(why)
        outcome, message = self.outcome()
        return outcome, message or why

    def _leave_unchanged(self, reason: str) -> None:
        """The stores this rollback run has not touched (still as the undone run left them) end `blocked`."""
        for m in self._run().migrations:
            if m.state == "completed":
                self.ctx.transition(m.id, "completed", "blocked", outcome="blocked", error=reason,
                                    detail={"reason": reason})

    # -- the run's outcome -----------------------------------------------------------------------------
    def outcome(self) -> tuple[str, str]:
        """The worst store's outcome, or `partial` when some stores changed and others did not."""
        run = self._run()
        undone = (run.options or {}).get("rolls_back")
        worst = "completed"
        for m in run.migrations:
            worst = worse(worst, m.state if machine.row(m.state).terminal else "interrupted")
        states = {m.state for m in run.migrations}
        if undone:  # a rollback run: its changed stores are rolled_back, the untouched ones blocked
            if {"rolled_back", "blocked"} <= states and worst in ("blocked", "rolled_back"):
                return "partial", partial_message(run.id, run.migrations, str(undone))
            if not run.migrations:
                return "blocked", f"nothing to roll back: {undone} left no key store changed"
            return worst, rolled_back_message(str(undone)) if worst == "rolled_back" else ""
        if run.migrations and all(m.outcome == "no_changes" for m in run.migrations):
            return "no_changes", no_changes_message(run.migrations)
        if "completed" in states and worst in ("blocked", "rolled_back"):
            return "partial", partial_message(run.id, run.migrations)
        return worst, ""


def no_changes_message(migrations: Sequence[MigrationView]) -> str:
    return NO_CHANGES + ("" if len(migrations) == 1 else " (every key store of the plan)")


def partial_message(run_id: str, migrations: Sequence[MigrationView], rolls_back: str | None = None) -> str:
    """Which stores changed and which did not, and the way out (`rolls_back`: of a rollback run of that run)."""
    def names(state: str, with_error: bool = False) -> str:
        return ", ".join((m.keystore_id or m.keystore_ref) + (f" ({m.error})" if with_error and m.error else "")
                         for m in migrations if m.state == state)

    if rolls_back:
        return (f"partial: the rollback of {rolls_back} restored some key stores and not others; restored to the "
                f"original configuration: {names('rolled_back')}; not rolled back, still as {rolls_back} left them: "
                f"{names('blocked', with_error=True)}. Once the reason is dealt with, `xksmigrate rollback "
                f"{rolls_back}` takes back the rest")
    parts = [f"changed, now on the plan's target: {names('completed')}"]
    if restored := names("rolled_back"):
        parts.append(f"restored to the original configuration: {restored}")
    if unchanged := names("blocked", with_error=True):
        parts.append(f"never changed: {unchanged}")
    return (f"partial: some key stores of the run changed and some did not; {'; '.join(parts)}. "
            f"`xksmigrate rollback {run_id}` returns the changed ones to their original configuration")


def _shown(config: StoreConfig) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if v) + "}"
