"""`status` and `history`: what the journal says, for a person or a program.

Both read only the journal, and open it read-only (never creating or upgrading it), so they work on an
auditor's read-only copy and from any machine that shares it, while another process runs the migration
(`status --watch` follows it like `kubectl rollout status`). A run whose journal says `running` but
whose runner's lock heartbeat has gone quiet is reported as probably dead, with the resume command.

`status` is a rollout status: it exits with the run's exit code (0, 3, 4, 5; 130 for a runner seen dead),
124 while the run is still going when it stops looking (--timeout, or one look without --watch). Its
summary is `run`'s, rebuilt from the journal (engine/journal_summary.py), plus the run's facts
(STATUS_EXTRAS); the budget, window and overrun come from engine/budget.py, as in every other view.
An operator rollback is a run of its own: both runs stay listed, each with its own windows, and each names
the other (`rolls_back`, `rolled_back_by`, engine/whole_run.py).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from migrator.cli import environment as support
from migrator.cli.output import (
    cell_label,
    control_lines,
    describe_event,
    fmt_seconds,
    json_line,
    manual_lines,
    write_version,
)
from migrator.cli.text import printable
from migrator.engine.controls import controls_of
from migrator.engine.journal_summary import plan_budget, run_scale, store_budget, summarize
from migrator.engine.results import over_budget_line
from migrator.engine.run_context import accepted_unverified
from migrator.engine.whole_run import run_links

if TYPE_CHECKING:
    from migrator.journal.repository import EventView, Journal, RunView

STALE_AFTER = 60.0  # seconds without a heartbeat before a running run is called probably dead
TIMED_OUT = 124  # still going when status stopped looking (like timeout(1))
DEAD = 130  # running in the journal, but no live runner: interrupted in all but name
STATUS_EXTRAS = ("plan", "region", "dry_run", "started_at", "finished_at", "who", "host")  # beyond run's summary


def _run_facts(run: RunView) -> dict[str, Any]:
    return {"plan": run.plan_name, "region": run.region, "dry_run": run.dry_run, "started_at": run.started_at,
            "finished_at": run.finished_at, "who": run.who, "host": run.host}


def _summary(journal: Journal, run: RunView, *, warning: str | None = None,
             exit_code: int | None = None) -> dict[str, Any]:
    """`run`'s summary of RUN (the same keys and values), rebuilt from the journal, plus STATUS_EXTRAS."""
    events = journal.events(run.id)
    result = summarize(run, events, now=time.time(), runner_gone=warning is not None, exit_code=exit_code)
    summary: dict[str, Any] = {**result.summary(), **run_links(journal, run),
                               "accepted_unverified": accepted_unverified(events),
                               "operator_controls": [c.to_dict() for c in controls_of(events)]}
    if warning:
        summary["warning"] = warning
    return {**summary, **_run_facts(run)}


def _event_dict(e: EventView) -> dict[str, Any]:
    return {"type": "event", "run_id": e.run_id, "migration": e.migration_id, "seq": e.seq, "at": e.at,
            "kind": e.kind, "from_state": e.from_state, "to_state": e.to_state, "operation": e.operation,
            "request_id": e.request_id, "outcome": e.outcome, "detail": e.detail}


def _liveness(journal: Journal, run: RunView) -> str | None:
    """None if the runner looks alive (or the run ended); else a sentence saying why not."""
    if run.outcome != "running":
        return None
    locks = [lk for lk in journal.list_locks() if lk.run_id == run.id]
    if not locks:
        return f"no runner holds a lock for {run.id}; if it was killed: xksmigrate resume {run.id}"
    quiet = time.time() - max(lk.heartbeat_at for lk in locks)
    if quiet > STALE_AFTER:
        return f"the runner's heartbeat is {quiet:.0f} s old; if it is gone: xksmigrate resume {run.id}"
    return None


def status(state: str | None, run_id: str | None, *, watch: bool, timeout: float, json_output: bool) -> int:
    """`status`: where RUN_ID (default: the latest run) stands; with `watch`, follow it until it ends."""
    if not math.isfinite(timeout) or timeout < 0:
        raise support.fail(f"--timeout: {timeout:g} is not a number of seconds (0 or more; 0: never give up)")
    journal = support.open_journal(state, read_only=True)
    if run_id is None:
        runs = journal.list_runs(limit=1)
        if not runs:
            raise support.fail(f"no runs in {journal.url_for_display}")
        run_id = runs[0].id
    support.find_run(journal, run_id)
    return _status(journal, run_id, watch=watch, timeout=timeout, json_output=json_output)


