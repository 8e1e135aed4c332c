"""The operator's controls as pure logic: `abort` and `extend` read from journal notes (engine/controls.py),
what an abort does in each row of the table, a deadline that moves when the budget is extended, and a call
bounded by the remaining budget (waits.call_within). The same through the CLI against `sim serve` is in
test_operator_controls.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from core_fakes import ManualClock, MemoryServices, RecordingApplier, core_plan, migration

from migrator.engine import controls
from migrator.engine.budget import budget_of
from migrator.engine.clock import Clock
from migrator.engine.driver import Driver
from migrator.engine.waits import CallTimedOut, call_within
from migrator.journal.models import EventView

ABORT = controls.Control("abort", "alice", 1_000_000.0, 7, reason="the proxy team says no")


def note(seq: int, outcome: str, mid: int | None = None, **detail: Any) -> EventView:
    return EventView(seq, 1_000_000.0 + seq, "run-x", mid, "note", None, None, None, None, outcome, detail)


def _driver(budget: str = "15m") -> tuple[Driver, MemoryServices, RecordingApplier]:
    clock = ManualClock()
    kms = RecordingApplier(clock)
    services = MemoryServices(core_plan(**{'max_disconnected = "15m"': f'max_disconnected = "{budget}"'}), clock, kms)
    return Driver(services, migration(), services.plan.keystores[0]), services, kms


def _on_hook(services: MemoryServices, event: str, action: Any) -> None:
    """Do `action()` when hook `event` fires: the operator typing a command at that moment of the run."""
    fire = services.hook

    def hook(mid: int, name: str, facts: Any) -> bool:
        ran = fire(mid, name, facts)
        if name == event:
            action()
        return ran

    services.hook = hook  # type: ignore[method-assign]


# -- reading the notes -------------------------------------------------------------------------------------

def test_controls_are_the_runs_abort_and_extend_notes_in_order() -> None:
    events = [note(1, "proceed"), note(2, "extend", by="bob", by_seconds=600), note(3, "extend", mid=1, by_seconds=5),
              note(4, "abort", by="alice", reason="stop"), note(5, "abort", by="carol")]
    found = controls.controls_of(events)
    assert [(c.kind, c.by, c.seq) for c in found] == [("extend", "bob", 2), ("abort", "alice", 4),
                                                        ("abort", "carol", 5)]
    assert controls.budget_in_force(900.0, found) == 1500.0
    first = controls.abort_of(found)
    assert first is not None and first.by == "alice"
    shown = controls.describe_abort(first)
    assert shown.startswith("aborted by alice at ") and shown.endswith("(stop)")
    assert first.to_dict()["reason"] == "stop" and "by_seconds" not in first.to_dict()


def test_the_budget_in_force_counts_only_extensions_after_the_journaled_budget() -> None:
    """The store journals the budget in force at its disconnect; an extension before it is already in it."""
    begin = EventView(3, 1_000_003.0, "run-x", 1, "transition", "approved", "disconnecting", None, None, None,
                      {"budget_seconds": 1500.0})
    events = [note(2, "extend", by_seconds=600), begin, note(4, "extend", by_seconds=300)]
    assert budget_of(events, 1, 900.0) == 1800.0
    assert budget_of([note(2, "extend", by_seconds=600)], 1, 900.0) == 1500.0
    assert budget_of([], 1, 900.0) == 900.0


# -- what an abort does where --------------------------------------------------------------------------------

def test_an_abort_before_the_disconnect_blocks_with_nothing_changed() -> None:
    driver, services, kms = _driver()
    services.abort = ABORT
    assert driver.run() == "blocked"
    assert kms.mutating() == []
    assert "aborted by alice at" in services.transitions[-1][2]["error"]
    assert "nothing was changed" in services.transitions[-1][2]["error"]


def test_an_abort_in_the_window_rolls_the_store_back() -> None:
    driver, services, kms = _driver()
    _on_hook(services, "after-disconnect", lambda: setattr(services, "abort", ABORT))
    assert driver.run() == "rolled_back"
    assert services.states()[-2:] == ["rolling_back", "rolled_back"]
    assert "UpdateCustomKeyStore" not in kms.mutating()[:2]  # back from `disconnected`: no forward update
    moved = next(fields for _, to, fields in services.transitions if to == "rolling_back")
    assert moved["error"].startswith("aborted by alice at") and "rolling back" in moved["error"]


def test_an_abort_does_not_interrupt_the_rollback_itself() -> None:
    kms = RecordingApplier(ManualClock(), connect_outcomes=["XKS_PROXY_INVALID_TLS_CONFIGURATION"])
    driver, services, _ = _driver()
    driver.kms = driver.ops.kms = services.kms = kms
    kms.clock = services.clock
    _on_hook(services, "rolling-back", lambda: setattr(services, "abort", ABORT))
    assert driver.run() == "rolled_back"
    assert kms.config.connectivity == "PUBLIC_ENDPOINT" and kms.state == "CONNECTED"


# -- extend moves the deadline of a wait under way ----------------------------------------------------------

def test_without_an_extension_a_short_budget_rolls_back() -> None:
    driver, services, _ = _driver("8m")  # two five-minute changes do not fit
    assert driver.run() == "rolled_back"
    assert "budget exhausted" in next(f for _, to, f in services.transitions if to == "rolling_back")["error"]


def test_an_extension_during_the_window_lets_the_run_complete() -> None:
    driver, services, _ = _driver("8m")
    _on_hook(services, "after-disconnect", lambda: setattr(services, "extended_seconds", 600.0))
    assert driver.run() == "completed"
    assert services.transitions[-1][2]["window_seconds"] > 480  # past the plan's budget, inside the extended one


# -- a call bounded by the remaining budget -------------------------------------------------------------------

def test_a_hung_call_is_given_up_when_the_budget_has_passed() -> None:
    release = threading.Event()
    try:
        with pytest.raises(CallTimedOut, match="UpdateCustomKeyStore had not answered"):
            call_within(release.wait, clock=Clock(60.0), deadline=time.time(), what="UpdateCustomKeyStore")
    finally:
        release.set()


def test_a_bounded_call_returns_its_value_and_raises_its_error() -> None:
    assert call_within(lambda: "rid-1", clock=Clock(60.0), deadline=time.time() + 60, what="x") == "rid-1"
    with pytest.raises(ZeroDivisionError):
        call_within(lambda: 1 // 0, clock=Clock(60.0), deadline=time.time() + 60, what="x")
    assert call_within(lambda: "no thread", clock=Clock(), deadline=None, what="x") == "no thread"


def test_a_bounded_call_follows_a_deadline_that_moves() -> None:
    """The deadline is read again while the call runs: an extension keeps a slow call alive."""
    release = threading.Event()
    deadline = [time.time() - 1]
    threading.Timer(0.5, lambda: deadline.__setitem__(0, time.time() + 60)).start()
    threading.Timer(1.5, release.set).start()
    assert call_within(lambda: release.wait() and "answered", clock=Clock(60.0), deadline=lambda: deadline[0],
                       what="ConnectCustomKeyStore") == "answered"
