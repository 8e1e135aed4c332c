"""The options several commands share, as typer annotations: one help text per option, wherever it is used.

Kept apart from `commands.py` so a sub-app (`fleet.py`) takes the same options without importing the app
that registers it. No `from __future__ import annotations` (see commands.py: typer would `eval` them).
"""

from typing import Annotated

import typer

from migrator.cli.environment import DEFAULT_STATE

# No `envvar=` here: XKSMIGRATE_STATE names the real journal, which a --dry-run must never use, so the CLI
# reads it itself (environment.open_journal) only for commands that are not rehearsals.
StateOpt = Annotated[str | None, typer.Option("--state", help="Journal database URL; else $XKSMIGRATE_STATE (never "
                                              f"for --dry-run) [default: {DEFAULT_STATE}]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="NDJSON on stdout: a version line, events, a summary line")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before the disconnect")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", envvar="AWS_PROFILE", help="AWS profile")]
RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS Region (default: the plan's)")]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint-url", envvar="AWS_ENDPOINT_URL",
                                                 help="AWS endpoint (a rehearsal world started by `sim serve`)")]
HooksOpt = Annotated[str | None, typer.Option("--hooks", help="Directory of hook executables (see RUNBOOK.md); "
                                                             "a resume or rollback uses the run's")]
InsecureHooksOpt = Annotated[bool, typer.Option("--allow-insecure-hooks",
                                                help="Run hooks from a directory other users may write")]
ScaleOpt = Annotated[float | None, typer.Option("--time-scale", envvar="XKSMIGRATE_TIME_SCALE",
                                                help="Simulated seconds per real second (rehearsal endpoints only)")]
AcceptOpt = Annotated[list[str] | None, typer.Option(
    "--accept-unverified", metavar="CHECK", help="Run although CHECK could not be made (repeatable; journaled with "
    "who and when; a block can never be accepted; RUNBOOK.md#accepting-unverified-checks)")]
ResolveOpt = Annotated[list[str] | None, typer.Option(
    "--resolve", metavar="HOST=IP:PORT", help="Dial HOST at IP:PORT for preflight's probes, e.g. an SSM port "
    "forward (repeatable; also $XKSMIGRATE_RESOLVE=\"host=ip:port,...\"; RUNBOOK.md#vantage-point)")]
MetricsOpt = Annotated[str | None, typer.Option(
    "--metrics-file", metavar="PATH", help="When the command ends, write Prometheus textfile metrics to PATH "
    "(atomically; e.g. node_exporter's textfile directory, NAME.prom; RUNBOOK.md#metrics-and-traces)")]
ReportOpt = Annotated[str | None, typer.Option(
    "--report", metavar="DIR", help="When the run ends, write its change record into DIR (HTML, JSON, Markdown, "
    "timeline SVG/PNG; as `xksmigrate report`; RUNBOOK.md#change-record)")]
