"""`abort` and `extend`: an operator's controls over a run under way, from any machine that shares its journal.

Each journals one run-level note (engine/controls.py reads them) with who asked and when; the runner looks
for them at least once a real second, before every AWS call and every step, and shows them live. The
commands never touch AWS: a runner that is down sees the note when the run is resumed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator.cli import environment as support

if TYPE_CHECKING:
    from migrator.journal.models import RunView
    from migrator.journal.repository import Journal


def _by() -> str:
    import socket

    return f"{support.who()}@{socket.gethostname()}"


def _open_run(run_id: str, state: str | None, command: str) -> tuple[Journal, RunView]:
    """The run, which must still be going (or interrupted, and so resumable): exit 2 otherwise."""
    journal = support.open_journal(state)
    run_view = support.find_run(journal, run_id)
    if run_view.outcome not in ("running", "interrupted"):
        raise support.fail(f"{run_id} already ended: {run_view.outcome}; there is nothing to {command} "
                           f"(`xksmigrate rollback {run_id}` returns changed key stores to their original)")
    return journal, run_view


def abort(run_id: str, *, reason: str | None, state: str | None, json_output: bool = False) -> int:
    """`abort`: the runner stops at its next step: blocked if nothing changed yet, else it rolls back."""
    from migrator.engine import controls

    journal, _ = _open_run(run_id, state, "abort")
    earlier = controls.abort_of(controls.controls_of(journal.events(run_id)))
    if earlier is not None:
        _report("abort", json_output, f"{run_id}: already {controls.describe_abort(earlier)}", outcome="abort",
                run_id=run_id, by=earlier.by, at=earlier.at)
        return 0
    by = _by()
    message = (f"abort requested by {by}" + (f" ({reason})" if reason else "")
               + ": the runner rolls back at its next step (blocked, with nothing changed, before the disconnect)")
    detail: dict[str, object] = {"by": by, "message": message, **({"reason": reason} if reason else {})}
    journal.record(run_id, kind="note", outcome=controls.ABORT, detail=detail)
    _report("abort", json_output, f"{run_id}: {message}", outcome="abort", run_id=run_id, by=by)
    return 0


def extend(run_id: str, *, by_text: str, reason: str | None, state: str | None, json_output: bool = False) -> int:
    """`extend`: raise the run's downtime budget; the runner's deadlines follow within a second."""
    from migrator.engine import controls
    from migrator.engine.budget import duration
    from migrator.engine.journal_summary import plan_budget
    from migrator.plan import PlanError, parse_duration

    try:
        seconds = parse_duration(by_text, "--by")
    except PlanError as exc:
        raise support.fail(str(exc)) from None
    if seconds <= 0:
        raise support.fail("--by: must be more than zero, like 10m")
    journal, run_view = _open_run(run_id, state, "extend")
    planned = plan_budget(run_view)
    before = controls.budget_in_force(planned or 0.0, controls.controls_of(journal.events(run_id)))
    by = _by()
    now_in_force = before + seconds
    message = (f"budget extended by {duration(seconds)} by {by}" + (f" ({reason})" if reason else "")
               + (f": now {duration(now_in_force)}" if planned is not None else ""))
    detail: dict[str, object] = {"by": by, "by_seconds": seconds, "message": message,
                                 **({"reason": reason} if reason else {})}
    journal.record(run_id, kind="note", outcome=controls.EXTEND, detail=detail)
    _report("extend", json_output, f"{run_id}: {message}", outcome="extended", run_id=run_id, by=by, by_seconds=seconds,
            budget_seconds=now_in_force if planned is not None else None)
    return 0


def _report(command: str, json_output: bool, text: str, **facts: object) -> None:
    from migrator.cli import actions

    actions._report(command, json_output, text, **facts)  # the one-line outcome every such command prints
