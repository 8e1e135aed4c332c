"""Output: human (a rich live view on a terminal, plain lines otherwise) and machine (NDJSON).

Renderers are `engine.Observer`s: the engine hands them every journaled event and transient
progress, and the CLI hands them the summary. NDJSON has a `version` line first and a `summary`
line last. Nothing here sees a secret: events carry references (`env:NAME`), never values.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from migrator import __version__
from migrator.cli.text import printable
from migrator.engine.budget import BudgetFacts
from migrator.engine.results import over_budget_line
from migrator.engine.runner import Observer

if TYPE_CHECKING:
    from rich.table import Table

SCHEMA = 1


def _json_default(value: object) -> object:
    """What `json` cannot encode itself: an object's `to_dict()` if it has one, else its `str()` (never a repr)."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(value)


def json_line(obj: dict[str, Any]) -> str:
    """One NDJSON line (with its newline)."""
    return json.dumps(obj, default=_json_default) + "\n"


_versioned: list[TextIO] = []  # the streams that got their version line (an error after it adds only a summary)


def write_version(stream: TextIO, command: str) -> None:
    """The first line of every NDJSON stream: which xksmigrate, which schema, which command."""
    stream.write(json_line({"type": "version", "xksmigrate": __version__, "schema": SCHEMA, "command": command}))
    _versioned.append(stream)


def write_error(stream: TextIO, command: str, *, outcome: str, message: str, exit_code: int) -> None:
    """A command that failed before (or outside) its run, as NDJSON: the version line if not yet written, and
    a summary with the outcome (`error`, `interrupted`), the one-line message and the exit code."""
    if stream not in _versioned:
        write_version(stream, command)
    stream.write(json_line({"type": "summary", "outcome": outcome, "exit_code": exit_code, "message": message}))
    stream.flush()


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{value:.1f}s"


def describe_event(event: dict[str, Any], simulated: bool = False) -> str | None:
    """One human line for an engine event (None: not worth a line); `simulated`: a rehearsal clock's window."""
    kind, detail = event.get("kind"), event.get("detail") or {}
    if kind == "transition":
        extra = ""
        if detail.get("reason"):
            extra = f": {detail['reason']}"
        elif detail.get("window_seconds") is not None:
            extra = f" (window {fmt_seconds(detail['window_seconds'])}{' simulated' if simulated else ''})"
        return f"{event.get('from_state')} -> {event.get('to_state')}{extra}"
    if kind == "call":
        return f"  calling {event.get('operation')}"
    if kind == "result":
        rid = event.get("request_id") or "-"
        if event.get("outcome") == "ok":
            key = f" {detail['key_id']}" if detail.get("key_id") else ""
            return f"  {event.get('operation')}{key} ok (request {rid})"
        if event.get("outcome") == "timeout":
            return f"  {event.get('operation')} given up: {detail.get('message')}"
        return f"  {event.get('operation')} failed: {detail.get('code')}: {detail.get('message')}"
    if kind == "finding":
        status = (event.get("outcome") or "").upper()
        if status == "PASS":
            return None
        remedy = f"\n      fix: {detail['remedy']}" if detail.get("remedy") else ""
        return f"  [{status}] {detail.get('check')}: {detail.get('message')}{remedy}"
    if kind == "note":
        if detail.get("connection_state"):
            code = f" ({detail['connection_error_code']})" if detail.get("connection_error_code") else ""
            return f"  key store is {detail['connection_state']}{code}"
        if detail.get("message"):
            return f"  {detail['message']}"
        if event.get("outcome") == "retry":
            return f"  {event.get('operation')} {detail.get('code')}; retrying (attempt {detail.get('attempt')})"
    if kind == "hook":
        return f"  hook {detail.get('hook')}: exit {detail.get('exit_code')}"
    if kind == "acceptance":
        return f"  accepted unverified {detail.get('check')}: by {detail.get('accepted_by')} ({detail.get('source')})"
    return None


