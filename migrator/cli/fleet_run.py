"""`fleet run` and `fleet status`: the fleet's process-local services (journal, AWS clients or the rehearsal
world, printing) around the DBOS workflows in fleet/engine.py.

The fleet's DBOS state lives beside the journal: on PostgreSQL in the same database (schema `dbos`), on SQLite in
a file next to the journal's (`<journal>.fleet.sqlite`), so a rehearsal's fleet state sits beside the rehearsal
journal and never beside the real one. Every store's run is an ordinary journal run (`xksmigrate status RUN_ID`
works on it), with the id `<fleet id>.<store>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

from migrator.cli import environment as support
from migrator.cli.fleet_output import FleetLines
from migrator.engine.environment import Observer

if TYPE_CHECKING:
    from migrator.engine.environment import Environment
    from migrator.fleet.outcome import StoreOutcome
    from migrator.fleet.plan_report import FleetPlanReport
    from migrator.fleet.spec import FleetSpec, FleetStore
    from migrator.fleet.stores import FleetRequest, GateResult
    from migrator.journal.repository import Journal


class StoreObserver(Observer):
    def __init__(self, ref: str, lines: FleetLines):
        self.ref, self.lines = ref, lines

    def event(self, event: dict[str, object]) -> None:
        self.lines.store_event(self.ref, event)


class LocalServices:
    """The fleet's services in this process: one Environment per store around one base Environment."""

    def __init__(self, base: Environment, lines: FleetLines, *, dry_run: bool, endpoint_url: str | None):
        from migrator.fleet.stores import StoreRunner

        self.base, self.lines, self.dry_run, self.endpoint_url = base, lines, dry_run, endpoint_url
        self.runner = StoreRunner(self.env_for, lock_wait_seconds=60.0)

    def env_for(self, store: FleetStore) -> Environment:
        from migrator.cli import recorded

        facts = recorded.run_facts(store.plan, hooks_dir=None, allow_insecure_hooks=False,
                                   endpoint_url=self.endpoint_url, account_id=None, dry_run=self.dry_run)
        return dataclasses.replace(self.base, observer=StoreObserver(store.ref, self.lines),
                                   approve=lambda question: True, run_facts=facts)

    def drive(self, request: FleetRequest, ref: str, wave: int) -> StoreOutcome:
        from migrator.fleet.outcome import StoreOutcome

        try:
            return self.runner.drive(request, ref, wave)
        except Exception as exc:  # one store's fault is its outcome, never the fleet's crash
            store = request.spec().store(ref)
            return StoreOutcome(ref, store.account.account_id, store.keystore.region, wave, None, "failed", 1,
                                message=f"{type(exc).__name__}: the store's run could not go on")

    def gate(self, request: FleetRequest, refs: list[str], wave: int) -> GateResult:
        from migrator.fleet.stores import health_gate

        return health_gate(request.spec(), refs, wave, self.base.clients)

    def progress(self, event: dict[str, object]) -> None:
        self.lines.fleet_event(dict(event))


def system_url(journal: Journal) -> str:
    """Where DBOS keeps the fleet's state: the journal's PostgreSQL database, or a SQLite file beside it."""
    if journal.backend == "postgresql":
        return journal.url.render_as_string(hide_password=False)
    database = journal.url.database or ""
    if not database or database == ":memory:":
        raise support.fail("a fleet needs a journal on disk or on PostgreSQL (--state)")
    return f"sqlite:///{os.path.abspath(database)}.fleet.sqlite"


