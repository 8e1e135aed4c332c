"""An operator's controls over a run under way: `xksmigrate abort` and `xksmigrate extend` (gh-ost's panic
flag, Argo Rollouts' abort), read from the journal.

Each is a run-level `note` written by any machine that shares the journal (as `proceed` is), so who
asked and when is in the record, and a runner on another machine sees it at its next look:
- `abort`   detail {by, reason?, message}: the runner stops at its next step. Before the disconnect the run ends
            `blocked` with nothing changed; in the window the store rolls back to its snapshot.
- `extend`  detail {by_seconds, by, reason?, message}: the downtime budget in force grows by `by_seconds`.
The budget in force is the plan's `max_disconnected` plus every extension; one function says so for the
runner, the summary and `status` (engine/budget.py reads `extension_seconds`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrator.engine.errors import Blocked, StepFailed
from migrator.engine.machine import OnFailure

if TYPE_CHECKING:
    from migrator.journal.models import EventView

ABORT = "abort"
EXTEND = "extend"
OUTCOMES = (ABORT, EXTEND)


@dataclass(frozen=True)
class Control:
    """One operator control note: what, who, when (a real instant), and for `extend` by how much."""

    kind: str
    by: str
    at: float
    seq: int
    by_seconds: float = 0.0
    reason: str = ""  # the operator's own words (--reason), if any

    def to_dict(self) -> dict[str, object]:
        fields: dict[str, object] = {"kind": self.kind, "by": self.by, "at": self.at, "seq": self.seq}
        if self.kind == EXTEND:
            fields["by_seconds"] = self.by_seconds
        if self.reason:
            fields["reason"] = self.reason
        return fields


def control_of(event: EventView) -> Control | None:
    """The control an event records, or None (any other event)."""
    if event.kind != "note" or event.outcome not in OUTCOMES or event.migration_id is not None:
        return None
    detail = event.detail or {}
    by_seconds = detail.get("by_seconds")
    return Control(kind=str(event.outcome), by=str(detail.get("by") or "unknown"), at=event.at, seq=event.seq,
                   by_seconds=float(by_seconds) if isinstance(by_seconds, int | float) else 0.0,
                   reason=str(detail.get("reason") or ""))


def controls_of(events: Iterable[EventView]) -> list[Control]:
    """Every control of a run, in journal order."""
    return [c for e in events if (c := control_of(e)) is not None]


def extension_seconds(controls: Iterable[Control]) -> float:
    """How much the budget was raised, in simulated seconds (the budget's own unit)."""
    return sum(c.by_seconds for c in controls if c.kind == EXTEND)


def budget_in_force(planned: float, controls: Iterable[Control]) -> float:
    """The plan's budget plus every extension."""
    return planned + extension_seconds(controls)


def abort_of(controls: Iterable[Control]) -> Control | None:
    """The first abort request, or None."""
    return next((c for c in controls if c.kind == ABORT), None)


class OperatorAbort(StepFailed):
    """`xksmigrate abort` reached a runner in the window: the store goes back to its snapshot."""


def describe_abort(abort: Control) -> str:
    """`aborted by NAME at HH:MM:SSZ (their reason)`."""
    when = time.strftime("%H:%M:%SZ", time.gmtime(abort.at))
    return f"aborted by {abort.by} at {when}" + (f" ({abort.reason})" if abort.reason else "")


def stop_for(abort: Control, failure: OnFailure | None) -> None:
    """Where an abort takes a store from a row whose failures mean `failure`: before the disconnect the run blocks
    (nothing changed), in the window the store rolls back; the rollback itself and terminal rows go on."""
    if failure is OnFailure.BLOCK:
        raise Blocked(f"{describe_abort(abort)}; nothing was changed")
    if failure is OnFailure.ROLL_BACK:
        raise OperatorAbort(f"{describe_abort(abort)}; rolling back to the original configuration")
