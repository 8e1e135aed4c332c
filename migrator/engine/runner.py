"""Runs a plan: one run, one lock per key store, one Driver per store, a summary at the end.

The engine knows nothing of the command line (the CLI builds an `Environment`) and nothing of the
rehearsal world (it only sees an AWS endpoint). `start` records the run before touching AWS;
`resume` rebuilds the plan from the journal's copy of the plan text and continues every store from
its persisted state; `rollback` starts a run of its own that takes back what another run changed
(whole_run.py). All end with the same `RunResult`, which names the runs it is linked to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from migrator.aws.store_config import Observation, StoreConfig
from migrator.engine import machine, runbook, whole_run
from migrator.engine.clock import leave_signals_to_the_main_thread
from migrator.engine.environment import Environment, Observer
from migrator.engine.errors import JournalLostStop, LockLostStop
from migrator.engine.journal_summary import store_budget
from migrator.engine.results import (
    CONFIG_KEYS,
    EXIT_CODES,
    RunResult,
    StoreResult,
    cell_of,
    original_view,
    verify_key_ids,
)
from migrator.engine.run_context import RunContext
from migrator.plan import KeystorePlan, Plan

if TYPE_CHECKING:
    from migrator.journal.models import EventView, LockInfo, MigrationView

__all__ = ["CONFIG_KEYS", "Environment", "Observer", "RunResult", "StoreResult", "resume", "rollback", "start"]

FORWARD_ONLY = ("postpone", "postpone_flag_file", "cutover_at")  # a forward run's options a rollback run drops
LOCK_PROBE_SECONDS = 1.0  # between heartbeats, how often the heartbeat thread asks whether the locks still hold
_T = TypeVar("_T")


def start(plan: Plan, env: Environment, run_id: str | None = None) -> RunResult:
    """Record a new run of `plan` with its stores (one transaction: a run is never found without them), then
    drive it. `run_id`: the id to record it under (a fleet's store), else a new one."""
    seed = [{"keystore_ref": ks.ref, "target": _target_record(ks)} for ks in plan.keystores]
    run_id = env.journal.create_run(
        plan_name=plan.name, plan_path=plan.path, plan_text=plan.text, plan_fingerprint=plan.fingerprint,
        region=plan.region, account_id=plan.account_id, dry_run=env.dry_run, who=env.who,
        host=socket.gethostname(), pid=os.getpid(), options=_run_options(env), seed=seed, run_id=run_id)
    return _drive(plan, env, run_id)


def resume(plan: Plan, env: Environment, run_id: str) -> RunResult:
    """Continue `run_id` from the persisted state of each store (the plan comes from the journal)."""
    env.journal.reopen_run(run_id)
    return _drive(plan, env, run_id, resumed=True)


def rollback(plan: Plan, env: Environment, run_id: str) -> RunResult:
    """A new run that returns every store `run_id` changed (and no rollback restored since) to its recorded
    original configuration, verified, in reverse order; `run_id`'s own record stays as it is.

    The new run records `run_id`'s options (what a resume re-derives) plus `rolls_back`, and starts with a copy
    of each such store as `run_id` left it, so `resume` continues it like any run. Refused with nothing
    changed (blocked) when a later run changed one of them since or one drifted (whole_run.py).
    """
    undone = env.journal.get_run(run_id)
    options = {k: v for k, v in (undone.options or {}).items() if k not in FORWARD_ONLY}
    options.update(time_scale=env.clock.scale, rolls_back=run_id)
    seed = [{"keystore_ref": m.keystore_ref, "keystore_id": m.keystore_id, "state": "completed",
             "snapshot": m.snapshot, "target": m.target} for m in whole_run.still_changed(env.journal, undone)]
    new_id = env.journal.create_run(
        plan_name=undone.plan_name, plan_path=undone.plan_path, plan_text=undone.plan_text,
        plan_fingerprint=undone.plan_fingerprint, region=undone.region, account_id=undone.account_id,
        dry_run=env.dry_run, who=env.who, host=socket.gethostname(), pid=os.getpid(), options=options, seed=seed)
    return _drive(plan, env, new_id)


@dataclasses.dataclass
class LinkedResult(RunResult):
    """A `RunResult` that names the run it rolls back and the run that rolled it back (None: none)."""

    rolls_back: str | None = None
    rolled_back_by: str | None = None

    def summary(self) -> dict[str, object]:
        return {**super().summary(), "rolls_back": self.rolls_back, "rolled_back_by": self.rolled_back_by}


def _run_options(env: Environment) -> dict[str, object]:
    options: dict[str, object] = {**env.run_facts, "time_scale": env.clock.scale}
    if env.postpone:
        options["postpone"] = True
    if env.postpone_flag_file:
        options["postpone_flag_file"] = os.path.abspath(env.postpone_flag_file)
    if env.cutover_at:
        options["cutover_at"] = env.cutover_at
    return options


def _target_record(ks: KeystorePlan) -> dict[str, object]:
    t = ks.target
    record: dict[str, object] = {k: v for k, v in t.as_config().items() if v is not None}
    record.update({k: v for k, v in (("region", ks.region), ("account_id", ks.account_id)) if v})  # the cell
    if t.credential:
        record["credential_secret"] = t.credential.secret_ref  # the reference, never the value
    return record


class _Heartbeat:
    """Keeps this runner's locks fresh; a lock found gone marks `ctx` lock-lost (no further AWS call).

    Besides the beat (`heartbeat_seconds`) it probes the locks every LOCK_PROBE_SECONDS, and `check` lets
    the run ask before every AWS call: a PostgreSQL session can die between two beats.
    """

    def __init__(self, env: Environment, ctx: RunContext):
        self.env, self.ctx = env, ctx
        self.locks: list[LockInfo] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        ctx.lock_check = self.check

    def check(self) -> None:
        """LockLost unless every lock this runner took is still held."""
        for lock in list(self.locks):
            self.env.journal.check_lock(lock)

    def hold(self, lock: LockInfo) -> None:
        self.locks.append(lock)
        if not self._thread.is_alive():
            self._thread.start()

    def _beat(self) -> None:
        from migrator.journal.models import LockLost

        leave_signals_to_the_main_thread()
        next_beat = time.monotonic() + self.env.heartbeat_seconds
        while not self._stop.wait(min(LOCK_PROBE_SECONDS, self.env.heartbeat_seconds)):
            beat = time.monotonic() >= next_beat
            if beat:
                next_beat = time.monotonic() + self.env.heartbeat_seconds
            for lock in list(self.locks):
                try:
                    (self.env.journal.heartbeat if beat else self.env.journal.check_lock)(lock)
                except LockLost as exc:
                    self.ctx.mark_lock_lost(str(exc))
                except Exception:  # a passing database hiccup: the next beat tries again
                    pass

    def release_all(self) -> None:
        self._stop.set()
        for lock in self.locks:
            with contextlib.suppress(Exception):
                self.env.journal.release_lock(lock)


def _drive(plan: Plan, env: Environment, run_id: str, resumed: bool = False) -> RunResult:
    from migrator.journal.db import JournalUnavailable

    run = env.journal.get_run(run_id)
    ctx = RunContext(env, plan, run_id, options=dict(run.options or {}))
    heartbeat = _Heartbeat(env, ctx)

    def lock(store_id: str, mid: int) -> str | None:
        held, held_message = _lock(env, ctx, run_id, store_id, mid)
        if held is not None:
            heartbeat.hold(held)
        return None if held is not None else held_message

    whole = whole_run.WholeRun(ctx, run.migrations, {ks.ref: ks for ks in plan.keystores}, lock)
    last_seen: dict[int, Observation] = {}
    outcome, message = "completed", ""
    try:
        if resumed:
            ctx.record(None, kind="note", detail={"message": "resumed", "pid": os.getpid(),
                                                  "host": socket.gethostname()})
        if undone := str((run.options or {}).get("rolls_back") or ""):  # a rollback run, new or resumed
            outcome, message = whole.roll_back(undone, first=not resumed)
        else:
            outcome, message = whole.forward()
    except KeyboardInterrupt:
        outcome, message = "interrupted", "interrupted; the run can be resumed with: xksmigrate resume " + run_id
        _if_journal_works(ctx, lambda: ctx.record(None, kind="note", outcome="interrupted",
                                                  detail={"message": message}))
    except JournalLostStop:
        outcome = "interrupted"  # the message comes from ctx.journal_lost, below
    except JournalUnavailable as exc:  # a journal read made outside RunContext: the same stop
        outcome, ctx.journal_lost = "interrupted", str(exc)
    except LockLostStop:
        outcome = "interrupted"
        message = (f"{ctx.lock_lost_reason or 'this runner lost its lock'}; the run stopped before its next AWS call. "
                   f"Check `xksmigrate status {run_id}`, then continue with: xksmigrate resume {run_id}")
        _if_journal_works(ctx, lambda: ctx.record(None, kind="note", outcome="lock_lost",
                                                  detail={"message": message}))
    finally:
        heartbeat.release_all()
        last_seen.update({d.mid: d.last_seen for d in whole.drivers.values() if d.last_seen is not None})
    exit_code = EXIT_CODES.get(outcome, 1)
    if not (resumed and outcome == "locked"):  # the lock holder drives this run: its outcome is not ours to end
        _if_journal_works(ctx, lambda: env.journal.finish_run(run_id, outcome, exit_code))
    views = _if_journal_works(ctx, lambda: list(env.journal.get_run(run_id).migrations))
    if ctx.journal_lost is not None:  # it stopped at the write that failed: resumable, whatever came before
        outcome, exit_code, message = "interrupted", EXIT_CODES["interrupted"], _journal_lost_message(ctx, run_id)
        views = [ctx.as_journaled(m) for m in run.migrations]  # the journal's last word, from memory
    return _result(ctx, run_id, outcome, exit_code, message, last_seen, views or [])


def _if_journal_works(ctx: RunContext, work: Callable[[], _T]) -> _T | None:
    """`work` (a journal call) unless the journal is unusable (then ctx.journal_lost says why)."""
    try:
        return ctx.journal_call(work)
    except JournalLostStop:
        return None


def _journal_lost_message(ctx: RunContext, run_id: str) -> str:
    lock = f"; the run's lock is gone too: {ctx.lock_lost_reason}" if ctx.lock_lost_reason else ""
    return (f"{ctx.journal_lost}{lock}. The run stopped there, before its next AWS call, so AWS saw "
            "nothing the journal does not show. Each store below stands where the journal last recorded it "
            "(the journal may still say this run is running); one in the window may still be disconnected, its "
            f"keys unusable. Once the journal can be written again: xksmigrate resume {run_id}")


def _lock(env: Environment, ctx: RunContext, run_id: str, store_id: str,
          mid: int) -> tuple[LockInfo | None, str]:
    """This runner's lock on the store, or (None, why) when another runner holds it."""
    from migrator.journal.models import LockHeld

    try:
        lock = ctx.journal_call(lambda: env.journal.acquire_lock(f"keystore/{ctx.plan.region}/{store_id}",
                                                                 run_id=run_id, owner=env.who))
    except LockHeld as held:
        ctx.record(mid, kind="note", outcome="locked", detail={"message": str(held)})
        return None, str(held)
    if lock.reclaimed_from:
        ctx.record(mid, kind="note", detail={"message": f"reclaimed lock of a dead runner ({lock.reclaimed_from})"})
    return lock, ""


def _config_view(config: StoreConfig) -> dict[str, object]:
    values = config.to_dict()
    return {k: values[k] for k in CONFIG_KEYS}


def _store_result(ctx: RunContext, m: MigrationView, last: Observation | None,
                  events: list[EventView] | None) -> StoreResult:
    if last is None and m.keystore_id and m.state in ("completed", "rolled_back") and ctx.may_call_aws:
        with contextlib.suppress(Exception):
            last = ctx.kms_for(m.keystore_ref).describe(m.keystore_id)
    original_config = StoreConfig.from_dict(m.snapshot) if m.snapshot else None
    original = original_view(m.snapshot)
    final = _config_view(last.config) if last else None
    if final is None and m.state == "blocked":  # nothing changed: the snapshot is the last look
        final = original
    store_outcome = m.outcome or (m.state if m.state in machine.TERMINAL else "unfinished")
    window = m.window_seconds
    if window is None and m.disconnected_at is not None:  # still disconnected (stuck, interrupted)
        window = round(ctx.clock.elapsed(m.disconnected_at), 3)
    facts = None  # the journal's account of the budget (engine/budget.py); a lost journal: the window alone
    if events is not None:
        facts = store_budget(m, events, scale=ctx.clock.scale, now=ctx.clock.now(), fallback=ctx.plan.max_disconnected)
    region = cell_of(m.target)["region"] or ctx.plan.region
    manual = (runbook.stuck_help(region, m.keystore_id or m.keystore_ref, original_config, last)
              if m.state == "stuck" else None)
    error = m.error
    if store_outcome == "unfinished" and not ctx.may_call_aws:  # stopped by a lost journal or lock
        error = _where_it_stands(m, last)
    return StoreResult(ref=m.keystore_ref, id=m.keystore_id or "", state=m.state, outcome=store_outcome,
                       original=original, final=final, disconnected_seconds=window,
                       api_calls=dict(m.api_calls or {}), error=error, manual=manual, budget=facts,
                       verify_key_ids=verify_key_ids(m.snapshot), **cell_of(m.target))


def _where_it_stands(m: MigrationView, last: Observation | None) -> str:
    """For a store the run left unfinished: its last journaled state and whether it may be disconnected."""
    seen = f"last seen {last.state}" if last is not None else "not seen by this process"
    if m.disconnected_at is None:
        return f"the journal last recorded it as {m.state} ({seen}); nothing was disconnected"
    return (f"the journal last recorded it as {m.state} ({seen}): it may still be disconnected, its keys unusable, "
            "until the run is resumed")


def _result(ctx: RunContext, run_id: str, outcome: str, exit_code: int, message: str,
            last_seen: dict[int, Observation], migrations: list[MigrationView]) -> RunResult:
    events = None if ctx.journal_lost is not None else _if_journal_works(ctx, lambda: ctx.env.journal.events(run_id))
    stores = [_store_result(ctx, m, last_seen.get(m.id), events) for m in migrations]
    if not message:
        message = next((s.error for s in stores if s.error), "") or outcome
    links: dict[str, str | None] = {"rolls_back": str(ctx.options.get("rolls_back") or "") or None}
    if ctx.journal_lost is None:  # else the run's own options say what it rolls back
        journal = ctx.env.journal
        links = _if_journal_works(ctx, lambda: whole_run.run_links(journal, journal.get_run(run_id))) or links
    return LinkedResult(run_id, outcome, exit_code, stores, message, simulated=ctx.clock.simulated, **links)
