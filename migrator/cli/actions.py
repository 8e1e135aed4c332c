"""What each command does, once typer has parsed it: one function per command, returning the exit code.

`commands.py` only parses and calls one of these. They stitch together the pieces in `environment.py`
(plans, journals, Environments, prompts), the engine, and the output (`output.py`, `plan_view.py`).
Heavy modules (the engine, preflight, the rehearsal wing) are imported inside the functions.
"""

from __future__ import annotations

import typer

from migrator.cli import environment as support


def run(plan_file: str, *, dry_run: bool, yes: bool, json_output: bool, state: str | None, world: str | None,
        faults: str | None, profile: str | None, region: str | None, endpoint_url: str | None,
        time_scale: float | None, hooks: str | None, postpone_cutover: bool, postpone_flag_file: str | None,
        cutover_at: str | None) -> int:
    """`run`: a new run of the plan in PLAN_FILE."""
    from migrator.engine import runner as engine

    plan = support.load_plan(plan_file)
    when = support.parse_cutover_at(cutover_at) if cutover_at else None
    support.require_consent(yes)
    support.interruptible()
    with support.environment(plan, dry_run=dry_run, json_output=json_output, command="run", yes=yes, state=state,
                             world=world, faults=faults, profile=profile, region=region, endpoint_url=endpoint_url,
                             time_scale=time_scale) as (env, renderer):
        env.hooks = support.make_hooks(hooks)
        env.postpone, env.postpone_flag_file, env.cutover_at = postpone_cutover, postpone_flag_file, when
        return support.finish(renderer, engine.start(plan, env))


def plan(plan_file: str, *, dry_run: bool, json_output: bool, state: str | None, world: str | None,
         faults: str | None, profile: str | None, region: str | None, endpoint_url: str | None) -> int:
    """`plan`: the read-only report (0 ready, 3 blocked)."""
    from migrator.cli import plan_view
    from migrator.preflight import planner

    plan = support.load_plan(plan_file)
    with support.environment(plan, dry_run=dry_run, json_output=json_output, command="plan", yes=False, state=state,
                             world=world, faults=faults, profile=profile, region=region, endpoint_url=endpoint_url,
                             time_scale=None, observe=False) as (env, _):
        report = planner.make_report(plan, env)
        plan_view.render(report, json_output)
    return report.exit_code


def resume(run_id: str | None, *, yes: bool, json_output: bool, state: str | None, retry_stuck: bool,
           profile: str | None, region: str | None, endpoint_url: str | None, time_scale: float | None,
           hooks: str | None) -> int:
    """`resume`: continue RUN_ID (default: the latest unfinished run) from where its journal says it stood."""
    from migrator.engine import runner as engine

    journal = support.open_journal(state)
    run_view = support.find_run(journal, run_id, unfinished=True, allow_stuck=retry_stuck)
    plan, env, renderer = support.recorded_run_env(
        journal, run_view, command="resume", json_output=json_output, yes=yes, profile=profile, region=region,
        endpoint_url=endpoint_url, time_scale=time_scale, hooks=hooks, retry_stuck=retry_stuck)
    return support.finish(renderer, engine.resume(plan, env, run_view.id))


def proceed(run_id: str, *, state: str | None) -> int:
    """`proceed`: release a postponed cut-over by journaling a note the waiting runner looks for."""
    journal = support.open_journal(state)
    run_view = support.find_run(journal, run_id)
    if run_view.outcome not in ("running", "interrupted"):
        raise support.fail(f"{run_id} already ended: {run_view.outcome}")
    journal.record(run_id, kind="note", outcome="proceed", detail={"message": f"released by {support.who()}"})
    typer.echo(f"{run_id}: cut-over released; the runner re-runs preflight, then disconnects")
    return 0


def rollback(run_id: str, *, yes: bool, json_output: bool, state: str | None, profile: str | None,
             region: str | None, endpoint_url: str | None, time_scale: float | None, hooks: str | None) -> int:
    """`rollback`: return a completed run's key stores to their recorded original configuration."""
    from migrator.engine import runner as engine

    journal = support.open_journal(state)
    run_view = support.find_run(journal, run_id)
    if run_view.outcome != "completed":
        raise support.fail(f"{run_id} is {run_view.outcome}; only a completed run can be rolled back "
                           "(an unfinished one: xksmigrate resume)")
    plan, env, renderer = support.recorded_run_env(
        journal, run_view, command="rollback", json_output=json_output, yes=yes, profile=profile, region=region,
        endpoint_url=endpoint_url, time_scale=time_scale, hooks=hooks)
    return support.finish(renderer, engine.rollback(plan, env, run_view.id))


def unlock(lock_id: str, *, force: bool, state: str | None) -> int:
    """`unlock`: remove a lock; exit 6 while its holder is seen alive (unless forced)."""
    from migrator.journal.repository import HolderAlive

    journal = support.open_journal(state)
    try:
        removed = journal.force_unlock(lock_id, force=force)
    except HolderAlive as alive:
        raise support.fail(str(alive), code=6) from None
    if removed is None:
        raise support.fail(f"no lock {lock_id} in {journal.url_for_display}")
    typer.echo(f"removed {lock_id} ({removed.resource}, held by {removed.owner}@{removed.host} pid {removed.pid})")
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
