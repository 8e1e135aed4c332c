"""The downtime budget against the window, and why a window ran over: derived from the journal alone.

One place computes these facts, so the run's summary, `status`, `history` and their JSON agree. The
window is the time (simulated in a rehearsal: `scale`) from the disconnect to the verification, or to
now while it is open. When it exceeds the budget the reason is read from the events in the window:
a gap with no runner (the last record before a `resumed` note, an `interrupted` note or a killed
runner's last word, to the resume), a slow AWS call (a `call` to its `result`), the rollback itself
(from the move to `rolling_back` to the end), or else the state in which the budget ran out.
The budget is the latest `budget_seconds` an event of the store (or of the run) journaled (`fallback`,
the plan's, before any was), plus each `xksmigrate extend` journaled after it (engine/controls.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrator.engine import controls

if TYPE_CHECKING:
    from migrator.journal.models import EventView

SLOW_CALL_FRACTION = 0.05  # a call that took more than this share of the budget is named as slow
KEYS = ("budget_seconds", "window_seconds", "over_budget_seconds", "over_budget_reason")


@dataclass(frozen=True)
class BudgetFacts:
    """A store's budget, its window so far (None: never disconnected) and the overrun with its reason."""

    budget_seconds: float | None
    window_seconds: float | None
    over_budget_seconds: float = 0.0
    over_budget_reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"budget_seconds": self.budget_seconds, "window_seconds": self.window_seconds,
                "over_budget_seconds": self.over_budget_seconds, "over_budget_reason": self.over_budget_reason}


def duration(seconds: float, simulated: bool = False) -> str:
    """`1h02m03s`, `5m01s`, `12.5s`; ` simulated` when measured on a rehearsal's clock."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes
            else f"{seconds:.1f}s")
    return text + (" simulated" if simulated else "")


def instant(at: float) -> str:
    """A real instant, as UTC wall-clock time (what an operator compares with other logs)."""
    return time.strftime("%H:%M:%SZ", time.gmtime(at))


def budget_of(events: Sequence[EventView], mid: int | None, fallback: float | None) -> float | None:
    """The budget in force for store `mid`: the latest journaled for it (or for the whole run), else `fallback`,
    plus every `xksmigrate extend` journaled after that (engine/controls.py)."""
    base, since = fallback, 0
    for e in reversed(events):
        value = (e.detail or {}).get("budget_seconds")
        if isinstance(value, int | float) and (e.migration_id is None or e.migration_id == mid):
            base, since = float(value), e.seq
            break
    extended = controls.extension_seconds(c for c in controls.controls_of(events) if c.seq > since)
    if base is None:
        return None
    return base + extended


def measure(events: Sequence[EventView], *, mid: int | None, disconnected_at: float | None,
            verified_at: float | None, window_seconds: float | None, budget: float | None, scale: float,
            now: float, runner_gone: bool = False) -> BudgetFacts:
    """The budget facts of one store; `runner_gone`: nobody drives the run now (a gap until `now`)."""
    if disconnected_at is None:
        return BudgetFacts(budget, window_seconds)
    end = verified_at if verified_at is not None else now
    window = window_seconds if window_seconds is not None else round((end - disconnected_at) * scale, 3)
    if budget is None or window <= budget:
        return BudgetFacts(budget, window)
    over = round(window - budget, 3)
    simulated = scale != 1.0
    inside = [e for e in events if disconnected_at <= e.at <= end]
    mine = [e for e in inside if e.migration_id in (None, mid)]
    reasons = [f"runner down from {instant(a)} to {instant(b)} ({duration((b - a) * scale, simulated)})"
               for a, b in _gaps(events, disconnected_at, end, runner_gone and verified_at is None)]
    threshold = SLOW_CALL_FRACTION * budget
    reasons += [f"a slow call: {op} took {duration(took, simulated)}"
                for op, took in _calls(mine, scale) if took > threshold]
    rollback = next((e.at for e in mine if e.kind == "transition" and e.to_state == "rolling_back"), None)
    if rollback is not None:
        reasons.append(f"the rollback took {duration((end - rollback) * scale, simulated)}")
    if not reasons:
        ran_out = disconnected_at + budget / scale
        state = next((e.to_state for e in reversed(mine) if e.kind == "transition" and e.at <= ran_out), None)
        reasons.append(f"the budget ran out while {state or 'disconnected'}")
    return BudgetFacts(budget, window, over, "; ".join(reasons))


def _gaps(events: Sequence[EventView], start: float, end: float, open_end: bool) -> list[tuple[float, float]]:
    """(from, to) of each stretch of the window with no runner: the last record before a resume, to it."""
    gaps: list[tuple[float, float]] = []
    for before, e in itertools.pairwise(events):
        if e.kind == "note" and (e.detail or {}).get("message") == "resumed" and start < e.at <= end:
            a = max(before.at, start)
            if e.at > a:
                gaps.append((a, e.at))
    if open_end and events and events[-1].at < end:
        gaps.append((max(events[-1].at, start), end))
    return gaps


def _calls(events: Sequence[EventView], scale: float) -> list[tuple[str, float]]:
    """(operation, simulated seconds) of each AWS call in `events` that got its result."""
    started: dict[tuple[int | None, str], float] = {}
    took: list[tuple[str, float]] = []
    for e in events:
        key = (e.migration_id, e.operation or "")
        if e.kind == "call":
            started[key] = e.at
        elif e.kind == "result" and key in started:
            took.append((key[1], (e.at - started.pop(key)) * scale))
        elif e.kind == "note" and (e.detail or {}).get("message") == "resumed":
            started.clear()  # a call cut short by the runner's end: the gap explains it
    return took
