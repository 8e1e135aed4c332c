"""How `xksmigrate plan` shows its report: NDJSON (findings, then a summary) or rich tables for a person.

The report itself (`preflight.planner.make_report`) knows nothing of output. Findings, remedies and
calls are printed verbatim: they contain brackets (`[keystores.original_credential]`) that rich would
otherwise eat as markup.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from migrator.cli.output import json_line, write_version

if TYPE_CHECKING:
    from migrator.preflight.planner import PlanReport

_COLOUR = {"pass": "green", "warn": "yellow", "block": "bold red"}
_ORDER = ("block", "warn", "pass")


def render(report: PlanReport, json_output: bool) -> None:
    if json_output:
        _render_json(report)
    else:
        _render_human(report)


def _render_json(report: PlanReport) -> None:
    out = sys.stdout
    write_version(out, "plan")
    for s in report.stores:
        for f in s.findings:
            out.write(json_line({"type": "finding", "keystore": s.store_id or s.ref, "check": f.check,
                                 "status": f.status, "message": f.message, "remedy": f.remedy, "detail": f.detail}))
    out.write(json_line({"type": "summary", "plan": report.plan.name, "ready": not report.blocked,
                         "exit_code": report.exit_code,
                         "keystores": [{"ref": s.ref, "id": s.store_id, "blocked": s.blocked, "current": s.current,
                                        "calls": s.calls, "rollback": s.rollback} for s in report.stores]}))


def _render_human(report: PlanReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    for s in report.stores:
        console.print(f"\n[bold]{escape(s.store_id or s.ref)}[/bold]  plan {escape(report.plan.name)}, "
                      f"region {report.plan.region}")
        table = Table(show_lines=False, expand=False)
        table.add_column("status")
        table.add_column("check")
        table.add_column("finding", overflow="fold")
        table.add_column("remedy", overflow="fold")
        for f in sorted(s.findings, key=lambda f: _ORDER.index(f.status)):
            table.add_row(f"[{_COLOUR[f.status]}]{f.status}[/]", escape(f.check), escape(f.message), escape(f.remedy))
        console.print(table)
        if s.calls:
            console.print("[bold]The run will call, in order:[/bold]")
            for i, call in enumerate(s.calls, 1):
                console.print(f"  {i:2}. {call}", highlight=False, markup=False)
            console.print("[bold]If anything fails after the disconnect, the rollback calls:[/bold]")
            for i, call in enumerate(s.rollback, 1):
                console.print(f"  {i:2}. {call}", highlight=False, markup=False)
    verdict = "[bold red]BLOCKED[/]: fix the blocking findings; nothing was changed" if report.blocked else \
        "[bold green]READY[/]: `xksmigrate run` would proceed to the disconnect after asking"
    console.print(f"\n{verdict}")
