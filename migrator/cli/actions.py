"""What each command does, once typer has parsed it: one function per command, returning the exit code.

`commands.py` only parses and calls one of these. They stitch together the pieces in `environment.py`
(plans, journals, Environments, prompts), the engine, and the output (`output.py`, `plan_view.py`).
Heavy modules (the engine, preflight, the rehearsal wing) are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from migrator.cli import capture as capture_cli
from migrator.cli import environment as support
from migrator.cli import report as run_report

if TYPE_CHECKING:
    from migrator.cli.output import Renderer
    from migrator.engine.results import RunResult
    from migrator.journal.repository import Journal


def run(plan_file: str, *, dry_run: bool, yes: bool, json_output: bool, state: str | None, world: str | None,
        faults: str | None, profile: str | None, region: str | None, endpoint_url: str | None,
        time_scale: float | None, hooks: str | None, postpone_cutover: bool, postpone_flag_file: str | None,
        cutover_at: str | None, allow_insecure_hooks: bool = False, accept_unverified: list[str] | None = None,
        resolve: list[str] | None = None, metrics_file: str | None = None, report: str | None = None) -> int:
    """`run`: a new run of the plan in PLAN_FILE; what a resume must re-derive is recorded with it (recorded.py),
    the --accept-unverified names too (a resume needs no flag to keep them)."""
    from migrator.cli import observe, recorded
    from migrator.engine import runner as engine

    observe.start("run", metrics_file)
    report_dir = run_report.out_dir(report, "--report") if report else None
    accepted = accept_names(accept_unverified)
    plan = support.load_plan(plan_file)
    if dry_run:
        plan = capture_cli.plan_for_world(plan, world)
    when = support.parse_cutover_at(cutover_at) if cutover_at else None
    run_hooks = support.make_hooks(hooks, allow_insecure=allow_insecure_hooks)
    support.require_consent(yes)
    support.interruptible()
    with support.environment(plan, dry_run=dry_run, json_output=json_output, command="run", yes=yes, state=state,
                             world=world, faults=faults, profile=profile, region=region, endpoint_url=endpoint_url,
                             time_scale=time_scale, resolve=resolve) as (env, renderer):
        env.hooks = run_hooks
        renderer.stores = [ks.id or ks.ref for ks in plan.keystores]
        renderer.use_clock(env.clock.scale)
        env.postpone, env.postpone_flag_file, env.cutover_at = postpone_cutover, postpone_flag_file, when
        env.run_facts = recorded.run_facts(
            plan, hooks_dir=hooks, allow_insecure_hooks=allow_insecure_hooks, endpoint_url=endpoint_url,
            account_id=None if dry_run else recorded.caller_account(env.clients), dry_run=dry_run)
        if accepted:
            env.run_facts["accept_unverified"] = list(accepted)
        renderer = observe.watch(env, renderer, plan)
        return _finish(renderer, engine.start(plan, env), env.journal, report_dir)


def accept_names(names: list[str] | None) -> tuple[str, ...]:
    """--accept-unverified CHECK names, each a check id (exit 2 otherwise), once each, in order."""
    from migrator.plan import RE_CHECK_ID

    for name in names or ():
        if not RE_CHECK_ID.fullmatch(name):
            raise support.fail(f"--accept-unverified: {name!r} is not a check id like proxy.credential "
                               "(`xksmigrate plan` names each unverified check)")
    return tuple(dict.fromkeys(names or ()))


def plan(plan_file: str, *, dry_run: bool, json_output: bool, state: str | None, world: str | None,
         faults: str | None, profile: str | None, region: str | None, endpoint_url: str | None,
         accept_unverified: list[str] | None = None, resolve: list[str] | None = None) -> int:
    """`plan`: the read-only report (0 ready or nothing to change, 3 blocked or an unaccepted unverified check)."""
    from migrator.cli import plan_view
    from migrator.preflight import planner

    accepted = accept_names(accept_unverified)
    plan = support.load_plan(plan_file)
    dry_run = dry_run or world is not None  # a world file is a rehearsal
    plan = capture_cli.plan_for_world(plan, world)
    with support.environment(plan, dry_run=dry_run, json_output=json_output, command="plan", yes=False, state=state,
                             world=world, faults=faults, profile=profile, region=region, endpoint_url=endpoint_url,
                             time_scale=None, observe=False, resolve=resolve) as (env, _):
        report = planner.make_report(plan, env, accepted)
        plan_view.render(report, json_output)
    return plan_view.exit_code(report)


def resume(run_id: str | None, *, yes: bool, json_output: bool, state: str | None, retry_stuck: bool,
           profile: str | None, region: str | None, endpoint_url: str | None, time_scale: float | None,
           hooks: str | None, allow_insecure_hooks: bool = False, resolve: list[str] | None = None,
           metrics_file: str | None = None, report: str | None = None) -> int:
    """`resume`: continue RUN_ID (default: the latest unfinished run) from where its journal says it stood.

    The plan, hooks, endpoint, account and paths come from the journal (cli/recorded.py), not the command line.
    """
    from migrator.cli import observe
    from migrator.engine import runner as engine

    observe.start("resume", metrics_file)
    report_dir = run_report.out_dir(report, "--report") if report else None
    journal = support.open_journal(state)
    run_view = support.find_run(journal, run_id, unfinished=True, allow_stuck=retry_stuck)
    plan, env, renderer = support.recorded_run_env(
        journal, run_view, command="resume", json_output=json_output, yes=yes, profile=profile, region=region,
        endpoint_url=endpoint_url, time_scale=time_scale, hooks=hooks, retry_stuck=retry_stuck,
        allow_insecure_hooks=allow_insecure_hooks, resolve=resolve)
    renderer = observe.watch(env, renderer, plan)
    return _finish(renderer, engine.resume(plan, env, run_view.id), env.journal, report_dir)


def _finish(renderer: Renderer, result: RunResult, journal: Journal, report_dir: Path | None) -> int:
    """The run's summary to its renderer (support.finish), then its report when --report DIR was given."""
    code = support.finish(renderer, result, journal)
    if report_dir is not None:
        run_report.after_run(journal, result.run_id, report_dir)
    return code


