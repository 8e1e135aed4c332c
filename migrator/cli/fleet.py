"""`xksmigrate fleet ...`: the typer sub-app of the fleet commands (registered in commands.py).

As in commands.py each command only parses and calls one function, imported inside its body so `--help`
stays light; no `from __future__ import annotations` for the same reason (typer would `eval` them).
"""

from typing import Annotated

import typer

from migrator.cli.options import (
    AcceptOpt,
    EndpointOpt,
    JsonOpt,
    ProfileOpt,
    ResolveOpt,
    ScaleOpt,
    StateOpt,
    YesOpt,
)

fleet_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)  # its help: commands.py's add_typer

FleetArg = Annotated[str, typer.Argument(metavar="FILE", help="The fleet file (schema: migrator/fleet/spec.py)")]


@fleet_app.command("plan")
def fleet_plan(fleet_file: FleetArg,
               dry_run: Annotated[bool, typer.Option("--dry-run", help="Against an in-process world derived from "
                                                     "the fleet file")] = False,
               json_output: JsonOpt = False, state: StateOpt = None,
               world: Annotated[str | None, typer.Option("--world", help="World file (a twin from `capture`, a "
                                                         "hand-written world): implies --dry-run")] = None,
               faults: Annotated[str | None, typer.Option("--faults", help="Fault file for --dry-run")] = None,
               profile: ProfileOpt = None, endpoint_url: EndpointOpt = None, accept_unverified: AcceptOpt = None,
               resolve: ResolveOpt = None) -> None:
    """Read-only: every store's preflight through its account's role, the fleet's own checks, the waves in order."""
    from migrator.cli import fleet_plan as action

    raise typer.Exit(action.plan(fleet_file, dry_run=dry_run, json_output=json_output, state=state, world=world,
                                 faults=faults, profile=profile, endpoint_url=endpoint_url,
                                 accept_unverified=accept_unverified or [], resolve=resolve or []))


RehearsalOpt = Annotated[bool, typer.Option("--dry-run", help="A rehearsal's fleet (the rehearsal journal)")]
FleetIdArg = Annotated[str | None, typer.Argument(metavar="FLEET_ID", help="The fleet (default: the latest)")]
FleetReportOpt = Annotated[str | None, typer.Option(
    "--report", metavar="DIR", help="When the fleet ends, write its change record into DIR (HTML, JSON, Markdown, "
    "timeline SVG/PNG; as `fleet report`; RUNBOOK.md#change-record)")]


@fleet_app.command("run")
def fleet_run(fleet_file: FleetArg,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="Rehearse on an in-process world derived "
                                                    "from the fleet file (never a real account or journal)")] = False,
              yes: YesOpt = False, json_output: JsonOpt = False, state: StateOpt = None,
              faults: Annotated[str | None, typer.Option("--faults", help="Fault file for --dry-run")] = None,
              world_log: Annotated[str | None, typer.Option("--world-log", metavar="PATH", help="--dry-run: write "
                                                            "the world's log (every call, its account and Region, "
                                                            "on the world's clock) to PATH")] = None,
              profile: ProfileOpt = None, endpoint_url: EndpointOpt = None, time_scale: ScaleOpt = None,
              report: FleetReportOpt = None) -> None:
    """Migrate the fleet in waves: the canary first and alone, then waves within max_in_flight and the failure
    tolerance, a health gate and the bake between waves (on DBOS: `fleet worker`s share and take over)."""
    from migrator.cli import fleet_run as action

    raise typer.Exit(action.fleet_run(fleet_file, dry_run=dry_run, yes=yes, json_output=json_output, state=state,
                                      profile=profile, endpoint_url=endpoint_url, time_scale=time_scale,
                                      faults=faults, world_log=world_log, report=report))


@fleet_app.command("status")
def fleet_status(fleet_id: FleetIdArg = None, json_output: JsonOpt = False, state: StateOpt = None,
                 dry_run: RehearsalOpt = False,
                 watch: Annotated[bool, typer.Option("--watch", help="Again every 2 s until the fleet ends; then "
                                                     "its exit code")] = False) -> None:
    """The fleet's summary when it ended, else where each of its stores stands."""
    from migrator.cli import fleet_run as action

    raise typer.Exit(action.fleet_status(fleet_id, state=state, json_output=json_output, dry_run=dry_run,
                                         watch=watch))


@fleet_app.command("proceed")
def fleet_proceed(fleet_id: Annotated[str, typer.Argument(metavar="FLEET_ID", help="The fleet waiting")],
                  wave: Annotated[int, typer.Option("--wave", min=2, help="The wave that may start")],
                  json_output: JsonOpt = False, state: StateOpt = None, dry_run: RehearsalOpt = False) -> None:
    """Let wave N start, in a fleet whose file asks for approval between waves ([rollout] approval = true)."""
    from migrator.cli import fleet_run as action

    raise typer.Exit(action.fleet_proceed(fleet_id, wave, state=state, dry_run=dry_run, json_output=json_output))


@fleet_app.command("resume")
def fleet_resume(fleet_id: FleetIdArg = None, json_output: JsonOpt = False, state: StateOpt = None,
                 profile: ProfileOpt = None, report: FleetReportOpt = None) -> None:
    """Continue a fleet whose runner died, from its checkpoints and each store's journal."""
    from migrator.cli import fleet_run as action

    raise typer.Exit(action.fleet_resume(fleet_id, state=state, profile=profile, json_output=json_output,
                                         report=report))


@fleet_app.command("report")
def fleet_report(fleet_id: FleetIdArg = None,
                 out: Annotated[str, typer.Option("--out", metavar="DIR", help="Directory to write into "
                                                  "(created if missing)")] = ".",
                 formats: Annotated[str, typer.Option("--format", metavar="html,json,md",
                                                      help="Which files, comma-separated")] = "html,json,md",
                 state: StateOpt = None, dry_run: RehearsalOpt = False) -> None:
    """The fleet's change record: one row per store, one timeline with every store's window (read-only)."""
    from migrator.cli import fleet_report as action

    raise typer.Exit(action.fleet_report(fleet_id, state=state, dry_run=dry_run, out=out, formats=formats))


@fleet_app.command("worker")
def fleet_worker(json_output: JsonOpt = False, state: StateOpt = None, profile: ProfileOpt = None) -> None:
    """Work on the fleets of this journal (PostgreSQL: on several machines) and take over a dead worker's stores."""
    from migrator.cli import fleet_run as action

    raise typer.Exit(action.fleet_worker(state=state, profile=profile, json_output=json_output))
