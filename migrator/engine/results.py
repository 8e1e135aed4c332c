"""What a run ends with: one `StoreResult` per key store and a `RunResult` with the exit code.

The exit codes are a stable contract (README): 0 completed · 1 internal error · 2 usage or invalid
plan (the CLI's) · 3 blocked, nothing changed · 4 rolled back and verified · 5 stuck, or partial (some
stores changed and others did not: operator action needed) · 6 locked · 130 interrupted (resumable).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

EXIT_CODES = {"completed": 0, "rolled_back": 4, "stuck": 5, "partial": 5, "blocked": 3, "locked": 6,
              "interrupted": 130, "failed": 1}
SEVERITY = ("completed", "blocked", "rolled_back", "partial", "interrupted", "failed", "stuck")  # worst last


def worse(a: str, b: str) -> str:
    """The worse of two outcomes (the run reports its worst store)."""
    rank = {o: i for i, o in enumerate(SEVERITY)}
    return a if rank.get(a, len(SEVERITY)) >= rank.get(b, len(SEVERITY)) else b


@dataclass
class StoreResult:
    ref: str
    id: str
    state: str
    outcome: str
    original: dict[str, object] | None
    final: dict[str, object] | None
    disconnected_seconds: float | None
    api_calls: dict[str, int]
    error: str | None
    manual: dict[str, object] | None = None  # for a stuck store: its state and the commands to run by hand

    def to_dict(self, simulated: bool) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id, "ref": self.ref, "state": self.state, "outcome": self.outcome,
            "original": self.original, "final": self.final, "disconnected_seconds": self.disconnected_seconds,
            "simulated": simulated, "api_calls": self.api_calls, "error": self.error}
        if self.manual:
            data["manual"] = self.manual
        return data


@dataclass
class RunResult:
    run_id: str
    outcome: str
    exit_code: int
    stores: list[StoreResult]
    message: str = ""
    simulated: bool = False

    def summary(self) -> dict[str, object]:
        calls: Counter[str] = Counter()
        for s in self.stores:
            calls.update(s.api_calls)
        return {"type": "summary", "run_id": self.run_id, "outcome": self.outcome, "exit_code": self.exit_code,
                "message": self.message, "simulated": self.simulated,
                "keystores": [s.to_dict(self.simulated) for s in self.stores], "api_calls": dict(calls)}
