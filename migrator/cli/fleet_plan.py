"""`xksmigrate fleet plan FILE`: read-only, every store's preflight, the fleet's own checks, the waves in order.

The fleet file is read first (a bad one is one line naming the file and the key, exit 2, before any AWS
call). Then `plan`'s report of the whole fleet (`FleetSpec.whole`, each store through its account's role, the
endpoint rules across every account), exactly as `xksmigrate plan` makes it, and what only the fleet can see
(fleet/checks.py: two stores of one proxy in a wave, role sessions shorter than a budget plus its rollback's).

Output: each store as `plan` shows it (plan_view), the fleet's checks, the waves, the verdict. With --json,
NDJSON (README "fleet plan"): the version line (output.write_version, command "fleet plan"), then

    {"type": "finding", "keystore": ID, "check", "status", "message", "remedy", "detail"}   each store's, as plan's
    {"type": "fleet_finding", "check", "status", "message", "remedy", "detail"}       the fleet's own (no store:
                                                         a line type of its own, so a reader of plan's finding
                                                         lines never meets a finding without a keystore)
    {"type": "wave", "number", "label", "stores": [REF, ...], "canary": bool}          in the order they start
    {"type": "summary", "fleet", "verdict", "ready", "changes", "exit_code", "rollout", "unverified",
     "accepted_unverified", "unused_acceptances", "keystores": [... plan's, with "wave"]}

Exit code: 0 ready (or nothing to change), 3 a block (a store's or the fleet's) or an unverified check not
accepted, 2 bad input.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from migrator.cli import capture as capture_cli
from migrator.cli import environment as support
from migrator.cli.actions import accept_names
from migrator.cli.errors import fail
from migrator.cli.text import printable

if TYPE_CHECKING:
    from migrator.fleet.plan_report import FleetPlanReport
    from migrator.fleet.spec import FleetSpec

COMMAND = "fleet plan"


def plan(fleet_file: str, *, dry_run: bool, json_output: bool, state: str | None, world: str | None,
         faults: str | None, profile: str | None, endpoint_url: str | None,
         accept_unverified: list[str] | None = None, resolve: list[str] | None = None) -> int:
    """`fleet plan`: the fleet file, then `plan`'s report of the whole fleet joined with the fleet's checks."""
    from migrator.fleet.plan_report import fleet_report
    from migrator.preflight import planner

    accepted = accept_names(accept_unverified)
    spec = load_fleet(fleet_file)
    dry_run = dry_run or world is not None  # a world file is a rehearsal
    whole = capture_cli.plan_for_world(spec.whole, world)
    # command "plan": the environment `plan` gets (read-only, no time-scale warning: it does not wait)
    with support.environment(whole, dry_run=dry_run, json_output=json_output, command="plan", yes=False,
                             state=state, world=world, faults=faults, profile=profile, region=None,
                             endpoint_url=endpoint_url, time_scale=None, observe=False, resolve=resolve) as (env, _):
        result = fleet_report(spec, planner.make_report(whole, env, accepted))
    if json_output:
        render_json(result)
    else:
        render_human(result)
    return result.exit_code


def load_fleet(path: str) -> FleetSpec:
    """The fleet file, or the one-line error that names the file and the key (exit 2)."""
    from migrator.fleet.spec import load_fleet as read
    from migrator.plan_toml import PlanError

    try:
        return read(path)
    except PlanError as exc:
        raise fail(str(exc)) from None


def rollout_facts(result: FleetPlanReport) -> dict[str, object]:
    r = result.spec.rollout
    return {"max_in_flight": r.max_in_flight, "failure_tolerance": r.failure_tolerance, "bake_seconds": r.bake,
            "ramp": r.ramp, "alarms": list(r.alarms), "approval": r.approval, "waves": len(result.waves)}


def render_json(result: FleetPlanReport, *, version: bool = True) -> None:
    """`version=False`: inside another command's stream (fleet run's refusal), which wrote its own version line."""
    from migrator.cli import plan_view
    from migrator.cli.output import json_line, write_version
    from migrator.fleet.plan_report import READY, changes

    out = sys.stdout
    if version:
        write_version(out, COMMAND)
    plan_view.write_findings(out, result.report.stores)
    for f in result.findings:
        out.write(json_line({"type": "fleet_finding", **plan_view.finding_facts(f)}))
    for w in result.waves:
        out.write(json_line({"type": "wave", "number": w.number, "label": w.label, "stores": list(w.refs),
                             "canary": w.canary}))
    changing = result.changing
    keystores = [{**plan_view.keystore_facts(s, calls=changes(s)), "ref": fs.ref, "wave": result.wave_of(fs.ref)}
                 for fs, s in result.pairs]
    out.write(json_line({"type": "summary", "fleet": result.spec.name, "verdict": result.verdict,
                         "ready": result.verdict == READY, "changes": bool(changing), "exit_code": result.exit_code,
                         "rollout": rollout_facts(result),
                         **plan_view.acceptance_facts(result.report, changing), "keystores": keystores}))


def render_human(result: FleetPlanReport) -> None:
    from migrator.cli import plan_view
    from migrator.fleet import plan_report
    from migrator.preflight.base import NO_CHANGES

    out = plan_view.console()
    for s in result.report.stores:
        plan_view.render_store(out, result.report, s, calls=plan_report.changes(s))
        if not plan_report.changes(s):
            out.print(f"[green]{NO_CHANGES}[/]")
    out.print(f"\n[bold]Fleet {plan_view.escape(result.spec.name)}[/bold]: {len(result.spec.stores)} stores, "
              f"{len({fs.account.account_id for fs in result.spec.stores})} accounts, "
              f"{len({fs.keystore.region for fs in result.spec.stores})} Regions")
    out.print(plan_view.findings_table(result.findings))
    out.print(f"[bold]Waves, in order[/bold] ({_rollout_text(result)}):")
    for w in result.waves:
        out.print(f"  {w.label}: {printable(', '.join(w.refs))}", highlight=False, markup=False, soft_wrap=True)
    unverified = plan_view.render_acceptances(out, result.report, result.changing)
    first = f"{result.waves[0].label} ({plan_view.escape(', '.join(result.waves[0].refs))})"
    verdict = {
        plan_report.BLOCKED: "[bold red]BLOCKED[/]: fix the blocking findings (a store's or the fleet's); nothing "
                             "was changed",
        plan_report.NOT_READY: f"[bold red]NOT READY[/]: {unverified} check(s) could not be made; make them "
                               "checkable or accept each by name (RUNBOOK.md#accepting-unverified-checks); nothing "
                               "was changed",
        plan_report.READY: f"[bold green]READY[/]: `xksmigrate fleet run` would start with {first} after asking",
        plan_report.NO_CHANGES: "[bold green]No changes[/]: every key store of the fleet already has its target "
                                "configuration",
    }[result.verdict]
    out.print(f"\n{verdict}")


def _rollout_text(result: FleetPlanReport) -> str:
    from migrator.cli.output import fmt_seconds

    r = result.spec.rollout
    parts = [f"at most {r.max_in_flight} store{'s' if r.max_in_flight != 1 else ''} disconnected at once",
             f"failure tolerance {r.failure_tolerance}", f"bake {fmt_seconds(r.bake)} after each wave's health gate"]
    if r.alarms:
        parts.append(f"alarms {', '.join(r.alarms)}")
    if r.approval:
        parts.append("a person approves each wave")
    return "; ".join(parts)
