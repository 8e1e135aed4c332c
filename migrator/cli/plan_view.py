"""How `xksmigrate plan` shows its report: NDJSON (findings, then a summary) or rich tables for a person.

The report itself (`preflight.planner.make_report`) knows nothing of output. Findings, remedies and
calls are printed verbatim: they contain brackets (`[keystores.original_credential]`) that rich would
otherwise eat as markup. Names and messages from AWS are shown with their control characters escaped
(`printable`): a key store named with a terminal escape sequence must not drive the operator's terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from migrator.cli.output import json_line, write_version
from migrator.cli.text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from migrator.preflight.base import Finding
    from migrator.preflight.planner import PlanReport, StorePlan

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
    write_findings(out, report.stores)
    nothing = no_changes(report)
    out.write(json_line({"type": "summary", "plan": report.plan.name, "ready": not report.blocked,
                         "changes": not nothing, "exit_code": exit_code(report),
                         **acceptance_facts(report, report.stores),
                         "keystores": [keystore_facts(s, calls=not nothing) for s in report.stores]}))


def write_findings(out: TextIO, stores: Sequence[StorePlan]) -> None:
    """One `finding` line per finding of each store (`fleet plan` writes the same lines)."""
    for s in stores:
        for f in s.findings:
            out.write(json_line({"type": "finding", "keystore": s.store_id or s.ref, **finding_facts(f)}))


def finding_facts(f: Finding) -> dict[str, object]:
    return {"check": f.check, "status": f.status, "message": f.message, "remedy": f.remedy, "detail": f.detail}


def acceptance_facts(report: PlanReport, stores: Sequence[StorePlan]) -> dict[str, object]:
    """The summary's unverified checks of `stores`, the acceptances and those that accepted nothing."""
    return {"unverified": [{"keystore": s.store_id or s.ref, "check": f.check, "message": f.message,
                            "remedy": f.remedy} for s in stores for f in s.unverified],
            "accepted_unverified": [{"keystore": s.store_id or s.ref, "check": f.check,
                                     "accepted_by": f.detail.get("accepted_by"), "source": f.detail.get("accepted_via")}
                                    for s in report.stores for f in s.accepted],
            "unused_acceptances": [{"check": c, "message": why} for c, why in report.unused_acceptances()]}


def keystore_facts(s: StorePlan, *, calls: bool) -> dict[str, object]:
    """One store in the summary; `calls=False` (nothing to change) leaves its call sequences empty."""
    return {"ref": s.ref, "id": s.store_id, "account_id": s.account_id, "region": s.region, "blocked": s.blocked,
            "current": s.current, "calls": s.calls if calls else [], "rollback": s.rollback if calls else []}


def console() -> Console:
    """The console for a person: the terminal's width, else 160 columns (a log keeps long lines whole)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def escape(text: str) -> str:
    """AWS's text, with control characters shown escaped and rich's markup brackets kept as text."""
    from rich.markup import escape as escape_markup

    return escape_markup(printable(text))


def findings_table(findings: Sequence[Finding]) -> Table:
    """status, check, finding, remedy: the worst first."""
    from rich.table import Table

    table = Table(show_lines=False, expand=False)
    table.add_column("status")
    table.add_column("check")
    table.add_column("finding", overflow="fold")
    table.add_column("remedy", overflow="fold")
    for f in sorted(findings, key=lambda f: _ORDER.index(f.status)):
        table.add_row(f"[{_COLOUR[f.status]}]{f.status}[/]", escape(f.check), escape(f.message), escape(f.remedy))
    return table


def render_store(out: Console, report: PlanReport, s: StorePlan, *, calls: bool) -> None:
    """One store: where it is, its findings, and (`calls`) the run's calls and the rollback's."""
    account = f"account {escape(s.account_id)}, " if s.account_id else ""
    out.print(f"\n[bold]{escape(s.store_id or s.ref)}[/bold]  plan {escape(report.plan.name)}, "
              f"{account}region {escape(s.region or report.plan.region)}")
    out.print(findings_table(s.findings))
    if s.calls and calls:
        out.print("[bold]The run will call, in order:[/bold]")
        for i, call in enumerate(s.calls, 1):
            out.print(f"  {i:2}. {printable(call)}", highlight=False, markup=False)
        out.print("[bold]If anything fails after the disconnect, the rollback calls:[/bold]")
        for i, call in enumerate(s.rollback, 1):
            out.print(f"  {i:2}. {printable(call)}", highlight=False, markup=False)


def render_acceptances(out: Console, report: PlanReport, stores: Sequence[StorePlan]) -> int:
    """The acceptances that accepted nothing, then each unverified check of `stores` and how to accept it;
    how many of those there are."""
    for check, why in report.unused_acceptances():
        out.print(f"note: accepting {printable(check)} accepted nothing: {printable(why)}", highlight=False,
                  markup=False)
    unverified = [(s, f) for s in stores for f in s.unverified]
    if unverified:
        out.print("\n[bold]Not checked (unverified): each holds the run until it is made checkable or "
                  "accepted by name[/bold]")
        for s, f in unverified:
            what = printable(f.remedy or f.message)
            out.print(f"  {printable(s.store_id or s.ref)}: {printable(f.check)}: {what}; or accept it: "
                      f"--accept-unverified {printable(f.check)}", highlight=False, markup=False)
    return len(unverified)


def _render_human(report: PlanReport) -> None:
    out = console()
    nothing = no_changes(report)
    for s in report.stores:
        render_store(out, report, s, calls=not nothing)
    if nothing:
        from migrator.preflight.base import NO_CHANGES

        out.print(f"\n[bold green]{NO_CHANGES}[/]" + ("" if len(report.stores) == 1 else
                                                     " (every key store of the plan)"))
        return
    unverified = render_acceptances(out, report, report.stores)
    blocks = any(f.status == "block" for s in report.stores for f in s.findings)
    if blocks:
        verdict = "[bold red]BLOCKED[/]: fix the blocking findings; nothing was changed"
    elif report.blocked:
        verdict = (f"[bold red]NOT READY[/]: {unverified} check(s) could not be made; make them checkable "
                   "or accept each by name (RUNBOOK.md#accepting-unverified-checks); nothing was changed")
    else:
        verdict = "[bold green]READY[/]: `xksmigrate run` would proceed to the disconnect after asking"
    out.print(f"\n{verdict}")
