"""A cell's looks and windows (aws/cell_poller.LookPace, rate_budget.CellBudget.admit_window, StoreOps' look
reuse): pure logic on a fake clock, and one run against the rehearsal world whose log shows which looks the
window's steps acted on."""

from __future__ import annotations

import itertools

import pytest
from engine_helpers import ROOMY_BUDGET, example_plan, load_world, make_env, read_world_log
from hypothesis import given, settings
from hypothesis import strategies as st
from tenacity import RetryCallState

from migrator.aws import rate_budget
from migrator.aws.cell_poller import LookPace
from migrator.aws.rate_budget import CellBudget
from migrator.engine.waits import poll_schedule


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def pace(rate: float = 1.0) -> tuple[LookPace, FakeTime]:
    fake = FakeTime()
    return LookPace(None, rate, clock=fake.now, sleep=fake.sleep), fake


def test_a_polling_look_leaves_room_for_a_steps_look() -> None:
    looks, fake = pace()
    sent = []
    for urgent in (False, True, False, False):
        looks(lambda urgent=urgent: urgent)
        sent.append(round(fake.t, 6))
    # the poll goes at once, the step's look right after it (the room it left), then polls wait for two tokens
    assert sent == [0.0, 0.0, pytest.approx(2.0), pytest.approx(3.0)]


def test_a_step_that_starts_waiting_mid_tick_makes_the_look_go_sooner() -> None:
    looks, fake = pace()
    looks(lambda: True)
    looks(lambda: True)  # the bucket is empty now
    start = fake.t
    looks(lambda: fake.t - start >= 0.3)  # a poll, until a step asks for the same look 0.3 s later
    assert fake.t - start == pytest.approx(1.0, abs=0.11)  # one token, not two


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=3.0)), min_size=1, max_size=40),
       st.sampled_from([0.5, 1.0, 2.0]))
def test_looks_never_exceed_two_a_tick_nor_the_rate_on_average(asks: list[tuple[bool, float]], rate: float) -> None:
    looks, fake = pace(rate)
    sent = []
    for urgent, gap in asks:
        fake.sleep(gap)
        looks(lambda urgent=urgent: urgent)
        sent.append(fake.t)
    tick = 1.0 / rate
    for i, t in enumerate(sent):
        assert sum(1 for u in sent[i:] if u < t + tick - 1e-6) <= 2
    assert len(sent) <= LookPace.BURST + (sent[-1] - sent[0]) * rate + 1e-6


def test_windows_of_one_cell_start_spaced_by_what_their_ends_will_ask() -> None:
    fake = FakeTime()
    cell = CellBudget(rate=4.0, burst=1.0, scale=2.0, clock=fake.now, sleep=fake.sleep)
    starts = []
    for _ in range(4):
        cell.admit_window()
        starts.append(fake.t)
        assert cell.take_reserved("DisconnectCustomKeyStore")  # the disconnect was paid for by its admission
        assert not cell.take_reserved("DisconnectCustomKeyStore")
    spacing = rate_budget.WINDOW_CALLS / (4.0 * 2.0)  # real seconds: tokens / (rate * scale)
    assert [b - a for a, b in itertools.pairwise(starts)] == [pytest.approx(spacing)] * 3
    assert not cell.take_reserved("UpdateCustomKeyStore")


def _wait(schedule: object, attempt: int) -> float:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return schedule(state)  # type: ignore[operator]


def test_a_store_of_a_paced_cell_asks_again_at_once_from_two_intervals_before_the_expected_end() -> None:
    elapsed = {"now": 100.0}
    schedule = poll_schedule(5.0, expected=300.0, elapsed=lambda: elapsed["now"], floor=0.0)
    assert _wait(schedule, 2) == 5.0
    elapsed["now"] = 286.0
    assert _wait(schedule, 2) == pytest.approx(4.0)  # lands two intervals before the end
    elapsed["now"] = 290.0
    assert _wait(schedule, 2) == 0.0  # the cell's poller spaces the looks
    elapsed["now"] = 311.0
    assert _wait(schedule, 2) == 5.0


def test_the_update_and_the_connect_act_on_the_looks_that_showed_their_state(journal, start_world) -> None:
    """The look that showed DISCONNECTED serves the update, the update's proof serves the connect: one describe
    each between the disconnect finishing, the update and the connect (a new look for each step would put the
    poller's next tick on the window's critical path twice more)."""
    from migrator.engine import runner as engine

    # A look may serve the next step for REUSE_SECONDS simulated: at scale 20 that leaves a loaded machine
    # 250 real ms between the look and the step (at 600 it would be 8 ms); short changes keep the test short.
    server = start_world(load_world("public-to-vpc", time_scale=20.0, connect=30.0, disconnect=30.0))
    result = engine.start(example_plan("public-to-vpc", max_disconnected=ROOMY_BUDGET), make_env(server, journal))
    assert result.outcome == "completed", result.message

    log = read_world_log(server)
    done = next(e["t"] for e in log if e.get("kind") == "state" and e.get("operation") == "DisconnectCompleted")
    calls = [e for e in log if e.get("kind") == "call" and not e.get("error")]
    update = next(i for i, e in enumerate(calls) if e["operation"] == "UpdateCustomKeyStore")
    connect = next(i for i, e in enumerate(calls) if e["operation"] == "ConnectCustomKeyStore")
    looks_after_done = [e for e in calls[:update] if e["operation"] == "DescribeCustomKeyStores" and e["t"] >= done]
    proofs = [e for e in calls[update:connect] if e["operation"] == "DescribeCustomKeyStores"]
    assert (len(looks_after_done), len(proofs)) == (1, 1)
