"""The services of one run that every Driver of it uses: journal writes, output, the clock, AWS, approval,
hooks, the postponed cut-over, secrets and preflight (the `RunServices` protocol of engine/driver.py).

Journal writes come first and are mirrored to the observer (the CLI's renderer); `_crash_point` is the
crash-matrix seam after every journal write. Nothing here knows a Driver: each method takes plain
values (a migration id, a frozen `HookFacts`, an `Observation`), so calls go one way.

Acceptances of unverified checks (the plan's `[preflight] accept_unverified`, the run's recorded
`--accept-unverified`) are applied to every preflight and each is journaled once as its own
`acceptance` event; a resume or a preflight re-run takes them back from the journal, not the flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from migrator.aws.cell_poller import poller_for
from migrator.aws.clients import ClientFactory
from migrator.aws.kms import KmsApplier
from migrator.aws.secret_refs import SecretError, SecretValue
from migrator.aws.store_config import Observation
from migrator.engine import controls, cutover
from migrator.engine.environment import Environment
from migrator.engine.errors import Blocked, JournalLostStop, StepFailed
from migrator.engine.hooks import HookFacts, HookResult
from migrator.plan import KeystorePlan, Plan
from migrator.preflight.accounts import Peer, reaches_other_accounts, region_peers, store_clients

if TYPE_CHECKING:
    from migrator.journal.models import EventView, MigrationView
    from migrator.preflight.base import Finding


_T = TypeVar("_T")
CONTROL_LOOK_SECONDS = 1.0  # how often (real) a runner looks for `abort`/`extend` in the journal




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
        # AWS requests per migration: what earlier processes journaled, what this one counted while the store's
        # driver ran (the stores of a run take turns, so a request belongs to the store whose turn it is).
        self._base_calls: dict[int, Counter[str]] = {}
        self._spent_calls: dict[int, Counter[str]] = {}
        self._turn: tuple[int, Counter[str]] | None = None
        self.kms = KmsApplier(env.clients.client("kms"), poller=poller_for(env.clients))  # one per cell
        self._cell_kms: dict[int, KmsApplier] = {}  # other cells' appliers, by their ClientFactory
        self.options: dict[str, object] = dict(options or {})
        self._lock_lost = False
        self.lock_lost_reason = ""
        self.lock_check: Callable[[], None] | None = None  # raises LockLost; the runner's heartbeat sets it
        self.journal_lost: str | None = None  # why the journal became unusable; from then on nothing is done
        self.journaled: dict[int, dict[str, object]] = {}  # per migration: what this process journaled
        self._emit_lock = threading.Lock()
        # Verify threads journal concurrently; one writer at a time keeps "commit, then (test seam) die" atomic:
        # no other thread's event can land between a crash point's commit and its SIGKILL.
        self._record_lock = threading.RLock()
        # AWS: connecting or disconnecting "takes approximately five minutes"; refined by each wait.
        self.expected_change_seconds: float = 300.0
        # The operator's abort/extend notes (engine/controls.py), read again at most once a real second.
        self._controls: list[controls.Control] = []
        self._controls_seq, self._controls_read_at = 0, float("-inf")
        self._controls_lock = threading.Lock()

    # -- the cells: a store's account and Region, reached through its role --------------------------
    def clients_for(self, keystore: KeystorePlan) -> ClientFactory:
        return store_clients(self.plan, keystore, self.env.clients)

    def kms_for(self, keystore: KeystorePlan | str) -> KmsApplier:
        """The KMS of the store's cell (a plan ref is looked up): one applier and one poller per cell."""
        if isinstance(keystore, str):
            found = next((k for k in self.plan.keystores if k.ref == keystore), None)
            if found is None:
                return self.kms
            keystore = found
        clients = self.clients_for(keystore)
        if clients is self.env.clients:
            return self.kms
        with self._emit_lock:
            if id(clients) not in self._cell_kms:
                self._cell_kms[id(clients)] = KmsApplier(clients.client("kms"), poller=poller_for(clients))
            return self._cell_kms[id(clients)]

    def _region_peers(self, keystore: KeystorePlan) -> Callable[[], Sequence[Peer]] | None:
        if not reaches_other_accounts(self.plan, keystore):
            return None
        return lambda: region_peers(self.plan, keystore, self.clients_for)

    # -- the lock and the journal: both must hold before anything reaches AWS ---------------------
    @property
    def lock_lost(self) -> bool:
        """Asked before every AWS call, so it checks the locks now, not at the last heartbeat (a PostgreSQL
        session can die between two beats). A journal that cannot be read stops the run (JournalLostStop)."""
        if not self._lock_lost and self.lock_check is not None:
            from migrator.journal.models import LockLost

            try:
                self.journal_call(self.lock_check)
            except LockLost as exc:
                self.mark_lock_lost(str(exc))
        return self._lock_lost

    @property
    def may_call_aws(self) -> bool:
        """False once the lock or the journal is gone: then not even a describe for the summary."""
        return self.journal_lost is None and not self._lock_lost

    def mark_lock_lost(self, reason: str) -> None:
        self._lock_lost = True
        self.lock_lost_reason = self.lock_lost_reason or reason

    def journal_call(self, work: Callable[[], _T]) -> _T:
        """A journal call; once the journal is unusable, this and every later one stops the run."""
        from migrator.journal.db import JournalUnavailable

        if self.journal_lost is not None:
            raise JournalLostStop(self.journal_lost)
        try:
            return work()
        except JournalUnavailable as exc:
            self.journal_lost = str(exc)
            raise JournalLostStop(self.journal_lost) from None

    def _remember(self, mid: int, **fields: object) -> None:
        self.journaled.setdefault(mid, {}).update(fields)

    def as_journaled(self, migration: MigrationView) -> MigrationView:
        """`migration` as read when the run began plus what this process journaled since: where the journal
        says the store stands, known without reading the journal (for a summary when it cannot be read)."""
        names = {f.name for f in dataclasses.fields(migration)}
        fields = {k: v for k, v in self.journaled.get(migration.id, {}).items() if k in names}
        if migration.id in self._base_calls:  # this process's AWS requests, counted in memory
            fields["api_calls"] = self.api_calls_for(migration.id)
        return dataclasses.replace(migration, **fields)  # type: ignore[arg-type]

    # -- journal and output -----------------------------------------------------------------
    def _emit(self, mid: int | None, seq: int, kind: str, **data: object) -> None:
        with self._emit_lock:  # verification threads report concurrently
            self.env.observer.event({"type": "event", "run_id": self.run_id, "migration": mid, "seq": seq,
                                     "kind": kind, "at": self.clock.now(), **data})

    def record(self, mid: int | None, *, kind: str, operation: str | None = None, outcome: str | None = None,
               request_id: str | None = None, detail: dict[str, object] | None = None) -> int:
        with self._record_lock:
            seq = self.journal_call(lambda: self.journal.record(
                self.run_id, kind=kind, migration_id=mid, operation=operation, outcome=outcome,
                request_id=request_id, detail=detail))
            _crash_point(seq)
        self._emit(mid, seq, kind, operation=operation, outcome=outcome, request_id=request_id, detail=detail)
        return seq

    def transition(self, mid: int, from_state: str, to_state: str, *, detail: object = None,
                   **fields: object) -> int:
        event_detail = detail if isinstance(detail, dict) else None
        columns: dict[str, Any] = dict(fields)  # migration columns, checked by the journal
        if "outcome" in columns:  # the store's outcome: on the row and on the event, in one transaction
            outcome = columns.pop("outcome")
            seq = self.journal_call(lambda: self.journal.transition(mid, to_state, detail=event_detail,
                                                                outcome=_text(outcome), migration_outcome=outcome,
                                                                **columns))
            self._remember(mid, outcome=outcome)
        else:
            seq = self.journal_call(lambda: self.journal.transition(mid, to_state, detail=event_detail, **columns))
        self._remember(mid, state=to_state, **columns)
        _crash_point(seq)
        self._emit(mid, seq, "transition", from_state=from_state, to_state=to_state, detail=event_detail)
        return seq

    def update(self, mid: int, **fields: object) -> None:
        self.journal_call(lambda: self.journal.update_migration(mid, **fields))
        self._remember(mid, **fields)

    def progress(self, event: dict[str, object]) -> None:
        self.env.observer.event(event)

    # -- the operator's controls, written by any machine that shares the journal ---------------------
    def operator_controls(self) -> list[controls.Control]:
        """The run's abort/extend notes; new ones are shown live as they are found."""
        with self._controls_lock:
            if time.monotonic() - self._controls_read_at < CONTROL_LOOK_SECONDS:
                return list(self._controls)
            found = self.journal_call(lambda: self.journal.events(self.run_id, after_seq=self._controls_seq))
            self._controls_read_at = time.monotonic()
            for e in found:
                self._controls_seq = max(self._controls_seq, e.seq)
                if (control := controls.control_of(e)) is not None:
                    self._controls.append(control)
                    self._emit(None, e.seq, "note", operation=None, outcome=e.outcome, request_id=None,
                               detail=e.detail)
            return list(self._controls)

    def budget_seconds(self) -> float:
        """The downtime budget in force: the plan's, plus every `xksmigrate extend`."""
        return controls.budget_in_force(self.plan.max_disconnected, self.operator_controls())

    def abort_requested(self) -> controls.Control | None:
        return controls.abort_of(self.operator_controls())

    def note(self, mid: int, outcome: str, message: str) -> None:
        """A note with an outcome (cut-over's `postponed` / `released`)."""
        self.record(mid, kind="note", outcome=outcome, detail={"message": message})

    def events(self, run_id: str) -> list[EventView]:
        return self.journal_call(lambda: self.journal.events(run_id))

    def track(self, mid: int, persisted_calls: dict[str, int]) -> None:
        """Count this process's AWS requests for `mid` on top of what earlier processes counted."""
        self._base_calls[mid] = Counter(persisted_calls or {})
        self._spent_calls.setdefault(mid, Counter())

    @contextlib.contextmanager
    def turn(self, mid: int) -> Iterator[None]:
        """The store `mid`'s driver runs: the requests made meanwhile are its own (verify threads included)."""
        self._turn = (mid, Counter(self.requests))
        try:
            yield
        finally:
            self._spent_calls.setdefault(mid, Counter()).update(self._since_turn())
            self._turn = None

    def _since_turn(self) -> Counter[str]:
        if self._turn is None:
            return Counter()
        now = Counter(self.requests)
        now.subtract(self._turn[1])
        return now

    def api_calls_for(self, mid: int) -> dict[str, int]:
        total = self._base_calls.get(mid, Counter()) + self._spent_calls.get(mid, Counter())
        if self._turn is not None and self._turn[0] == mid:
            total.update(self._since_turn())
        return {k: v for k, v in sorted(total.items()) if v > 0}

    # -- hooks, decisions and waits that need the outside world ---------------------------------
    def hook(self, mid: int, event: str, facts: HookFacts) -> bool:
        """Fire the event's hooks; True when any ran (it may have acted on the store)."""
        if self.env.hooks is None:
            return False

        def record(result: HookResult) -> None:
            self.record(mid, kind="hook", operation=event, outcome="ok" if result.ok else "failed",
                        detail={"hook": result.hook, "event": event, "exit_code": result.exit_code,
                                "output": result.output})

        return self.env.hooks.fire(event, facts, record) > 0

    def approve(self, question: str) -> bool:
        return bool(self.env.approve(question))

    def wait_for_cutover(self, mid: int, on_postponed: Callable[[], None]) -> bool:
        def progress(after_seq: int) -> None:
            self.progress({"type": "progress", "run_id": self.run_id, "migration": mid, "state": "postponed",
                           "connection_state": None, "window_seconds": None,
                           "budget_seconds": self.budget_seconds(), "next_poll_seconds": 1.0,
                           "simulated": self.clock.simulated, "since_seq": after_seq})

        def stop_if_aborted() -> None:
            if (abort := self.abort_requested()) is not None:
                raise Blocked(f"{controls.describe_abort(abort)} while the cut-over was postponed; nothing was changed")

        return cutover.wait_for_release(self, self.run_id, mid, self.options, on_postponed=on_postponed,
                                        progress=progress, lock_lost=lambda: self.lock_lost,
                                        checkpoint=stop_if_aborted)

    def secret(self, ref: str) -> SecretValue:
        if self.env.secret_resolver is None:
            raise Blocked(f"no way to resolve secret reference {ref}")
        try:
            return self.env.secret_resolver(ref)
        except SecretUnavailable:
            raise
        except SecretError as exc:  # e.g. an env: variable set at `run` but missing at `resume`
            reason = str(exc) if str(exc).startswith(ref) else f"{ref}: {exc}"
            raise SecretUnavailable(f"cannot resolve the proxy secret {reason}") from None

    def preflight(self, mid: int, keystore: KeystorePlan, snapshot: Observation) -> list[Finding]:
        """The engine's gate and the read-only inspector, with the operator's acceptances; all journaled."""
        from migrator.preflight.gate import GateInputs, run_gate

        findings = run_gate(GateInputs(
            plan=self.plan.for_store(keystore), keystore=keystore, snapshot=snapshot,
            clients=self.clients_for(keystore), secret=self.secret, extra_roots_pem=tuple(self.env.extra_roots_pem),
            resolve=self.env.resolve, include_cloudwatch=self.env.include_cloudwatch,
            unfinished_runs=self._other_unfinished(), region_peers=self._region_peers(keystore)))
        store = snapshot.id or keystore.ref
        findings, new, unused = self._accept(store, findings)
        for f in findings:
            self.record(mid, kind="finding", outcome=f.status,
                        detail={"check": f.check, "message": f.message, "remedy": f.remedy})
        for acceptance in new:
            self.record(mid, kind="acceptance", outcome="accepted", detail=acceptance)
        for check, why in unused:
            self.record(mid, kind="note", outcome="acceptance_unused",
                        detail={"check": check, "keystore": store, "message": f"accepting {check}: {why}"})
        return findings

    def _accept(self, store: str, findings: list[Finding]
                ) -> tuple[list[Finding], list[dict[str, object]], list[tuple[str, str]]]:
        """Apply the journaled acceptances of `store` (who and when as first recorded), then the plan's and the
        run's; the acceptances to journal now, and the names that accepted nothing."""
        from migrator.preflight.base import ACCEPTED, accept, unused_acceptances

        prior = {str(a["check"]): a for a in accepted_unverified(self.events(self.run_id)) if a["keystore"] == store}
        for check, a in prior.items():
            findings = accept(findings, {check}, str(a["accepted_by"]), str(a["source"]))
        cli = self.options.get("accept_unverified")
        named = {"plan": set(self.plan.accept_unverified),
                 "cli": {str(c) for c in cli} if isinstance(cli, list | tuple) else set()}
        for source, names in named.items():
            findings = accept(findings, names - prior.keys(), self.who or "unknown", source)
        new = [{"check": f.check, "keystore": store, "accepted_by": f.detail.get("accepted_by"),
                "at": self.clock.now(), "source": f.detail.get("accepted_via"), "message": f.message}
               for f in findings if f.status == ACCEPTED and f.check not in prior]
        return findings, new, unused_acceptances(findings, named["plan"] | named["cli"])

    def _other_unfinished(self) -> tuple[str, ...] | None:
        """Other unfinished runs in the Region; None when the journal cannot say (quota.concurrent_runs unverified)."""
        try:
            runs = self.journal.unfinished_runs(self.plan.region, self.plan.account_id)
        except Exception:  # a journal hiccup must not fail preflight: the check says it could not be made
            return None
        fleet = self.options.get("fleet_id")  # a fleet's own stores share its cell budget by design: not "others"
        return tuple(r.id for r in runs if r.id != self.run_id
                     and not (fleet and (r.options or {}).get("fleet_id") == fleet))


class SecretUnavailable(StepFailed, SecretError):
    """A secret the run needs cannot be resolved: a step failure whose reason names the reference and what is
    missing (never "internal error"), and still a SecretError for the preflight gate, which reports it."""


def accepted_unverified(events: Sequence[EventView]) -> list[dict[str, object]]:
    """The run's acceptances of unverified checks, from its journal: {keystore, check, accepted_by, at, source},
    once per key store and check (the first record: who accepted it, and when)."""
    found: dict[tuple[str, str], dict[str, object]] = {}
    for e in events:
        if e.kind != "acceptance":
            continue
        d = e.detail or {}
        item: dict[str, object] = {"keystore": str(d.get("keystore") or ""), "check": str(d.get("check") or ""),
                                   "accepted_by": d.get("accepted_by"), "at": d.get("at", e.at),
                                   "source": d.get("source")}
        found.setdefault((str(item["keystore"]), str(item["check"])), item)
    return list(found.values())


def _text(value: object) -> str | None:
    return None if value is None else str(value)
