"""How `xksmigrate plan` shows its report: NDJSON (findings, then a summary) or rich tables for a person.

The report itself (`preflight.planner.make_report`) knows nothing of output. Findings, remedies and
calls are printed verbatim: they contain brackets (`[keystores.original_credential]`) that rich would
otherwise eat as markup. Names and messages from AWS are shown with their control characters escaped
(`printable`): a key store named with a terminal escape sequence must not drive the operator's terminal.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from migrator.cli.output import json_line, write_version
from migrator.cli.text import printable

if TYPE_CHECKING:
    from migrator.preflight.planner import PlanReport

_COLOUR = {"pass": "green", "warn": "yellow", "block": "bold red", "unverified": "bold magenta", "accepted": "cyan"}
_ORDER = ("block", "unverified", "warn", "accepted", "pass")


def no_changes(report: PlanReport) -> bool:
    """Every key store of the plan already has its target: each is blocked, and only by "nothing to do"."""
    from migrator.preflight.base import nothing_to_do

    return bool(report.stores) and all(nothing_to_do(s.findings) for s in report.stores)


def exit_code(report: PlanReport) -> int:
    """`plan`'s exit code: 0 ready or nothing to change, 3 blocked."""
    return 0 if no_changes(report) else report.exit_code


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
    nothing = no_changes(report)
    out.write(json_line({"type": "summary", "plan": report.plan.name, "ready": not report.blocked,
                         "changes": not nothing, "exit_code": exit_code(report),
                         "unverified": [{"keystore": s.store_id or s.ref, "check": f.check, "message": f.message,
                                         "remedy": f.remedy} for s in report.stores for f in s.unverified],
                         "accepted_unverified": [{"keystore": s.store_id or s.ref, "check": f.check,
                                                  "accepted_by": f.detail.get("accepted_by"),
                                                  "source": f.detail.get("accepted_via")}
                                                 for s in report.stores for f in s.accepted],
                         "unused_acceptances": [{"check": c, "message": why}
                                                for c, why in report.unused_acceptances()],
                         "keystores": [{"ref": s.ref, "id": s.store_id, "account_id": s.account_id, "region": s.region,
                                        "blocked": s.blocked, "current": s.current,
                                        "calls": [] if nothing else s.calls, "rollback": [] if nothing else s.rollback}
                                       for s in report.stores]}))


def _render_human(report: PlanReport) -> None:
    from rich.console import Console
    from rich.markup import escape as escape_markup
    from rich.table import Table

    def escape(text: str) -> str:
        return escape_markup(printable(text))

    console = Console(width=None if sys.stdout.isatty() else 160)
    nothing = no_changes(report)
    for s in report.stores:
        account = f"account {escape(s.account_id)}, " if s.account_id else ""
        console.print(f"\n[bold]{escape(s.store_id or s.ref)}[/bold]  plan {escape(report.plan.name)}, "
                      f"{account}region {escape(s.region or report.plan.region)}")
        table = Table(show_lines=False, expand=False)
        table.add_column("status")
        table.add_column("check")
        table.add_column("finding", overflow="fold")
        table.add_column("remedy", overflow="fold")
        for f in sorted(s.findings, key=lambda f: _ORDER.index(f.status)):
            table.add_row(f"[{_COLOUR[f.status]}]{f.status}[/]", escape(f.check), escape(f.message), escape(f.remedy))
        console.print(table)
        if s.calls and not nothing:
            console.print("[bold]The run will call, in order:[/bold]")
            for i, call in enumerate(s.calls, 1):
                console.print(f"  {i:2}. {printable(call)}", highlight=False, markup=False)
            console.print("[bold]If anything fails after the disconnect, the rollback calls:[/bold]")
            for i, call in enumerate(s.rollback, 1):
                console.print(f"  {i:2}. {printable(call)}", highlight=False, markup=False)
    if nothing:
        from migrator.preflight.base import NO_CHANGES

        console.print(f"\n[bold green]{NO_CHANGES}[/]" + ("" if len(report.stores) == 1 else
                                                         " (every key store of the plan)"))
        return
    for check, why in report.unused_acceptances():
        console.print(f"note: accepting {printable(check)} accepted nothing: {printable(why)}", highlight=False,
                      markup=False)
    unverified = [(s, f) for s in report.stores for f in s.unverified]
    if unverified:
        console.print("\n[bold]Not checked (unverified): each holds the run until it is made checkable or "
                      "accepted by name[/bold]")
        for s, f in unverified:
            what = printable(f.remedy or f.message)
            console.print(f"  {printable(s.store_id or s.ref)}: {printable(f.check)}: {what}; or accept it: "
                          f"--accept-unverified {printable(f.check)}", highlight=False, markup=False)
    blocks = any(f.status == "block" for s in report.stores for f in s.findings)
    if blocks:
        verdict = "[bold red]BLOCKED[/]: fix the blocking findings; nothing was changed"
    elif report.blocked:
        verdict = (f"[bold red]NOT READY[/]: {len(unverified)} check(s) could not be made; make them checkable "
                   "or accept each by name (RUNBOOK.md#accepting-unverified-checks); nothing was changed")
    else:
        verdict = "[bold green]READY[/]: `xksmigrate run` would proceed to the disconnect after asking"
    console.print(f"\n{verdict}")