def executor_id() -> str:
    """This worker's DBOS executor id: host and pid, so a dead one is told from a live one (engine.py)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fleet_run(fleet_file: str, *, dry_run: bool, yes: bool, json_output: bool, state: str | None,
              profile: str | None, endpoint_url: str | None, time_scale: float | None,
              faults: str | None = None, world_log: str | None = None) -> int:
    """`fleet run`: the fleet's waves, each store's run through the single-store engine, on DBOS.

    This process runs the fleet's workflow and works on its queue; `fleet worker`s on other machines (on a
    PostgreSQL journal) share its stores and take over if it dies. A --dry-run's world is in this process: only
    this process works on its stores.
    """
    from migrator.cli.fleet_plan import load_fleet
    from migrator.fleet import engine, workers
    from migrator.fleet.stores import FleetRequest, new_fleet_id, wave_records

    spec = load_fleet(fleet_file)
    if world_log and not dry_run:
        raise support.fail("--world-log belongs to --dry-run")
    support.require_consent(yes)
    support.interruptible()  # SIGTERM as Ctrl-C
    with support.environment(spec.whole, dry_run=dry_run, json_output=json_output, command="run", yes=yes,
                             state=state, world=None, faults=faults, profile=profile, region=None,
                             endpoint_url=endpoint_url, time_scale=time_scale, observe=False,
                             world_log=world_log) as (env, _):
        lines = FleetLines(json_output, env.clock.scale != 1.0, "fleet run")
        checked = fleet_preflight(spec, env, json_output, lines)
        if isinstance(checked, int):
            return checked
        request = FleetRequest(new_fleet_id(), os.path.abspath(fleet_file), spec.text, dry_run, env.clock.scale,
                               None if dry_run else endpoint_url, wave_records(checked.waves))
        own = LocalServices(env, lines, dry_run=dry_run, endpoint_url=request.endpoint_url)
        engine.install(lambda asked: own if asked.fleet_id == request.fleet_id else _refuse(asked))
        lines.fleet_event({"type": "fleet_start", "fleet_id": request.fleet_id, "name": spec.name,
                           "stores": len(spec.stores), "dry_run": dry_run,
                           "message": f"fleet {request.fleet_id}: {spec.name}, {len(spec.stores)} stores"})
        url, me = system_url(env.journal), executor_id()
        with engine.runtime(url, me, request.fleet_id), workers.alive(url, me), \
                (contextlib.nullcontext() if dry_run else workers.taking_over(url, me, lines.took_over(me))):
            try:
                summary = engine.start(request)
            except KeyboardInterrupt:
                interrupted(lines, request.fleet_id, dry_run)
    return int(str(summary["exit_code"]))


def interrupted(lines: FleetLines, fleet_id: str, dry_run: bool) -> NoReturn:
    """Ctrl-C or SIGTERM: say how to go on, then stop at once. The stores in flight run in DBOS's threads, which a
    signal cannot reach; they stop where a SIGKILL would leave them (every journal write is committed, so a
    resume or another worker continues each from its journal, as the crash matrix and the takeover tests prove),
    and this process's liveness lock ends with it."""
    how = ("rehearse again with a new `fleet run --dry-run`" if dry_run else
           f"continue it with: xksmigrate fleet resume {fleet_id} (or a `fleet worker` takes it over)")
    lines.fleet_event({"type": "fleet_interrupted", "fleet_id": fleet_id, "exit_code": 130,
                       "message": f"fleet {fleet_id} interrupted; {how}"})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def fleet_preflight(spec: FleetSpec, env: Environment, json_output: bool,
                    lines: FleetLines) -> int | FleetPlanReport:
    """`fleet plan`'s report of the whole fleet before any store moves: what only the fleet can see (one proxy
    endpoint public in one account and VPC in another, two stores of one proxy in a wave, role sessions too short)
    blocks here; each store's own run checks its store again right before its disconnect. The report (its waves,
    from today's snapshots, are the run's), or the exit code when it holds the fleet."""
    from migrator.cli import fleet_plan
    from migrator.fleet.plan_report import fleet_report
    from migrator.preflight import planner

    checked = fleet_report(spec, planner.make_report(spec.whole, env, ()))
    if checked.exit_code == 0:
        return checked
    if json_output:
        fleet_plan.render_json(checked, version=False)
    else:
        fleet_plan.render_human(checked)
    lines.fleet_event({"type": "fleet_summary", "fleet_id": None, "outcome": "blocked", "exit_code": checked.exit_code,
                       "message": f"fleet plan says {checked.verdict}: no store was started, nothing changed",
                       "stopped_by": "fleet plan", "stop_reason": checked.verdict, "keystores": [], "gates": []})
    return checked.exit_code


