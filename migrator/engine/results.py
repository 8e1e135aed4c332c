"""What a run ends with: one `StoreResult` per key store and a `RunResult` with the exit code.

The exit codes are a stable contract (README): 0 completed, or no changes (every store already had its
target) · 1 internal error · 2 usage or invalid plan (the CLI's) · 3 blocked, nothing changed · 4 rolled
back and verified · 5 stuck, or partial (some stores changed and others did not: operator action needed)
· 6 locked · 130 interrupted (resumable).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from migrator.engine.budget import BudgetFacts, duration

EXIT_CODES = {"no_changes": 0, "completed": 0, "rolled_back": 4, "stuck": 5, "partial": 5, "blocked": 3, "locked": 6,
              "interrupted": 130, "failed": 1}
# The configuration fields a summary shows for `original` and `final`.
CONFIG_KEYS = ("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name", "vpc_endpoint_service_owner",
               "access_key_id")
# Worst last: a run reports its worst store.
SEVERITY = ("no_changes", "completed", "blocked", "rolled_back", "partial", "interrupted", "failed", "stuck")


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
    budget: BudgetFacts | None = None  # the budget, the window and any overrun with its reason (engine/budget.py)
    verify_key_ids: list[str] = field(default_factory=list)
    account_id: str | None = None  # the store's cell, as the run journaled it (None: the caller's account)
    region: str | None = None

    @property
    def facts(self) -> BudgetFacts:
        return self.budget or BudgetFacts(None, self.disconnected_seconds)

    def to_dict(self, simulated: bool) -> dict[str, object]:
        facts = self.facts
        data: dict[str, object] = {
            "id": self.id, "ref": self.ref, "account_id": self.account_id, "region": self.region,
            "state": self.state, "outcome": self.outcome,
            "original": self.original, "final": self.final, "disconnected_seconds": facts.window_seconds,
            **facts.to_dict(), "simulated": simulated, "api_calls": self.api_calls, "error": self.error,
            "verify_key_ids": self.verify_key_ids}
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
                "message": self.message, "simulated": self.simulated, **self.budget().to_dict(),
                "keystores": [s.to_dict(self.simulated) for s in self.stores], "api_calls": dict(calls)}

    def budget(self) -> BudgetFacts:
        """The run's budget facts: its longest window and largest overrun; the reasons name the store if several."""
        facts = [s.facts for s in self.stores]
        budgets = [f.budget_seconds for f in facts if f.budget_seconds is not None]
        windows = [f.window_seconds for f in facts if f.window_seconds is not None]
        over = [(s, s.facts) for s in self.stores if s.facts.over_budget_seconds > 0]
        reasons = [(f"{s.id or s.ref}: " if len(self.stores) > 1 else "") + (f.over_budget_reason or "")
                   for s, f in over]
        return BudgetFacts(budgets[0] if budgets else None, max(windows) if windows else None,
                           max((f.over_budget_seconds for _, f in over), default=0.0),
                           "; ".join(reasons) or None)


def original_view(snapshot: dict[str, Any] | None) -> dict[str, object] | None:
    """The configuration recorded before the disconnect: what a rollback (or one by hand, RUNBOOK.md) restores."""
    return {k: snapshot.get(k) or "" for k in CONFIG_KEYS} if snapshot else None


def verify_key_ids(snapshot: dict[str, Any] | None) -> list[str]:
    """The keys the run proves the store with (recorded in the snapshot)."""
    return [str(k.get("key_id")) for k in (snapshot or {}).get("verify_keys") or []]


def cell_of(target: dict[str, Any] | None) -> dict[str, Any]:
    """The store's account and Region from its journaled target (engine/runner.py records them)."""
    return {"account_id": (target or {}).get("account_id"), "region": (target or {}).get("region")}


def over_budget_line(facts: BudgetFacts, simulated: bool) -> str | None:
    """`over budget by 4m35s (budget 15m00s): runner down ...`; None within the budget."""
    if facts.over_budget_seconds <= 0 or facts.budget_seconds is None:
        return None
    return (f"over budget by {duration(facts.over_budget_seconds, simulated)} "
            f"(budget {duration(facts.budget_seconds)}): {facts.over_budget_reason}")
