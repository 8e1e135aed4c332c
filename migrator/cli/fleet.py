"""`xksmigrate fleet ...`: the typer sub-app of the fleet commands (registered in commands.py).

As in commands.py each command only parses and calls one function, imported inside its body so `--help`
stays light; no `from __future__ import annotations` for the same reason (typer would `eval` them).
"""

from typing import Annotated

import typer

from migrator.cli.options import AcceptOpt, EndpointOpt, JsonOpt, ProfileOpt, ResolveOpt, StateOpt

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