def _refuse(request: FleetRequest) -> LocalServices:
    raise RuntimeError(f"fleet {request.fleet_id} is not this process's")  # listen_queues keeps it from coming


class WorkerServices:
    """A `fleet worker`'s services: each fleet's, made from its request (its endpoint, its time scale), with this
    machine's own credentials, and journaled in the worker's journal."""

    def __init__(self, journal: Journal, lines: FleetLines, profile: str | None):
        self.journal, self.lines, self.profile = journal, lines, profile

    def __call__(self, request: FleetRequest) -> LocalServices:
        if request.dry_run:
            raise RuntimeError(f"fleet {request.fleet_id} is a rehearsal: its world lives in its own process")
        from migrator.cli.output import Renderer

        spec = request.spec()
        env = support.real_env(spec.whole, journal=self.journal, renderer=Renderer(), yes=True, profile=self.profile,
                               region=None, endpoint_url=request.endpoint_url, time_scale=request.time_scale,
                               roots_required=False, scale_check=False)
        return LocalServices(env, self.lines, dry_run=False, endpoint_url=request.endpoint_url)


def fleet_worker(*, state: str | None, profile: str | None, json_output: bool) -> int:
    """`fleet worker`: work on every fleet's stores in this journal's DBOS state, and take over the work of a
    worker (or a `fleet run`) that died (fleet/workers.py says how death is told and how fast)."""
    from migrator.fleet import engine, workers

    support.interruptible()
    journal = support.open_journal(state)
    url, me = system_url(journal), executor_id()
    lines = FleetLines(json_output, simulated=False, command="fleet worker")
    engine.install(WorkerServices(journal, lines, profile))
    with engine.runtime(url, me), workers.alive(url, me), workers.taking_over(url, me, lines.took_over(me)):
        lines.fleet_event({"type": "fleet_worker", "executor_id": me,
                           "message": f"fleet worker {me}: working on {journal.url_for_display}"})
        try:
            while True:  # the queues and the takeover work in DBOS's and taking_over's threads
                time.sleep(workers.TAKEOVER_POLL_SECONDS)
        except KeyboardInterrupt:
            lines.fleet_event({"type": "fleet_worker_stopped", "executor_id": me,
                               "message": f"fleet worker {me} stopped; its unfinished work waits for another"})
            return 130


def fleet_resume(fleet_id: str | None, *, state: str | None, profile: str | None, json_output: bool) -> int:
    """`fleet resume`: continue a fleet whose runner died, from its checkpoints and its stores' journals."""
    from dbos import DBOSClient

    from migrator.fleet import engine, workers

    support.interruptible()
    journal = support.open_journal(state)
    url, me = system_url(journal), executor_id()
    client = DBOSClient(system_database_url=url)
    try:
        status = _fleet_status(client, fleet_id)
    finally:
        client.destroy()
    fleet_id = status.workflow_id
    if status.status != "PENDING":
        raise support.fail(f"fleet {fleet_id} is {status.status}, not unfinished: see `xksmigrate fleet status "
                           f"{fleet_id}`")
    request = request_of(status)
    if request.dry_run:
        raise support.fail(f"fleet {fleet_id} was a rehearsal (--dry-run): its world ended with its process; "
                           "rehearse again with a new `fleet run --dry-run`")
    if status.executor_id and not workers.is_dead(url, status.executor_id):
        raise support.fail(f"fleet {fleet_id} is still run by {status.executor_id}, which is alive")
    lines = FleetLines(json_output, request.time_scale != 1.0, "fleet resume")
    engine.install(WorkerServices(journal, lines, profile))
    with engine.runtime(url, me, fleet_id), workers.alive(url, me), \
            workers.taking_over(url, me, lines.took_over(me)):
        for dead in workers.take_over_dead(url, me):
            lines.took_over(me)(dead)
        summary = engine.wait(fleet_id)
    return int(str(summary["exit_code"]))


def request_of(status: Any) -> FleetRequest:
    from migrator.fleet.stores import FleetRequest

    args = (status.input or {}).get("args") or ()  # DBOS's WorkflowInputs: {"args": [...], "kwargs": {...}}
    return FleetRequest.from_dict(dict(args[0]))


