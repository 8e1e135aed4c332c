"""What a fleet ended as, from its stores' outcomes: pure logic, the one place every fleet view takes it from.

Each store's outcome is its own run's (`xksmigrate status RUN_ID` says the same). The fleet:

- `completed` (exit 0): every store completed, or had nothing to change;
- the worst store's outcome when no store was changed, e.g. a canary that rolled back (`rolled_back`, exit 4)
  or a fleet whose first store was blocked (`blocked`, exit 3);
- `stopped` when some stores were changed and the fleet stopped before the others (a store past the failure
  tolerance, a health gate that failed): operator action is needed, as for a `partial` run (exit 5), unless a
  store ended worse than that (worst store wins: `stuck` 5, `failed` 1, `interrupted` 130); `partial` (exit 5)
  when it did not stop but a store within the failure tolerance did not complete;
- `running` while stores are still in flight or waiting for their wave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from migrator.engine.results import EXIT_CODES, worse

CHANGED = frozenset({"completed"})
DONE = frozenset({"completed", "no_changes"})
NOT_STARTED = "not_started"  # a store the fleet stopped before its turn


@dataclass(frozen=True)
class StoreOutcome:
    """One store of the fleet as its run ended (JSON-safe: DBOS checkpoints it as a step's output)."""

    ref: str
    account_id: str
    region: str
    wave: int
    run_id: str | None
    outcome: str
    exit_code: int
    window_seconds: float | None = None
    budget_seconds: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> StoreOutcome:
        fields = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Stop:
    """Why the fleet started no more stores: the store (or the gate after a wave) that stopped it."""

    by: str
    reason: str
    wave: int


@dataclass
class FleetOutcome:
    fleet_id: str
    stores: list[StoreOutcome]
    stop: Stop | None = None
    finished: bool = True
    waves_done: int = 0
    gates: list[dict[str, object]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if not self.finished:
            return "running"
        ended = [s for s in self.stores if s.outcome != NOT_STARTED]
        if all(s.outcome in DONE for s in ended) and self.stop is None and len(ended) == len(self.stores):
            return "completed"
        worst = "no_changes"
        for s in ended:
            worst = worse(worst, s.outcome)
        if not any(s.outcome in CHANGED for s in ended):
            return worst if worst != "no_changes" else "stopped"
        if worse(worst, "partial") != "partial":
            return worst
        return "stopped" if self.stop is not None else "partial"

    @property
    def exit_code(self) -> int:
        outcome = self.outcome
        if outcome == "running":
            return EXIT_CODES["interrupted"]
        return EXIT_CODES["partial"] if outcome == "stopped" else EXIT_CODES.get(outcome, 1)  # partial: 5 too

    def message(self) -> str:
        done = sum(s.outcome in DONE for s in self.stores)
        waiting = sum(s.outcome == NOT_STARTED for s in self.stores)
        text = f"{done} of {len(self.stores)} stores completed"
        if self.stop is not None:
            text += f"; stopped by {self.stop.by} ({self.stop.reason}) in wave {self.stop.wave}"
        if waiting:
            text += f"; {waiting} not started"
        return text

    def summary(self) -> dict[str, object]:
        windows = [s.window_seconds for s in self.stores if s.window_seconds is not None]
        return {"type": "fleet_summary", "fleet_id": self.fleet_id, "outcome": self.outcome,
                "exit_code": self.exit_code, "message": self.message(),
                "stopped_by": self.stop.by if self.stop else None,
                "stop_reason": self.stop.reason if self.stop else None,
                "longest_window_seconds": max(windows) if windows else None,
                "gates": self.gates, "keystores": [s.to_dict() for s in self.stores]}


def fleet_outcome(fleet_id: str, planned: Sequence[tuple[str, str, str, int]],
                  ended: Mapping[str, StoreOutcome], stop: Stop | None, *, finished: bool = True,
                  gates: Sequence[dict[str, object]] = ()) -> FleetOutcome:
    """`planned`: (ref, account, Region, wave) of every store in start order; a store with no outcome in `ended`
    was never started."""
    stores = [ended.get(ref) or StoreOutcome(ref, account, region, wave, None, NOT_STARTED, 0)
              for ref, account, region, wave in planned]
    return FleetOutcome(fleet_id, stores, stop, finished, gates=list(gates))