def describe_summary(summary: dict[str, Any]) -> list[str]:
    unit = " (simulated)" if summary.get("simulated") else ""
    lines = [f"run {summary['run_id']}: {summary['outcome']} (exit {summary['exit_code']})"]
    for ks in summary.get("keystores", []):
        budget = f" of a {fmt_seconds(ks['budget_seconds'])} budget" if ks.get("budget_seconds") is not None else ""
        lines.append(f"  {ks['id'] or ks['ref']}{cell_label(ks, summary)}: {ks['outcome']}, disconnected "
                     f"{fmt_seconds(ks.get('disconnected_seconds'))}{unit}{budget}")
        if over := over_budget_line(BudgetFacts(ks.get("budget_seconds"), ks.get("window_seconds"),
                                                float(ks.get("over_budget_seconds") or 0.0),
                                                ks.get("over_budget_reason")), bool(summary.get("simulated"))):
            lines.append(f"    {over}")
        if ks.get("final"):
            f = ks["final"]
            lines.append(f"    now {f.get('connectivity')} {f.get('uri_endpoint')}{f.get('uri_path') or ''}"
                         + (f" via {f['vpc_endpoint_service_name']}" if f.get("vpc_endpoint_service_name") else ""))
        if ks.get("error") and ks["outcome"] not in ("completed", "no_changes"):
            lines.append(f"    reason: {ks['error']}")
        if ks.get("manual"):
            lines.extend(manual_lines(ks["manual"]))
        calls = ks.get("api_calls") or {}
        if calls:
            lines.append("    AWS requests: " + ", ".join(f"{k.split(':')[-1]} {v}" for k, v in calls.items()))
    lines.extend(control_lines(summary.get("operator_controls") or []))
    for a in summary.get("accepted_unverified") or []:
        lines.append(f"  accepted unverified {a['check']} on {a['keystore']} by {a['accepted_by']} ({a['source']})")
    if summary.get("message") and summary["outcome"] not in ("completed",):
        lines.append(summary["message"])
    return lines


def cell_label(ks: dict[str, Any], summary: dict[str, Any]) -> str:
    """" (account A, Region)" when the run reaches more than one account-Region cell, else ""."""
    cells = {(k.get("account_id"), k.get("region")) for k in summary.get("keystores", [])}
    if len(cells) < 2:
        return ""
    account = f"account {ks['account_id']}, " if ks.get("account_id") else ""
    return f" ({account}{ks.get('region') or '?'})"


def control_lines(controls: list[dict[str, Any]]) -> list[str]:
    """The operator's `abort`/`extend` of a run, who and when (the summary's and status's)."""
    lines = []
    for c in controls:
        at = time.strftime("%H:%M:%SZ", time.gmtime(float(c.get("at") or 0)))
        what = f"budget extended by {fmt_seconds(c.get('by_seconds'))}" if c.get("kind") == "extend" else "abort"
        lines.append(f"  {what} by {c.get('by')} at {at}" + (f" ({c['reason']})" if c.get("reason") else ""))
    return lines


def manual_lines(manual: dict[str, Any]) -> list[str]:
    """A stuck store's recovery: its state, the runbook section and the commands (the summary's and status's)."""
    return [f"    OPERATOR ACTION NEEDED: the key store is {manual.get('connection_state')}"
            + (f" ({manual['connection_error_code']})" if manual.get("connection_error_code") else "")
            + f"; see `{manual.get('runbook')}`. Next commands:",
            *(f"      {cmd}" for cmd in manual.get("commands") or [])]