def _fleet_status(client: Any, fleet_id: str | None) -> Any:
    if fleet_id:
        found = client.list_workflows(workflow_ids=[fleet_id], load_output=True)
    else:
        found = client.list_workflows(name="xksmigrate.fleet", sort_desc=True, limit=1, load_output=True)
    if not found:
        raise support.fail(f"no fleet {fleet_id}" if fleet_id else "no fleet has run with this journal")
    return found[0]


def _state_journal(state: str | None, dry_run: bool, read_only: bool = True) -> Journal:
    from migrator.dryrun import REHEARSAL_JOURNAL_NAME

    url = state or (support.default_journal_url(REHEARSAL_JOURNAL_NAME) if dry_run else None)
    return support.open_journal(url, rehearsal=dry_run, read_only=read_only)


def fleet_proceed(fleet_id: str, wave: int, *, state: str | None, dry_run: bool, json_output: bool) -> int:
    """`fleet proceed FLEET_ID --wave N`: a person's go for wave N of a fleet whose file asks for approval."""
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=system_url(_state_journal(state, dry_run)))
    try:
        status = _fleet_status(client, fleet_id)
        if status.status != "PENDING":
            raise support.fail(f"fleet {fleet_id} is {status.status}: there is no wave waiting")
        client.send(fleet_id, {"by": support.who(), "at": time.time()}, topic=f"proceed-{wave}",
                    idempotency_key=f"proceed-{fleet_id}-{wave}")
    finally:
        client.destroy()
    FleetLines(json_output, simulated=False, command="fleet proceed").fleet_event(
        {"type": "fleet_proceed", "fleet_id": fleet_id, "wave": wave, "by": support.who(),
         "message": f"fleet {fleet_id}: wave {wave} may start"})
    return 0


def fleet_status(fleet_id: str | None, *, state: str | None, json_output: bool, dry_run: bool = False,
                 watch: bool = False) -> int:
    """`fleet status`: the fleet's summary when it ended, else where each store stands; `watch`: again every
    2 s while it is going, until it ends (the fleet's exit code)."""
    shown, lines = None, None
    while True:
        summary, finished = _status_summary(fleet_id, state=state, dry_run=dry_run)
        fleet_id = str(summary["fleet_id"])
        if summary != shown:
            lines = lines or FleetLines(json_output, simulated=False, command="fleet status")
            lines.fleet_event(summary)
            shown = summary
        if finished or not watch:
            return int(str(summary["exit_code"])) if finished else 0
        time.sleep(2.0)


def _status_summary(fleet_id: str | None, *, state: str | None, dry_run: bool) -> tuple[dict[str, Any], bool]:
    from dbos import DBOSClient

    from migrator.fleet.outcome import StoreOutcome, fleet_outcome
    from migrator.fleet.stores import store_run_id
    from migrator.journal.models import JournalError

    journal = _state_journal(state, dry_run)
    client = DBOSClient(system_database_url=system_url(journal))
    try:
        status = _fleet_status(client, fleet_id)
        if status.status == "SUCCESS" and isinstance(status.output, dict):
            summary = dict(status.output)
        else:
            planned = client.get_event(status.workflow_id, "planned", timeout_seconds=0) or []
            ended = {ref: StoreOutcome.from_dict(o) for ref, o in
                     (client.get_event(status.workflow_id, "ended", timeout_seconds=0) or {}).items()}
            for ref, account, region, wave in planned:
                if ref in ended:
                    continue
                with contextlib.suppress(JournalError):
                    run = journal.get_run(store_run_id(status.workflow_id, ref))
                    state_now = run.migrations[0].state if run.migrations else run.outcome
                    ended[ref] = StoreOutcome(ref, account, region, wave, run.id, state_now, 0)
            summary = fleet_outcome(status.workflow_id, [tuple(p) for p in planned], ended, None,
                                    finished=False).summary()
        summary["dbos_status"], summary["executor_id"] = status.status, status.executor_id
    finally:
        client.destroy()
        journal.close()
    return summary, status.status not in ("PENDING", "ENQUEUED")
