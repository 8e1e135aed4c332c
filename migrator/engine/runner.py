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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrator.aws.secret_refs import SecretValue
from migrator.engine import machine
from migrator.engine.clock import Clock
from migrator.engine.driver import Blocked, Driver
from migrator.engine.run_context import LockLostStop, RunContext
from migrator.plan import KeystorePlan, Plan

VERSION = "0.1.0"
EXIT_CODES = {"completed": 0, "rolled_back": 4, "stuck": 5, "blocked": 3, "locked": 6, "interrupted": 130,
              "failed": 1}
SEVERITY = ("completed", "blocked", "rolled_back", "interrupted", "failed", "stuck")  # worst last


class Observer:
    """Receives every journaled event and transient progress; the CLI renders them."""

    def event(self, event: dict[str, Any]) -> None:  # pragma: no cover - default does nothing
        pass


@dataclass
class Environment:
    """Everything a run needs from outside, built by the CLI (or a test)."""

    journal: Any
    clients: Any  # migrator.aws.ClientFactory
    clock: Clock = field(default_factory=Clock)
    observer: Observer = field(default_factory=Observer)
    secret_resolver: Callable[[str], SecretValue] | None = None
    approve: Callable[[str], bool] = lambda question: False
    who: str = ""
    dry_run: bool = False
    extra_roots_pem: list[bytes] = field(default_factory=list)
    resolve: Callable[[str], str] | None = None
    include_cloudwatch: bool = False
    hooks: Any = None  # migrator.hooks.Hooks (optional)
    retry_stuck: bool = False
    postpone: bool = False  # wait before the disconnect until `xksmigrate proceed` (or the flag file is gone)
    postpone_flag_file: str | None = None
    cutover_at: float | None = None  # epoch seconds: wait before the disconnect until then
    heartbeat_seconds: float = 10.0


@dataclass
class StoreResult:
    ref: str
    id: str
    state: str
    outcome: str
    original: dict[str, Any] | None
    final: dict[str, Any] | None
    disconnected_seconds: float | None
    api_calls: dict[str, int]
    error: str | None
    manual: dict[str, Any] | None = None  # for a stuck store: its state and the commands to run by hand

    def to_dict(self, simulated: bool) -> dict[str, Any]:
        data = {"id": self.id, "ref": self.ref, "state": self.state, "outcome": self.outcome,
                "original": self.original, "final": self.final,
                "disconnected_seconds": self.disconnected_seconds, "simulated": simulated,
                "api_calls": self.api_calls, "error": self.error}
        if self.manual:
            data["manual"] = self.manual
        return data


@dataclass
class RunResult:
    run_id: str
    outcome: str
    exit_code: int
    stores: list[StoreResult]
    message: str = ""
    simulated: bool = False

    def summary(self) -> dict[str, Any]:
        calls: Counter[str] = Counter()
        for s in self.stores:
            calls.update(s.api_calls)
        return {"type": "summary", "run_id": self.run_id, "outcome": self.outcome, "exit_code": self.exit_code,
                "message": self.message, "simulated": self.simulated,
                "keystores": [s.to_dict(self.simulated) for s in self.stores], "api_calls": dict(calls)}


CONFIG_KEYS = ("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name", "access_key_id")


# ---------------------------------------------------------------------------------------------
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


def _run_options(env: Environment) -> dict[str, Any]:
    options: dict[str, Any] = {"time_scale": env.clock.scale}
    if env.postpone:
        options["postpone"] = True
    if env.postpone_flag_file:
        options["postpone_flag_file"] = os.path.abspath(env.postpone_flag_file)
    if env.cutover_at:
        options["cutover_at"] = env.cutover_at
    return options


def _target_record(ks: KeystorePlan) -> dict[str, Any]:
    t = ks.target
    record = {k: v for k, v in t.as_config().items() if v is not None}
    if t.credential:
        record["credential_secret"] = t.credential.secret_ref  # the reference, never the value
    return record


