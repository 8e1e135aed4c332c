"""One fleet store at a time: run it, or resume it, through the single-store engine, and the gate between waves.

A fleet store's run has a fixed id (`store_run_id`), so a step DBOS repeats after a crash (its steps run at
least once) finds the run the first attempt recorded and resumes it from its journal instead of starting a
second one: the engine observes the live store before any act, so no disconnect or update happens twice, and
the window and budget count from the first disconnect. A run that ended is read back, never run again.

The gate after a wave proves every completed store of it with real Encrypt/Decrypt round trips (up to 3
Enabled keys each, in the store's account through its role), and reads the fleet's CloudWatch alarms: one
that is not OK, or cannot be read, fails the gate (a check that could not be made is not a pass).
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.aws.kms import AwsCallError
from migrator.fleet.outcome import StoreOutcome
from migrator.fleet.rollout import Wave
from migrator.fleet.spec import FleetSpec, FleetStore, parse_fleet

if TYPE_CHECKING:
    from migrator.aws.clients import ClientFactory
    from migrator.engine.environment import Environment
    from migrator.engine.results import RunResult

GATE_KEYS = 3  # round trips per store at a gate
LOCK_RETRY_SECONDS = 2.0  # a store whose lock a dead runner still holds: how often to try again
EnvFor = Callable[[FleetStore], "Environment"]


@dataclass(frozen=True)
class FleetRequest:
    """What a fleet workflow is started with (DBOS checkpoints it): the fleet file as read, and how it runs."""

    fleet_id: str
    path: str
    text: str
    dry_run: bool = False
    time_scale: float = 1.0
    endpoint_url: str | None = None  # a `sim serve` endpoint or another AWS endpoint; None: AWS's own
    # The waves `fleet plan`'s checks proved (from today's snapshots), [{"number", "refs", "canary"}]: the run
    # goes exactly as the preflight showed, and a worker that takes it over needs no observation of its own.
    waves: tuple[dict[str, object], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "waves": [dict(w) for w in self.waves]}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FleetRequest:
        endpoint = data.get("endpoint_url")
        waves = data.get("waves") or ()
        return cls(str(data["fleet_id"]), str(data["path"]), str(data["text"]), bool(data.get("dry_run")),
                   float(str(data.get("time_scale") or 1.0)), str(endpoint) if endpoint else None,
                   tuple(dict(w) for w in waves))  # type: ignore[attr-defined]

    def rollout_waves(self) -> list[Wave]:
        return [Wave(int(str(w["number"])), tuple(str(r) for r in w["refs"]), bool(w["canary"]))  # type: ignore[attr-defined]
                for w in self.waves]

    def spec(self) -> FleetSpec:
        return parse_fleet(self.text, self.path, Path(self.path).parent)


def wave_records(waves: Sequence[Wave]) -> tuple[dict[str, object], ...]:
    return tuple({"number": w.number, "refs": list(w.refs), "canary": w.canary} for w in waves)


def new_fleet_id() -> str:
    return time.strftime("fleet-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(2)


def store_run_id(fleet_id: str, ref: str) -> str:
    """The journal run id of `ref` in `fleet_id`: the same on every attempt."""
    return f"{fleet_id}.{ref}"


class StoreRunner:
    """Runs or resumes fleet stores with Environments made by `env_for` (one per store: its observer)."""

    def __init__(self, env_for: EnvFor, lock_wait_seconds: float = 60.0):
        self.env_for = env_for
        self.lock_wait_seconds = lock_wait_seconds

    def drive(self, request: FleetRequest, ref: str, wave: int) -> StoreOutcome:
        store = request.spec().store(ref)
        env = self.env_for(store)
        env.run_facts = {**env.run_facts, "fleet_id": request.fleet_id}  # its siblings share its cells' budget
        run_id = store_run_id(request.fleet_id, ref)
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            result = self._run_or_resume(store, env, run_id)
            # A takeover: the runner that died may still hold the store's lock for a moment (SQLite: until its
            # pid is seen dead; PostgreSQL: until its session ends). Its run is ours to continue.
            if result.outcome != "locked" or time.monotonic() > deadline:
                break
            time.sleep(LOCK_RETRY_SECONDS)
        facts = result.budget()
        return StoreOutcome(ref, store.account.account_id, store.keystore.region, wave, run_id, result.outcome,
                            result.exit_code, facts.window_seconds, facts.budget_seconds, result.message)

    @staticmethod
    def _run_or_resume(store: FleetStore, env: Environment, run_id: str) -> RunResult:
        from migrator.engine import journal_summary, runner
        from migrator.journal.models import JournalError
        from migrator.journal.repository import UNFINISHED
        from migrator.plan import parse_plan

        try:
            run = env.journal.get_run(run_id)
        except JournalError:
            return runner.start(store.plan, env, run_id=run_id)
        if run.outcome in UNFINISHED:
            return runner.resume(parse_plan(run.plan_text, run.plan_path), env, run_id)
        return journal_summary.summarize(run, env.journal.events(run_id), now=time.time())


@dataclass(frozen=True)
class GateResult:
    ok: bool
    wave: int
    proved: dict[str, int]  # store -> keys proved
    failures: list[str]  # one line each: the store or alarm and why
    started_at: float | None = None  # real instants (the fleet's change record draws the gate on its timeline)
    ended_at: float | None = None

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def health_gate(spec: FleetSpec, refs: Sequence[str], wave: int, base: ClientFactory) -> GateResult:
    """Round trips on every store in `refs` (in parallel) and the fleet's alarms, in each store's account."""
    started_at = time.time()
    proved: dict[str, int] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def prove(store: FleetStore) -> None:
        try:
            count = _prove_store(store, base)
        except (AwsCallError, OSError, ValueError) as exc:
            with lock:
                failures.append(f"{store.ref}: {exc}")
            return
        with lock:
            proved[store.ref] = count
            if count == 0:
                failures.append(f"{store.ref}: no Enabled key answered a round trip")

    threads = [threading.Thread(target=prove, args=(spec.store(ref),), daemon=True) for ref in refs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures.extend(_alarm_failures(spec, refs, base))
    return GateResult(not failures, wave, dict(sorted(proved.items())), sorted(failures), started_at, time.time())


def _prove_store(store: FleetStore, base: ClientFactory) -> int:
    from migrator.aws.kms import KmsApplier
    from migrator.preflight.accounts import store_clients

    kms = KmsApplier(store_clients(store.plan, store.keystore, base).client("kms"))
    store_id = store.keystore.id or kms.describe(store.ref).id
    keys = kms.keys_of_store(store_id, want_enabled=GATE_KEYS, states=("Enabled",))
    for key in keys:
        kms.round_trip(key.key_id, {"xksmigrate-gate": store.ref})
    return len(keys)


def _alarm_failures(spec: FleetSpec, refs: Sequence[str], base: ClientFactory) -> list[str]:
    """Each named alarm must be OK in every account-Region the wave touched; unreadable is a failure."""
    if not spec.rollout.alarms:
        return []
    from migrator.preflight.accounts import store_clients

    failures = []
    cells = {spec.store(ref).cell: spec.store(ref) for ref in refs}
    for (account, region), store in sorted(cells.items()):
        try:
            cloudwatch = store_clients(store.plan, store.keystore, base).client("cloudwatch")
            found = cloudwatch.describe_alarms(AlarmNames=list(spec.rollout.alarms))
        except Exception as exc:  # any failure to read is a failed gate, named
            from migrator.aws.clients import aws_error_code

            failures.append(f"alarms in {account} {region}: cannot be read ({aws_error_code(exc)})")
            continue
        states = {a["AlarmName"]: a["StateValue"] for a in found.get("MetricAlarms", [])}
        for name in spec.rollout.alarms:
            state = states.get(name, "missing")
            if state != "OK":
                failures.append(f"alarm {name} in {account} {region}: {state}")
    return failures
