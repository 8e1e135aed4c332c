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

from migrator import machine
from migrator.clock import Clock
from migrator.kms import AwsCallError, KmsApplier, Observation
from migrator.plan import KeystorePlan, Plan
from migrator.secrets import SecretValue
from migrator.steps import Blocked, Driver

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
    def approve(self, driver: Driver) -> bool:
        target = driver.desired
        question = (f"Disconnect {driver.store_id} now? Its keys stay unusable until the store is reconnected "
                    f"to {target.uri_endpoint} ({target.connectivity}) and verified; "
                    f"budget {self.plan.max_disconnected:g} s, then automatic rollback.")
        return bool(self.env.approve(question))

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
                    raise Blocked(f"verify key {key_id} belongs to {info.custom_key_store_id or 'no custom key store'}"
                                  f", not to {obs.id}")
                chosen.append({"key_id": info.key_id, "arn": info.arn, "state": info.state})
            return chosen
        keys = self.kms.keys_of_store(obs.id, want_enabled=3,
                                      states=("Enabled",) if connected else ("Enabled", "Unavailable"))
        if not keys:
            raise Blocked(f"key store {obs.id} has no Enabled KMS key to verify with; name one in verify.key_ids")
        return [{"key_id": k.key_id, "arn": k.arn, "state": k.state} for k in keys]

    def preflight(self, driver: Driver) -> list[Any]:
        from migrator import gate

        findings = gate.essential_checks(self, driver)
        findings += gate.inspector_checks(self, driver)
        for f in findings:
            self.record(driver.mid, kind="finding", outcome=f.status,
                        detail={"check": f.check, "message": f.message, "remedy": f.remedy})
        return findings

    def manual_help(self, driver: Driver) -> dict[str, Any]:
        from migrator import runbook

        return runbook.stuck_help(self.plan.region, driver.store_id, driver.snapshot, self.last_seen.get(driver.mid))


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


# ---------------------------------------------------------------------------------------------
def start(plan: Plan, env: Environment) -> RunResult:
    """Record a new run of `plan`, then drive it."""
    run_id = env.journal.create_run(
        plan_name=plan.name, plan_path=plan.path, plan_text=plan.text, plan_fingerprint=plan.fingerprint,
        region=plan.region, account_id=plan.account_id, dry_run=env.dry_run, who=env.who,
        host=socket.gethostname(), pid=os.getpid(), options={"time_scale": env.clock.scale})
    for ks in plan.keystores:
        env.journal.add_migration(run_id, ks.ref, _target_record(ks))
    return _drive(plan, env, run_id)


def resume(plan: Plan, env: Environment, run_id: str) -> RunResult:
    """Continue `run_id` from the persisted state of each store (the plan comes from the journal)."""
    env.journal.reopen_run(run_id)
    return _drive(plan, env, run_id, resumed=True)


def _target_record(ks: KeystorePlan) -> dict[str, Any]:
    t = ks.target
    record = {k: v for k, v in t.as_config().items() if v is not None}
    if t.credential:
        record["credential_secret"] = t.credential.secret_ref  # the reference, never the value
    return record


def _drive(plan: Plan, env: Environment, run_id: str, resumed: bool = False) -> RunResult:
    ctx = RunContext(env, plan, run_id)
    run = env.journal.get_run(run_id)
    by_ref = {ks.ref: ks for ks in plan.keystores}
    locks: list[Any] = []
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(env, ctx, locks, stop), daemon=True)
    outcome, message = "completed", ""
    try:
        if resumed:
            ctx.record(None, kind="note", detail={"message": "resumed", "pid": os.getpid(),
                                                  "host": socket.gethostname()})
        for migration in run.migrations:
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
    env.journal.finish_run(run_id, outcome, exit_code)
    return _result(ctx, run_id, outcome, exit_code, message)


def _resolve_id(ctx: RunContext, ks: KeystorePlan) -> str | None:
    if ks.id:
        return ks.id
    found = ctx.kms.find_store(name=ks.name)
    return found.id if found else None


def _lock(env: Environment, ctx: RunContext, run_id: str, store_id: str, mid: int) -> Any:
    from migrator.journal import LockHeld

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
    from migrator.journal import LockLost

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
    from migrator import runbook

    return runbook.stuck_help(ctx.plan.region, m.keystore_id or m.keystore_ref, m.snapshot, ctx.last_seen.get(m.id))


def _result(ctx: RunContext, run_id: str, outcome: str, exit_code: int, message: str) -> RunResult:
    run = ctx.journal.get_run(run_id)
    stores = []
    for m in run.migrations:
        last = ctx.last_seen.get(m.id)
        original = {k: (m.snapshot or {}).get(k) for k in CONFIG_KEYS} if m.snapshot else None
        final = {k: getattr(last.config, k) for k in CONFIG_KEYS} if last else None
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
