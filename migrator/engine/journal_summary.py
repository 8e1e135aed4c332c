"""A run's summary rebuilt from its journal alone: what `status` prints, in the shape `run` ends with.

`run` builds its summary from the journal too (runner._result) plus what it saw last in AWS; this
reads only the journal, so it works for an auditor's read-only copy and for a run whose runner died.
The budget facts come from `budget.measure` in both, so the figures are the same everywhere. The
final configuration is what the journal says the store was left holding (the configuration seen live
at the end of the window, the snapshot for a store blocked before it, the last observed drift otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from migrator.engine import budget, machine
from migrator.engine.results import (
    CONFIG_KEYS,
    EXIT_CODES,
    RunResult,
    StoreResult,
    cell_of,
    original_view,
    verify_key_ids,
)
from migrator.engine.whole_run import no_changes_message, partial_message, rolled_back_message

if TYPE_CHECKING:
    from migrator.journal.models import EventView, MigrationView, RunView


def run_scale(run: RunView) -> float:
    """The run's time scale (simulated seconds per real second), as recorded when it started."""
    return float((run.options or {}).get("time_scale") or 1.0)


def plan_budget(run: RunView) -> float | None:
    """The plan's max_disconnected, from the plan text the journal holds (None if it cannot be read)."""
    from migrator.plan import parse_plan

    try:
        return parse_plan(run.plan_text, run.plan_path or run.id).max_disconnected
    except Exception:  # an unreadable old plan: the events' budget_seconds, if any, still say it
        return None


def store_budget(m: MigrationView, events: Sequence[EventView], *, scale: float, now: float,
                 fallback: float | None, runner_gone: bool = False) -> budget.BudgetFacts:
    """`budget.measure` for one store, from all of its run's `events` (the one computation every view uses)."""
    return budget.measure(events, mid=m.id, disconnected_at=m.disconnected_at, verified_at=m.verified_at,
                          window_seconds=m.window_seconds, budget=budget.budget_of(events, m.id, fallback),
                          scale=scale, now=now, runner_gone=runner_gone)


def summarize(run: RunView, events: Sequence[EventView], *, now: float, runner_gone: bool = False,
              exit_code: int | None = None) -> RunResult:
    """The summary of `run` from `events` (all of its events, in order); `exit_code` overrides the recorded one
    (a run still going has none)."""
    fallback = plan_budget(run)
    stores = [_store(run, m, [e for e in events if e.migration_id == m.id],
                     store_budget(m, events, scale=run_scale(run), now=now, fallback=fallback,
                                  runner_gone=runner_gone))
              for m in run.migrations]
    code = exit_code if exit_code is not None else (run.exit_code if run.exit_code is not None
                                                    else EXIT_CODES.get(run.outcome, 1))
    return RunResult(run.id, run.outcome, code, stores, _message(run, events, stores), run_scale(run) != 1.0)


def _store(run: RunView, m: MigrationView, events: Sequence[EventView], facts: budget.BudgetFacts) -> StoreResult:
    outcome = m.outcome or (m.state if m.state in machine.TERMINAL else "unfinished")
    manual = None
    if m.state == "stuck":
        stuck = next((e.detail for e in reversed(events) if e.kind == "transition" and e.to_state == "stuck"), {})
        manual = {k: stuck.get(k) for k in ("connection_state", "connection_error_code", "commands", "runbook")}
    return StoreResult(ref=m.keystore_ref, id=m.keystore_id or "", state=m.state, outcome=outcome,
                       original=original_view(m.snapshot), final=_final(m, events),
                       disconnected_seconds=facts.window_seconds, api_calls=dict(m.api_calls or {}), error=m.error,
                       manual=manual, budget=facts, verify_key_ids=verify_key_ids(m.snapshot), **cell_of(m.target))


def _final(m: MigrationView, events: Sequence[EventView]) -> dict[str, object] | None:
    """The configuration the journal says the store holds now (CONFIG_KEYS), None if it does not say."""
    if m.state == "blocked" and m.snapshot:
        return _config(m.snapshot)
    keys = ("final", "live")
    for e in reversed(events):
        for key in keys:
            value = (e.detail or {}).get(key)
            if isinstance(value, dict):
                return _config(value)
    return None


def _config(values: dict[str, Any]) -> dict[str, object]:
    return {k: values.get(k) or "" for k in CONFIG_KEYS}


def _message(run: RunView, events: Sequence[EventView], stores: Sequence[StoreResult]) -> str:
    rolls_back = str((run.options or {}).get("rolls_back") or "") or None
    if run.outcome == "partial":
        return partial_message(run.id, run.migrations, rolls_back)
    if run.outcome == "no_changes":
        return no_changes_message(run.migrations)
    if run.outcome == "rolled_back" and rolls_back:  # a rollback run, as the runner's summary says it
        return rolled_back_message(rolls_back)
    if run.outcome == "interrupted":
        said = next((e.detail.get("message") for e in reversed(events)
                     if e.kind == "note" and e.outcome in ("interrupted", "lock_lost")), None)
        if said:
            return str(said)
    return next((s.error for s in stores if s.error), "") or run.outcome