def _report(command: str, json_output: bool, text: str, **facts: object) -> None:
    """The one-line outcome of a command without a run view: text, or NDJSON (a version and a summary line)."""
    if not json_output:
        typer.echo(text)
        return
    import sys

    from migrator.cli.output import json_line, write_version

    write_version(sys.stdout, command)
    sys.stdout.write(json_line({"type": "summary", "exit_code": 0, "message": text, **facts}))
    sys.stdout.flush()


def proceed(run_id: str, *, state: str | None, json_output: bool = False) -> int:
    """`proceed`: release a postponed cut-over by journaling a note the waiting runner looks for."""
    journal = support.open_journal(state)
    run_view = support.find_run(journal, run_id)
    if run_view.outcome not in ("running", "interrupted"):
        raise support.fail(f"{run_id} already ended: {run_view.outcome}")
    journal.record(run_id, kind="note", outcome="proceed", detail={"message": f"released by {support.who()}"})
    _report("proceed", json_output, f"{run_id}: cut-over released; the runner re-runs preflight, then disconnects",
            outcome="released", run_id=run_id)
    return 0


def rollback(run_id: str, *, yes: bool, json_output: bool, state: str | None, profile: str | None,
             region: str | None, endpoint_url: str | None, time_scale: float | None, hooks: str | None,
             allow_insecure_hooks: bool = False, resolve: list[str] | None = None,
             metrics_file: str | None = None, report: str | None = None) -> int:
    """`rollback`: a new run that returns every key store RUN_ID changed to its recorded original configuration,
    last first (RUN_ID's own record stays; the two are linked). Exit 2, nothing started, when there is nothing
    to take back or a rollback of RUN_ID is still under way (it is resumed, not started twice)."""
    from migrator.cli import observe
    from migrator.engine import runner as engine
    from migrator.engine import whole_run

    observe.start("rollback", metrics_file)
    report_dir = run_report.out_dir(report, "--report") if report else None
    journal = support.open_journal(state)
    run_view = support.find_run(journal, run_id)
    if run_view.outcome not in ("completed", "partial", "rolled_back"):
        raise support.fail(f"{run_id} is {run_view.outcome}; only a run that ended with changed key stores can be "
                           "rolled back (an unfinished one, or a rollback under way: xksmigrate resume)")
    for other in journal.rollbacks_of(run_id):
        if other.outcome in whole_run.UNFINISHED_ROLLBACK:
            retry = " --retry-stuck" if other.outcome == "stuck" else ""
            raise support.fail(f"{other.id}, a rollback of {run_id}, has not finished ({other.outcome}); "
                               f"continue it with: xksmigrate resume {other.id}{retry}")
    if not whole_run.still_changed(journal, run_view):
        by = whole_run.run_links(journal, run_view)["rolled_back_by"]
        raise support.fail(f"{run_id} is {run_view.outcome}: none of its key stores is left changed"
                           + (f" (rolled back by {by})" if by else "") + ", nothing to roll back")
    plan, env, renderer = support.recorded_run_env(
        journal, run_view, command="rollback", json_output=json_output, yes=yes, profile=profile, region=region,
        endpoint_url=endpoint_url, time_scale=time_scale, hooks=hooks, allow_insecure_hooks=allow_insecure_hooks,
        resolve=resolve)
    renderer = observe.watch(env, renderer, plan)
    return _finish(renderer, engine.rollback(plan, env, run_view.id), env.journal, report_dir)


