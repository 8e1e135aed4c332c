"""The fleet's outcome from its stores' (fleet/outcome.py): pure logic, the one rule every fleet view uses."""

from __future__ import annotations

from migrator.fleet.outcome import NOT_STARTED, Stop, StoreOutcome, fleet_outcome

PLANNED = [("a", "111122223333", "us-east-1", 1), ("b", "111122223333", "us-east-1", 2),
           ("c", "444455556666", "eu-west-1", 2), ("d", "444455556666", "eu-west-1", 3)]


def ended(**outcomes: str) -> dict[str, StoreOutcome]:
    codes = {"completed": 0, "no_changes": 0, "rolled_back": 4, "blocked": 3, "stuck": 5, "failed": 1}
    return {ref: StoreOutcome(ref, "111122223333", "us-east-1", 1, f"run-{ref}", o, codes[o], 600.0, 900.0)
            for ref, o in outcomes.items()}


def test_every_store_completed_is_a_completed_fleet() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="completed", b="completed", c="no_changes", d="completed"), None)
    assert (fleet.outcome, fleet.exit_code) == ("completed", 0)
    assert fleet.message() == "4 of 4 stores completed"


def test_a_canary_that_rolled_back_stops_the_fleet_with_nothing_else_touched() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="rolled_back"), Stop("a", "canary rolled_back", 1))
    assert (fleet.outcome, fleet.exit_code) == ("rolled_back", 4)
    assert [s.outcome for s in fleet.stores] == ["rolled_back", NOT_STARTED, NOT_STARTED, NOT_STARTED]
    assert "stopped by a (canary rolled_back) in wave 1; 3 not started" in fleet.message()


def test_a_stop_after_some_stores_changed_needs_an_operator() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="completed", b="rolled_back", c="completed"), Stop("b", "x", 2))
    assert (fleet.outcome, fleet.exit_code) == ("stopped", 5)
    assert fleet.summary()["stopped_by"] == "b"


def test_a_failed_gate_stops_a_fleet_whose_stores_all_completed() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="completed"), Stop("the gate after canary 1", "alarm", 1))
    assert (fleet.outcome, fleet.exit_code) == ("stopped", 5)


def test_a_failure_within_the_tolerance_is_partial_not_completed() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="completed", b="rolled_back", c="completed", d="completed"), None)
    assert (fleet.outcome, fleet.exit_code) == ("partial", 5)


def test_the_worst_store_wins() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="completed", b="failed"), Stop("b", "failed", 2))
    assert (fleet.outcome, fleet.exit_code) == ("failed", 1)
    stuck = fleet_outcome("f", PLANNED, ended(a="blocked"), Stop("a", "canary blocked", 1))
    assert (stuck.outcome, stuck.exit_code) == ("blocked", 3)


def test_a_fleet_still_going_says_so() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="completed"), None, finished=False)
    assert fleet.outcome == "running"


def test_the_summary_round_trips_each_store() -> None:
    fleet = fleet_outcome("f", PLANNED, ended(a="completed"), None)
    first = fleet.summary()["keystores"][0]  # type: ignore[index]
    assert StoreOutcome.from_dict(first) == fleet.stores[0]
    assert fleet.summary()["longest_window_seconds"] == 600.0
