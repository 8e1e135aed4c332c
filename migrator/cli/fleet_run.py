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
from migrator.cli.fleet_report import after_fleet
from migrator.cli.fleet_state import fleet_status_of, fleet_view, request_of, state_journal, system_url
from migrator.cli.report import out_dir
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


def executor_id() -> str:
    """This worker's DBOS executor id: host and pid, so a dead one is told from a live one (engine.py)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fleet_run(fleet_file: str, *, dry_run: bool, yes: bool, json_output: bool, state: str | None,
              profile: str | None, endpoint_url: str | None, time_scale: float | None,
              faults: str | None = None, world_log: str | None = None, report: str | None = None) -> int:
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
    report_dir = out_dir(report, "--report") if report else None
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
        if report_dir is not None:
            after_fleet(env.journal, request.fleet_id, report_dir)
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


def fleet_resume(fleet_id: str | None, *, state: str | None, profile: str | None, json_output: bool,
                 report: str | None = None) -> int:
    """`fleet resume`: continue a fleet whose runner died, from its checkpoints and its stores' journals."""
    from dbos import DBOSClient

    from migrator.fleet import engine, workers

    support.interruptible()
    report_dir = out_dir(report, "--report") if report else None
    journal = support.open_journal(state)
    url, me = system_url(journal), executor_id()
    client = DBOSClient(system_database_url=url)
    try:
        status = fleet_status_of(client, fleet_id)
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
    if report_dir is not None:
        after_fleet(journal, fleet_id, report_dir)
    return int(str(summary["exit_code"]))


def fleet_proceed(fleet_id: str, wave: int, *, state: str | None, dry_run: bool, json_output: bool) -> int:
    """`fleet proceed FLEET_ID --wave N`: a person's go for wave N of a fleet whose file asks for approval."""
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=system_url(state_journal(state, dry_run)))
    try:
        status = fleet_status_of(client, fleet_id)
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
    journal = state_journal(state, dry_run)
    try:
        summary, finished, _ = fleet_view(journal, fleet_id)
    finally:
        journal.close()
    return summary, finished
