"""Runs a plan: one run, one lock per key store, one Driver per store, a summary at the end.

The engine knows nothing of the command line (the CLI builds an `Environment`) and nothing of the
rehearsal world (it only sees an AWS endpoint). `start` records the run before touching AWS;
`resume` rebuilds the plan from the journal's copy of the plan text and continues every store from
its persisted state; both end with the same `RunResult`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import TYPE_CHECKING

from migrator.aws.store_config import Observation, StoreConfig
from migrator.engine import machine, runbook
from migrator.engine.driver import Driver
from migrator.engine.environment import Environment, Observer
from migrator.engine.errors import Blocked, LockLostStop
from migrator.engine.results import EXIT_CODES, RunResult, StoreResult, worse
from migrator.engine.run_context import RunContext
from migrator.plan import KeystorePlan, Plan

if TYPE_CHECKING:
    from migrator.journal.models import LockInfo, MigrationView

__all__ = ["Environment", "Observer", "RunResult", "StoreResult", "resume", "rollback", "start"]

# The configuration fields a summary shows for `original` and `final`.
CONFIG_KEYS = ("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name", "access_key_id")


def start(plan: Plan, env: Environment) -> RunResult:
    """Record a new run of `plan`, then drive it."""
    run_id = env.journal.create_run(
        plan_name=plan.name, plan_path=plan.path, plan_text=plan.text, plan_fingerprint=plan.fingerprint,
        region=plan.region, account_id=plan.account_id, dry_run=env.dry_run, who=env.who,
        host=socket.gethostname(), pid=os.getpid(), options=_run_options(env))
    for ks in plan.keystores:
        env.journal.add_migration(run_id, ks.ref, _target_record(ks))
    return _drive(plan, env, run_id)


def resume(plan: Plan, env: Environment, run_id: str) -> RunResult:
    """Continue `run_id` from the persisted state of each store (the plan comes from the journal)."""
    env.journal.reopen_run(run_id)
    return _drive(plan, env, run_id, resumed=True)


def rollback(plan: Plan, env: Environment, run_id: str) -> RunResult:
    """Return the completed stores of `run_id` to their recorded original configuration, verified."""
    env.journal.reopen_run(run_id)
    return _drive(plan, env, run_id, resumed=True, operator_rollback=True)


def _run_options(env: Environment) -> dict[str, object]:
    options: dict[str, object] = {"time_scale": env.clock.scale}
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
    if t.credential:
        record["credential_secret"] = t.credential.secret_ref  # the reference, never the value
    return record


class _Heartbeat:
    """Keeps this runner's locks fresh; a lock found gone sets `ctx.lock_lost` (no further AWS call)."""

    def __init__(self, env: Environment, ctx: RunContext):
        self.env, self.ctx = env, ctx
        self.locks: list[LockInfo] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def hold(self, lock: LockInfo) -> None:
        self.locks.append(lock)
        if not self._thread.is_alive():
            self._thread.start()

    def _beat(self) -> None:
        from migrator.journal.models import LockLost

        while not self._stop.wait(self.env.heartbeat_seconds):
            for lock in list(self.locks):
                try:
                    self.env.journal.heartbeat(lock)
                except LockLost:
                    self.ctx.lock_lost = True
                except Exception:  # a passing database hiccup: the next beat tries again
                    pass

    def release_all(self) -> None:
        self._stop.set()
        for lock in self.locks:
            with contextlib.suppress(Exception):
                self.env.journal.release_lock(lock)


