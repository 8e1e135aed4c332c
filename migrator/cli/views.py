"""`status` and `history`: what the journal says, for a person or a program.

Both read only the journal, and open it read-only (never creating or upgrading it), so they work on an
auditor's read-only copy and from any machine that shares it, while another process runs the migration
(`status --watch` follows it like `kubectl rollout status`). A run whose journal says `running` but
whose runner's lock heartbeat has gone quiet is reported as probably dead, with the resume command.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from migrator.cli import environment as support
from migrator.cli.output import describe_event, fmt_seconds, json_line, write_version
from migrator.cli.text import printable
from migrator.engine.machine import TERMINAL

if TYPE_CHECKING:
    from migrator.journal.repository import EventView, Journal, RunView

STALE_AFTER = 60.0  # seconds without a heartbeat before a running run is called probably dead


def _run_dict(run: RunView) -> dict[str, Any]:
    return {"run_id": run.id, "plan": run.plan_name, "outcome": run.outcome, "exit_code": run.exit_code,
            "dry_run": run.dry_run, "region": run.region, "started_at": run.started_at,
            "finished_at": run.finished_at, "who": run.who, "host": run.host,
            "keystores": [{"ref": m.keystore_ref, "id": m.keystore_id, "state": m.state,
                           "outcome": m.outcome or (m.state if m.state in TERMINAL else None),
                           "disconnected_seconds": m.window_seconds, "error": m.error,
                           "disconnected_at": m.disconnected_at, "verified_at": m.verified_at,
                           "original": _original(m.snapshot)}
                          for m in run.migrations]}


def _original(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """The configuration recorded before the disconnect: what a rollback by hand restores (RUNBOOK.md)."""
    if not snapshot:
        return None
    keys = ("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name", "vpc_endpoint_service_owner",
            "access_key_id")
    return {k: snapshot.get(k) for k in keys} | {"verify_key_ids": [k.get("key_id") for k in
                                                                      snapshot.get("verify_keys") or []]}


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
        elif watch:
            for e in events:
                line = describe_event(_event_dict(e))
                if line:
                    out.write(time.strftime("%H:%M:%S ", time.localtime(e.at)) + printable(line) + "\n")
        warning = _liveness(journal, run)
        ended = run.outcome != "running"
        if not watch or ended or warning or (timeout and time.monotonic() - started > timeout):
            break
        out.flush()
        time.sleep(1.0)
    if json_output:
        out.write(json_line({"type": "summary", **_run_dict(run), "warning": warning}))
    else:
        _print_status(run, journal, warning, show_recent=not watch)
    out.flush()
    return 0


def _print_status(run: RunView, journal: Journal, warning: str | None, show_recent: bool) -> None:
    out = sys.stdout
    kind = " (rehearsal)" if run.dry_run else ""
    out.write(printable(f"run {run.id}{kind}: {run.outcome}  plan {run.plan_name}  region {run.region}  "
                        f"by {run.who}@{run.host}") + "\n")
    for m in run.migrations:
        window = m.window_seconds
        if window is None and m.disconnected_at and m.verified_at is None:
            scale = float((run.options or {}).get("time_scale") or 1.0)
            window = (time.time() - m.disconnected_at) * scale
        out.write(printable(f"  {m.keystore_id or m.keystore_ref}: {m.state}  disconnected {fmt_seconds(window)}"
                            + (f"  ({m.error})" if m.error else "")) + "\n")
    if show_recent:
        for e in journal.events(run.id)[-8:]:
            line = describe_event(_event_dict(e))
            if line:
                out.write(time.strftime("  %H:%M:%S ", time.localtime(e.at)) + printable(line.strip()) + "\n")
    if warning:
        out.write(f"warning: {printable(warning)}\n")


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
            out.write(json_line({"type": "run", **_run_dict(run)}))
        out.write(json_line({"type": "summary", "runs": len(runs)}))
        return 0
    if not runs:
        out.write(f"no runs in {journal.url_for_display}\n")
        return 0
    for run in runs:
        windows = ", ".join(fmt_seconds(m.window_seconds) for m in run.migrations if m.window_seconds is not None)
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at))
        kind = " rehearsal" if run.dry_run else ""
        out.write(printable(f"{run.id}  {started}  {run.outcome:<12} {run.plan_name}{kind}"
                            + (f"  window {windows}" if windows else "")) + "\n")
    return 0