class Renderer(Observer):
    """An engine Observer the CLI also hands the summary to, and pauses around a prompt.

    `stores` (the key stores the run is about) and `simulated` (a rehearsal clock) are set by the CLI before
    the run starts: the first line names the run and its stores, and windows say when they are simulated.
    """

    stores: list[str] = []  # noqa: RUF012 - replaced, never mutated
    simulated: bool = False
    _announced: bool = False

    def use_clock(self, scale: float) -> None:
        """The run's time scale (1: real time): windows are labelled simulated when it is not 1."""
        self.simulated = scale != 1.0

    def headline(self, event: dict[str, Any]) -> str | None:
        """`run RUN_ID: key store ID`, once: for the first event that carries the run id."""
        if self._announced or not event.get("run_id"):
            return None
        self._announced = True
        snapshot_id = ((event.get("detail") or {}).get("snapshot") or {}).get("id")
        stores = [snapshot_id] if snapshot_id and len(self.stores) <= 1 else self.stores
        if not stores:
            return f"run {event['run_id']}"
        return f"run {event['run_id']}: key store{'s' if len(stores) > 1 else ''} {', '.join(stores)}"

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's summary (the engine's `RunResult.summary()`), last."""

    def pause(self) -> None:
        """Stop drawing (before a prompt)."""

    def unpause(self) -> None:
        """Draw again (after a prompt)."""


class JsonLines(Renderer):
    """NDJSON: the version line first (`write_version`), then events and progress, then the summary."""

    def __init__(self, stream: TextIO | None = None, command: str = ""):
        self.stream = stream or sys.stdout
        write_version(self.stream, command)
        self.stream.flush()

    def write(self, obj: dict[str, Any]) -> None:
        self.stream.write(json_line(obj))
        self.stream.flush()

    def event(self, event: dict[str, Any]) -> None:
        self.write(event)

    def finish(self, summary: dict[str, Any]) -> None:
        self.write(summary)


class PlainLines(Renderer):
    """One line per meaningful event, for logs and pipes (no colour, no cursor movement)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "event":
            return
        for line in (self.headline(event), describe_event(event, self.simulated)):
            if line:
                self.stream.write(time.strftime("%H:%M:%S ") + printable(line) + "\n")
        self.stream.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        for line in describe_summary(summary):
            self.stream.write(printable(line) + "\n")
        self.stream.flush()


class LiveView(Renderer):
    """A rich live panel: phase, window timer against the budget, last state, next poll."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        from migrator.cli.window_timer import WindowTimer

        self.console = Console()
        self.status: dict[str, Any] = {}
        self.timer = WindowTimer()  # ticks between reports, during a slow call too (cli/window_timer.py)
        self.live = Live(console=self.console, refresh_per_second=4, transient=True, get_renderable=self._render)
        self.live.start()

    def use_clock(self, scale: float) -> None:
        """The timer ticks at the run's scale from the first report on (it learns it only when not told)."""
        super().use_clock(scale)
        self.timer.scale = scale

    def _render(self) -> Table:
        from rich.table import Table

        s = self.status
        table = Table.grid(padding=(0, 2))
        table.add_row("phase", str(s.get("state", "starting")))
        window, budget = self.timer.window(), s.get("budget_seconds")
        if window is not None:
            unit = " simulated" if s.get("simulated") else ""
            table.add_row("disconnected", f"{fmt_seconds(window)} of {fmt_seconds(budget)} budget{unit}")
        if s.get("connection_state"):
            table.add_row("key store", printable(s["connection_state"]))
        if s.get("next_poll_seconds") is not None:
            table.add_row("next poll", fmt_seconds(s["next_poll_seconds"]))
        return table

    def event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "progress":
            self.status.update(event)
        elif event.get("kind") == "transition":
            self.status["state"] = event.get("to_state")
        elif event.get("kind") == "note" and (event.get("detail") or {}).get("connection_state"):
            self.status["connection_state"] = event["detail"]["connection_state"]
        window = event.get("window_seconds", (event.get("detail") or {}).get("window_seconds"))
        self.timer.report(window, event.get("to_state") if event.get("kind") == "transition" else None)
        if event.get("type") == "event":
            for line in (self.headline(event), describe_event(event, self.simulated)):
                if line:
                    self.console.print(printable(line), highlight=False, markup=False)
        self.live.update(self._render())

    def pause(self) -> None:
        """Stop redrawing (before a prompt)."""
        self.live.stop()

    def unpause(self) -> None:
        self.live.start()

    def finish(self, summary: dict[str, Any]) -> None:
        self.live.stop()
        for line in describe_summary(summary):
            self.console.print(printable(line), highlight=False, markup=False)


def make_renderer(json_output: bool, command: str) -> Renderer:
    if json_output:
        return JsonLines(command=command)
    if sys.stdout.isatty():
        return LiveView()
    return PlainLines()