def _drive(plan: Plan, env: Environment, run_id: str, resumed: bool = False,
           operator_rollback: bool = False) -> RunResult:
    run = env.journal.get_run(run_id)
    ctx = RunContext(env, plan, run_id, options=dict(run.options or {}))
    migrations = list(run.migrations)
    if operator_rollback:  # undo in reverse order, and only what completed
        migrations = [m for m in reversed(migrations) if m.state == "completed"]
    by_ref = {ks.ref: ks for ks in plan.keystores}
    heartbeat = _Heartbeat(env, ctx)
    last_seen: dict[int, Observation] = {}
    outcome, message = "completed", ""
    driver: Driver | None = None
    try:
        if resumed:
            ctx.record(None, kind="note", detail={"message": "resumed", "pid": os.getpid(),
                                                  "host": socket.gethostname()})
        for migration in migrations:
            ks = by_ref[migration.keystore_ref]
            store_id = migration.keystore_id or _resolve_id(ctx, ks)
            if store_id:
                lock, held_message = _lock(env, ctx, run_id, store_id, migration.id)
                if lock is None:
                    outcome, message = "locked", held_message
                    break
                heartbeat.hold(lock)
            ctx.track(migration.id, migration.api_calls)
            driver = Driver(ctx, migration, ks)
            if operator_rollback:
                try:
                    driver.enter_operator_rollback()
                except Blocked as exc:
                    outcome, message = "blocked", str(exc)
                    break
            final = driver.run()
            if driver.last_seen is not None:
                last_seen[driver.mid] = driver.last_seen
            outcome = worse(outcome, final)
            if final != "completed":
                break  # never start the next store after one that did not complete
    except KeyboardInterrupt:
        outcome, message = "interrupted", "interrupted; the run can be resumed with: xksmigrate resume " + run_id
        ctx.record(None, kind="note", outcome="interrupted", detail={"message": message})
    except LockLostStop:
        outcome = "interrupted"
        message = ("this runner's lock was removed (xksmigrate unlock?) so it stopped before its next AWS call; "
                   f"check `xksmigrate status {run_id}` before resuming")
        ctx.record(None, kind="note", outcome="lock_lost", detail={"message": message})
    finally:
        heartbeat.release_all()
        if driver is not None and driver.last_seen is not None:  # the store an interruption stopped
            last_seen.setdefault(driver.mid, driver.last_seen)
    exit_code = EXIT_CODES.get(outcome, 1)
    if not (resumed and outcome == "locked"):  # the lock holder drives this run: its outcome is not ours to end
        env.journal.finish_run(run_id, outcome, exit_code)
    return _result(ctx, run_id, outcome, exit_code, message, last_seen)


def _resolve_id(ctx: RunContext, ks: KeystorePlan) -> str | None:
    if ks.id:
        return ks.id
    found = ctx.kms.find_store(name=ks.name)
    return found.id if found else None


def _lock(env: Environment, ctx: RunContext, run_id: str, store_id: str,
          mid: int) -> tuple[LockInfo | None, str]:
    """This runner's lock on the store, or (None, why) when another runner holds it."""
    from migrator.journal.models import LockHeld

    try:
        lock = env.journal.acquire_lock(f"keystore/{ctx.plan.region}/{store_id}", run_id=run_id, owner=env.who)
    except LockHeld as held:
        ctx.record(mid, kind="note", outcome="locked", detail={"message": str(held)})
        return None, str(held)
    if lock.reclaimed_from:
        ctx.record(mid, kind="note", detail={"message": f"reclaimed lock of a dead runner ({lock.reclaimed_from})"})
    return lock, ""


def _config_view(config: StoreConfig) -> dict[str, object]:
    values = config.to_dict()
    return {k: values[k] for k in CONFIG_KEYS}


def _store_result(ctx: RunContext, m: MigrationView, last: Observation | None) -> StoreResult:
    if last is None and m.keystore_id and m.state in ("completed", "rolled_back"):  # resumed after the last look
        with contextlib.suppress(Exception):
            last = ctx.kms.describe(m.keystore_id)
    original_config = StoreConfig.from_dict(m.snapshot) if m.snapshot else None
    original: dict[str, object] | None = {k: m.snapshot.get(k) for k in CONFIG_KEYS} if m.snapshot else None
    final = _config_view(last.config) if last else None
    if final is None and m.state == "blocked":  # nothing changed: the snapshot is the last look
        final = original
    store_outcome = m.outcome or (m.state if m.state in machine.TERMINAL else "unfinished")
    window = m.window_seconds
    if window is None and m.disconnected_at is not None:  # still disconnected (stuck, interrupted)
        window = round(ctx.clock.elapsed(m.disconnected_at), 3)
    manual = (runbook.stuck_help(ctx.plan.region, m.keystore_id or m.keystore_ref, original_config, last)
              if m.state == "stuck" else None)
    return StoreResult(ref=m.keystore_ref, id=m.keystore_id or "", state=m.state, outcome=store_outcome,
                       original=original, final=final, disconnected_seconds=window,
                       api_calls=dict(m.api_calls or {}), error=m.error, manual=manual)


def _result(ctx: RunContext, run_id: str, outcome: str, exit_code: int, message: str,
            last_seen: dict[int, Observation]) -> RunResult:
    run = ctx.journal.get_run(run_id)
    stores = [_store_result(ctx, m, last_seen.get(m.id)) for m in run.migrations]
    if not message:
        message = next((s.error for s in stores if s.error), "") or outcome
    return RunResult(run_id, outcome, exit_code, stores, message, simulated=ctx.clock.simulated)