def unlock(lock_id: str, *, force: bool, state: str | None, json_output: bool = False) -> int:
    """`unlock`: remove a lock; exit 6 while its holder is seen alive (unless forced)."""
    from migrator.journal.repository import HolderAlive

    journal = support.open_journal(state)
    try:
        removed = journal.force_unlock(lock_id, force=force)
    except HolderAlive as alive:
        raise support.fail(str(alive), code=6) from None
    if removed is None:
        raise support.fail(f"no lock {lock_id} in {journal.url_for_display}")
    _report("unlock", json_output,
            f"removed {lock_id} ({removed.resource}, held by {removed.owner}@{removed.host} pid {removed.pid})",
            outcome="unlocked", lock_id=lock_id, resource=removed.resource)
    return 0


def graph() -> int:
    """`graph`: the state machine as mermaid."""
    from migrator.engine import machine

    typer.echo(machine.mermaid())
    return 0


def sim_serve(world: str | None, port: int, faults: str | None, log: str | None) -> int:
    """`sim serve`: the rehearsal world on loopback, until interrupted."""
    from migrator.rehearsal.serve_main import run_serve

    return run_serve(world, port, faults, log)


def sim_proxy(*, host: str, port: int, uri_path_prefix: str, region: str, access_key_ids: list[str],
              secrets: list[str], keys: list[str], hostnames: list[str], key_manager: str, ca_dir: str | None,
              tls: bool) -> int:
    """`sim proxy`: one XKS proxy; --access-key-id and --secret pair up in order."""
    from migrator.rehearsal.proxy_main import run_proxy

    if len(access_key_ids) != len(secrets):
        raise support.fail("--access-key-id and --secret come in pairs")
    return run_proxy(host=host, port=port, uri_path_prefix=uri_path_prefix, region=region,
                     credentials=list(zip(access_key_ids, secrets, strict=True)), keys=keys, tls=tls,
                     hostnames=hostnames, ca_dir=ca_dir, key_manager=key_manager)