def _drive(plan: Plan, env: Environment, run_id: str, resumed: bool = False,
           operator_rollback: bool = False) -> RunResult:
    ctx = RunContext(env, plan, run_id)
    run = env.journal.get_run(run_id)
    ctx.options = dict(run.options or {})
    migrations = list(run.migrations)
    if operator_rollback:  # undo in reverse order, and only what completed
        migrations = [m for m in reversed(migrations) if m.state == "completed"]
    by_ref = {ks.ref: ks for ks in plan.keystores}
    locks: list[Any] = []
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(env, ctx, locks, stop), daemon=True)
    outcome, message = "completed", ""
    try:
        if resumed:
            ctx.record(None, kind="note", detail={"message": "resumed", "pid": os.getpid(),
                                                  "host": socket.gethostname()})
        for migration in migrations:
            ks = by_ref[migration.keystore_ref]
            store_id = migration.keystore_id or _resolve_id(ctx, ks)
            if store_id:
                lock = _lock(env, ctx, run_id, store_id, migration.id)
                if lock is None:
                    outcome, message = "locked", ctx.lock_message
                    break
                locks.append(lock)
                if not beat.is_alive():
                    beat.start()
            ctx.track(migration.id, migration.api_calls)
            driver = Driver(ctx, migration, ks)
            if operator_rollback:
                try:
                    driver.begin_operator_rollback()
                except Blocked as exc:
                    outcome, message = "blocked", str(exc)
                    break
            final = driver.run()
            outcome = _worse(outcome, "stuck" if final == "stuck" else final)
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
        stop.set()
        for lock in locks:
            with contextlib.suppress(Exception):
                env.journal.release_lock(lock)
    exit_code = EXIT_CODES.get(outcome, 1)
    if not (resumed and outcome == "locked"):  # the lock holder drives this run: its outcome is not ours to end
        env.journal.finish_run(run_id, outcome, exit_code)
    return _result(ctx, run_id, outcome, exit_code, message)


def _resolve_id(ctx: RunContext, ks: KeystorePlan) -> str | None:
    if ks.id:
        return ks.id
    found = ctx.kms.find_store(name=ks.name)
    return found.id if found else None


def _lock(env: Environment, ctx: RunContext, run_id: str, store_id: str, mid: int) -> Any:
    from migrator.journal.repository import LockHeld

    try:
        lock = env.journal.acquire_lock(f"keystore/{ctx.plan.region}/{store_id}", run_id=run_id, owner=env.who)
    except LockHeld as held:
        ctx.lock_message = str(held)
        ctx.record(mid, kind="note", outcome="locked", detail={"message": str(held)})
        return None
    if getattr(lock, "reclaimed_from", None):
        ctx.record(mid, kind="note", detail={"message": f"reclaimed lock of a dead runner ({lock.reclaimed_from})"})
    return lock


def _heartbeat(env: Environment, ctx: RunContext, locks: list[Any], stop: threading.Event) -> None:
    from migrator.journal.repository import LockLost

    while not stop.wait(env.heartbeat_seconds):
        for lock in list(locks):
            try:
                env.journal.heartbeat(lock)
            except LockLost:
                ctx.lock_lost = True
            except Exception:  # a passing database hiccup: the next beat tries again
                pass


def _worse(a: str, b: str) -> str:
    rank = {o: i for i, o in enumerate(SEVERITY)}
    return a if rank.get(a, len(SEVERITY)) >= rank.get(b, len(SEVERITY)) else b


def _stuck_help(ctx: RunContext, m: Any) -> dict[str, Any]:
    from migrator.engine import runbook

    return runbook.stuck_help(ctx.plan.region, m.keystore_id or m.keystore_ref, m.snapshot, ctx.last_seen.get(m.id))


def _result(ctx: RunContext, run_id: str, outcome: str, exit_code: int, message: str) -> RunResult:
    run = ctx.journal.get_run(run_id)
    stores = []
    for m in run.migrations:
        last = ctx.last_seen.get(m.id)
        if last is None and m.keystore_id and m.state in ("completed", "rolled_back"):  # resumed after the last look
            with contextlib.suppress(Exception):
                last = ctx.kms.describe(m.keystore_id)
        original = {k: (m.snapshot or {}).get(k) for k in CONFIG_KEYS} if m.snapshot else None
        final = {k: getattr(last.config, k) for k in CONFIG_KEYS} if last else None
        if final is None and m.state == "blocked":  # nothing changed: the snapshot is the last look
            final = original
        store_outcome = m.outcome or (m.state if m.state in machine.TERMINAL else "unfinished")
        window = m.window_seconds
        if window is None and m.disconnected_at is not None:  # still disconnected (stuck, interrupted)
            window = round(ctx.clock.elapsed(m.disconnected_at), 3)
        stores.append(StoreResult(ref=m.keystore_ref, id=m.keystore_id or "", state=m.state, outcome=store_outcome,
                                  original=original, final=final, disconnected_seconds=window,
                                  api_calls=dict(m.api_calls or {}), error=m.error,
                                  manual=_stuck_help(ctx, m) if m.state == "stuck" else None))
    if not message:
        message = next((s.error for s in stores if s.error), "") or outcome
    return RunResult(run_id, outcome, exit_code, stores, message, simulated=ctx.clock.simulated)