def _status(journal: Journal, run_id: str, *, watch: bool, timeout: float, json_output: bool) -> int:
    out = sys.stdout
    started = time.monotonic()
    last_seq = 0
    timer = _WatchTimer(out)
    if json_output:
        write_version(out, "status")
    while True:
        run = journal.get_run(run_id)
        events = journal.events(run_id, after_seq=last_seq)
        if events:
            last_seq = events[-1].seq
        if json_output:
            for e in events if watch else []:
                out.write(json_line(_event_dict(e)))
        elif watch:  # the state moves and the window timer against the budget, not every line of the run
            timer.moves([e for e in events if e.kind == "transition" or e.outcome in WATCHED_NOTES])
            timer.tick(run, journal.events(run_id))
        warning = _liveness(journal, run)
        ended = run.outcome != "running"
        if not watch or ended or warning or (timeout and time.monotonic() - started > timeout):
            break
        out.flush()
        time.sleep(1.0)
    timer.done()
    code = _exit_code(run, warning)
    summary = _summary(journal, run, warning=warning, exit_code=code)
    if json_output:
        out.write(json_line(summary))
    else:
        _print_status(run, summary, journal, warning, show_recent=not watch)
        for a in summary["accepted_unverified"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(a["at"] or 0)))
            out.write(printable(f"  accepted unverified {a['check']} on {a['keystore']}: by {a['accepted_by']} "
                                f"at {when} ({a['source']})") + "\n")
        for line in control_lines(summary["operator_controls"]):
            out.write(printable(line) + "\n")
        if code == TIMED_OUT:
            out.write(f"still {run.outcome} (exit {TIMED_OUT}: status stopped looking before the run ended)\n")
    out.flush()
    return code


WATCHED_NOTES = ("interrupted", "drift", "abort", "extend")  # notes `status --watch` shows beside the moves


