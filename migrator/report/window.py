"""A key store's window as the change record and its timeline show it: the journal's events, on the run's clock.

The window opens at the store's `disconnected_at` and closes at its `verified_at` (the forward path's round
trips, or the rollback's); a stuck store's stays open. Every mark is one journal event, kept with its `seq`
and its real instant `at`, and placed at `t`: seconds from the disconnect on the run's clock, that is
`(at - disconnected_at) * time_scale`, the conversion `engine/budget.py` makes for the window itself (a
rehearsal's clock runs `time_scale` simulated seconds per real second; a real run's scale is 1).
The stretches with no runner are budget.py's own (the last record before a `resumed` note, to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrator.engine import budget

if TYPE_CHECKING:
    from migrator.journal.models import EventView, MigrationView

# The calls that change a store, and what the timeline calls them.
CALLS = {"DisconnectCustomKeyStore": "disconnect", "UpdateCustomKeyStore": "update",
         "ConnectCustomKeyStore": "connect"}
SEEN = ("DISCONNECTED", "CONNECTED", "FAILED")  # connection states worth a mark (not the passing -ING ones)
ENDS = {"completed": "verified", "rolled_back": "rollback verified", "stuck": "stuck"}
# Run-level notes that mark an interruption or a takeover (the runner's own words), and the operator's controls.
INTERRUPTIONS = ("interrupted", "lock_lost")
RESUMED = "resumed"
RECLAIMED = "reclaimed lock of a dead runner"
CONTROLS = ("abort", "extend")
KINDS = ("call", "seen", "state", "round_trip", "failure", "interruption", "control", "hook")


@dataclass(frozen=True)
class Mark:
    """One journal event in a window: `t` on the run's clock, `at` the real instant the journal holds."""

    seq: int
    at: float
    t: float
    kind: str  # one of KINDS
    label: str
    phase: str  # "forward" or "rollback" (after the move to rolling_back)

    def to_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "at": self.at, "t": self.t, "kind": self.kind, "label": self.label,
                "phase": self.phase}


def offset(at: float, origin: float, scale: float) -> float:
    """Seconds from `origin` on the run's clock, rounded as budget.measure rounds the window."""
    return round((at - origin) * scale, 3)


def interruption_label(e: EventView) -> str | None:
    """`interrupted`, `lock lost`, `resumed`, `took over: ...`: an event that marks a runner's end or start."""
    detail = e.detail or {}
    message = str(detail.get("message") or "")
    if e.kind != "note":
        return None
    if e.outcome in INTERRUPTIONS:
        return "interrupted" if e.outcome == "interrupted" else "lock lost"
    if message == RESUMED:
        return "resumed"
    if message.startswith(RECLAIMED):
        return "took over: " + RECLAIMED
    return None


def _label(e: EventView, mid: int) -> tuple[str, str] | None:
    """(kind, label) of an event worth a mark in store `mid`'s window, else None."""
    detail = e.detail or {}
    if (said := interruption_label(e)) is not None:
        return "interruption", said
    if e.migration_id is None:
        if e.kind == "note" and e.outcome in CONTROLS:
            by = detail.get("by") or "unknown"
            if e.outcome == "abort":
                return "control", f"abort by {by}"
            return "control", f"budget +{budget.duration(float(detail.get('by_seconds') or 0))} by {by}"
        return None
    if e.migration_id != mid:
        return None
    if e.kind == "call" and e.operation in CALLS:
        return "call", CALLS[e.operation]
    if e.kind == "result" and e.operation == "Encrypt+Decrypt":
        return "round_trip", f"round trip {str(detail.get('key_id') or '')[:8]} {e.outcome}"
    if e.kind == "result" and e.operation in CALLS and e.outcome != "ok":
        return "failure", f"{CALLS[e.operation]} {e.outcome}: {detail.get('code') or detail.get('message') or ''}"
    if e.kind == "note" and detail.get("connection_state") in SEEN:
        code = f" ({detail['connection_error_code']})" if detail.get("connection_error_code") else ""
        return "seen", f"{detail['connection_state']} seen{code}"
    if e.kind == "note" and e.outcome == "drift":
        return "failure", "drift"
    if e.kind == "transition" and e.to_state == "rolling_back":
        return "state", "rollback starts"
    if e.kind == "transition" and e.to_state in ENDS:
        return "state", ENDS[e.to_state]
    if e.kind == "hook":
        return "hook", f"hook {e.operation or detail.get('event')}: exit {detail.get('exit_code')}"
    return None


def store_window(m: MigrationView, events: Sequence[EventView], facts: budget.BudgetFacts, *, scale: float,
                 floor: float | None, runner_gone: bool = False) -> dict[str, Any] | None:
    """The window of store `m` from all of its run's `events` (None: it was never disconnected)."""
    origin = m.disconnected_at
    if origin is None:
        return None
    first = next((e.seq for e in events if e.migration_id == m.id and e.kind == "transition"
                  and e.to_state == "disconnecting" and e.at >= origin), None)
    start = [e for e in events if (e.seq >= first if first is not None else e.at >= origin)]
    last = next((e.seq for e in start if e.migration_id == m.id and e.kind == "transition" and e.to_state in ENDS),
                None)  # the store's end (verified, rolled back, stuck): nothing after it belongs to its window
    inside = [e for e in start if last is None or e.seq <= last]
    marks: list[Mark] = []
    phase = "forward"
    spans: list[dict[str, object]] = []
    for e in inside:
        if e.migration_id == m.id and e.kind == "transition" and e.to_state:
            if spans:
                spans[-1]["to_t"] = offset(e.at, origin, scale)
            if e.to_state == "rolling_back":
                phase = "rollback"
            if e.to_state not in ENDS:
                spans.append({"state": e.to_state, "from_t": offset(e.at, origin, scale), "to_t": None})
        found = _label(e, m.id)
        if found is not None:
            marks.append(Mark(e.seq, e.at, offset(e.at, origin, scale), found[0], found[1], phase))
    closed = m.verified_at is not None
    mine = [e for e in inside if e.migration_id in (None, m.id)]
    last_at = m.verified_at if m.verified_at is not None else (mine[-1].at if mine else origin)
    end_t = facts.window_seconds if closed and facts.window_seconds is not None else offset(last_at, origin, scale)
    for span in spans:
        if span["to_t"] is None:
            span["to_t"] = end_t
    gaps = [{"from_at": a, "to_at": b, "from_t": offset(a, origin, scale), "to_t": offset(b, origin, scale)}
            for a, b in budget._gaps(events, origin, last_at, runner_gone and not closed)]
    return {"clock": "simulated" if scale != 1.0 else "real", "time_scale": scale, "origin_at": origin,
            "verified_at": m.verified_at, "open": not closed, "end_t": end_t,
            "window_seconds": facts.window_seconds, "budget_seconds": facts.budget_seconds, "floor_seconds": floor,
            "over_budget_seconds": facts.over_budget_seconds, "marks": [mk.to_dict() for mk in marks],
            "spans": spans, "gaps": gaps}