class _WatchTimer:
    """`status --watch` on text: each state move on its own line, and the window against the budget: redrawn in
    place on a terminal every second, a line every PLAIN_EVERY seconds otherwise (a log)."""

    PLAIN_EVERY = 30.0

    def __init__(self, out: TextIO):
        self.out, self.tty, self.drawn, self.last = out, out.isatty(), False, 0.0

    def moves(self, events: list[EventView]) -> None:
        for e in events:
            if line := describe_event(_event_dict(e)):
                self._clear()
                self.out.write(time.strftime("%H:%M:%S ", time.localtime(e.at)) + printable(line.strip()) + "\n")
                self.last = 0.0

    def tick(self, run: RunView, events: list[EventView]) -> None:
        now = time.time()
        if not self.tty and now - self.last < self.PLAIN_EVERY:
            return
        scale, fallback = run_scale(run), plan_budget(run)
        parts = []
        for m in run.migrations:
            facts = store_budget(m, events, scale=scale, now=now, fallback=fallback)
            if facts.window_seconds is not None and m.verified_at is None:
                unit = " simulated" if scale != 1.0 else ""
                parts.append(f"{m.keystore_id or m.keystore_ref} {m.state}: disconnected "
                             f"{fmt_seconds(facts.window_seconds)} of {fmt_seconds(facts.budget_seconds)} budget{unit}"
                             + (f", OVER by {fmt_seconds(facts.over_budget_seconds)}"
                                if facts.over_budget_seconds > 0 else ""))
        if not parts:
            return
        line = time.strftime("%H:%M:%S ") + printable("; ".join(parts))
        self._clear()
        self.out.write(line if self.tty else line + "\n")
        self.drawn, self.last = self.tty, now

    def _clear(self) -> None:
        if self.drawn:
            self.out.write("\r\x1b[K")
            self.drawn = False

    def done(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.drawn = False


def _exit_code(run: RunView, warning: str | None) -> int:
    """The run's exit code; 130 for a runner seen dead; 124 for a run still going."""
    if run.outcome == "running":
        return DEAD if warning else TIMED_OUT
    if run.exit_code is not None:
        return int(run.exit_code)
    from migrator.engine.results import EXIT_CODES

    return EXIT_CODES.get(run.outcome, 1)


def _print_status(run: RunView, summary: dict[str, Any], journal: Journal, warning: str | None,
                  show_recent: bool) -> None:
    out = sys.stdout
    kind = " (rehearsal)" if run.dry_run else ""
    simulated = bool(summary.get("simulated"))
    unit = " simulated" if simulated else ""
    out.write(printable(f"run {run.id}{kind}: {run.outcome}  plan {run.plan_name}  region {run.region}  "
                        f"by {run.who}@{run.host}") + "\n")
    if link := _link_line(journal, summary):
        out.write(printable(f"  {link}") + "\n")
    for ks in summary["keystores"]:
        budget = ks.get("budget_seconds")
        no_op = ks.get("outcome") == "no_changes"  # state `blocked`: nothing changed, nothing needed to
        out.write(printable(f"  {ks['id'] or ks['ref']}{cell_label(ks, summary)}: "
                            f"{'no changes' if no_op else ks['state']}  disconnected "
                            f"{fmt_seconds(ks.get('window_seconds'))}"
                            + (f" of {fmt_seconds(budget)} budget{unit}" if budget is not None else "")
                            + (f"  ({ks['error']})" if ks.get("error") and not no_op else "")) + "\n")
        if over := _over_line(ks, simulated):
            out.write(printable(f"    {over}") + "\n")
        if ks.get("manual"):
            for line in manual_lines(ks["manual"]):
                out.write(printable(line) + "\n")
    if show_recent:
        for e in journal.events(run.id)[-8:]:
            line = describe_event(_event_dict(e))
            if line:
                out.write(time.strftime("  %H:%M:%S ", time.localtime(e.at)) + printable(line.strip()) + "\n")
    if warning:
        out.write(f"warning: {printable(warning)}\n")


def _link_line(journal: Journal, summary: dict[str, Any], commands: bool = True) -> str | None:
    """`rolls back RUN` / `rolled back by RUN`, with the status command that shows the other run."""
    other, text = summary.get("rolls_back"), "rolls back"
    if not other and (other := summary.get("rolled_back_by")):
        outcome = next((r.outcome for r in journal.rollbacks_of(summary["run_id"]) if r.id == other), None)
        text = "rolled back by" if outcome in (None, "rolled_back") else f"rolled back ({outcome}) by"
    if not other:
        return None
    return f"{text} {other}" + (f" (xksmigrate status {other})" if commands else "")


def _over_line(facts: dict[str, Any], simulated: bool) -> str | None:
    from migrator.engine.budget import BudgetFacts

    return over_budget_line(BudgetFacts(facts.get("budget_seconds"), facts.get("window_seconds"),
                                        float(facts.get("over_budget_seconds") or 0.0),
                                        facts.get("over_budget_reason")), simulated)


def history(state: str | None, *, limit: int, json_output: bool) -> int:
    """`history`: the latest LIMIT runs, newest first."""
    if limit < 1:
        raise support.fail(f"--limit: {limit} is not a number of runs (1 or more)")
    journal = support.open_journal(state, read_only=True)
    runs = journal.list_runs(limit=limit)
    out = sys.stdout
    if json_output:
        write_version(out, "history")
        for run in runs:
            warning = _liveness(journal, run)
            out.write(json_line({**_summary(journal, run, warning=warning, exit_code=_exit_code(run, warning)),
                                 "type": "run"}))
        out.write(json_line({"type": "summary", "runs": len(runs)}))
        return 0
    if not runs:
        out.write(f"no runs in {journal.url_for_display}\n")
        return 0
    for run in runs:
        summary = _summary(journal, run)
        windows = ", ".join(fmt_seconds(ks["window_seconds"]) for ks in summary["keystores"]
                            if ks.get("window_seconds") is not None)
        over = _over_line(summary, bool(summary.get("simulated")))
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at))
        kind = " rehearsal" if run.dry_run else ""
        link = _link_line(journal, summary, commands=False)
        out.write(printable(f"{run.id}  {started}  {run.outcome:<12} {run.plan_name}{kind}"
                            + (f"  window {windows}" if windows else "") + (f"  {over}" if over else "")
                            + (f"  {link}" if link else "")) + "\n")
    return 0
