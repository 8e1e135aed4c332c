"""The per-cell request budget (aws/rate_budget.py) as pure logic on a fake clock, and on a real boto3 client
against the rehearsal world: every shared custom key store request takes a token, throttling backs the cell off."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.aws import rate_budget
from migrator.aws.rate_budget import CellBudget


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.t += seconds


def budget(rate: float = 1.0, burst: float = 5.0, scale: float = 1.0) -> tuple[CellBudget, FakeTime]:
    fake = FakeTime()
    return CellBudget(rate=rate, burst=burst, scale=scale, clock=fake.now, sleep=fake.sleep), fake


def test_a_burst_goes_at_once_then_one_request_per_second() -> None:
    cell, fake = budget()
    times = []
    for _ in range(8):
        cell.acquire()
        times.append(fake.t)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([1.0, 2.0, 3.0])


def test_the_rate_is_in_simulated_seconds() -> None:
    cell, fake = budget(rate=1.0, burst=1.0, scale=60.0)
    cell.acquire()
    cell.acquire()
    assert fake.t == pytest.approx(1 / 60)  # one simulated second


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=40),
       st.floats(min_value=0.2, max_value=5.0), st.integers(min_value=1, max_value=5))
def test_no_window_ever_holds_more_than_the_burst_plus_the_rate(gaps: list[float], rate: float, burst: int) -> None:
    cell, fake = budget(rate=rate, burst=float(burst))
    granted = []
    for gap in gaps:
        fake.sleep(gap)
        cell.acquire()
        granted.append(fake.t)
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            span = granted[j] - start
            assert j - i + 1 <= burst + rate * span + 1e-6


def test_throttling_pauses_the_whole_cell_longer_each_time_until_a_success() -> None:
    cell, fake = budget(rate=1.0, burst=5.0)
    cell.throttled()
    cell.acquire()
    first = fake.t
    cell.throttled()
    before = fake.t
    cell.acquire()
    assert first == pytest.approx(1.0) and fake.t - before == pytest.approx(2.0)
    cell.succeeded()
    cell.throttled()
    before = fake.t
    cell.acquire()
    assert fake.t - before == pytest.approx(1.0)
    assert cell.throttled_count == 3


def test_a_call_that_changes_a_store_goes_before_a_look_that_waited_longer() -> None:
    # real threads and clock (two tokens a second, no burst): the look waits first, the Connect comes later
    import time

    a_waits = threading.Event()

    def sleep(seconds: float) -> None:
        if threading.current_thread().name == "look":
            a_waits.set()
        time.sleep(seconds)

    cell = CellBudget(rate=2.0, burst=1.0, sleep=sleep)
    cell.acquire()  # the one token is gone
    order: list[str] = []
    look = threading.Thread(target=lambda: (cell.acquire(), order.append("look")), name="look")
    change = threading.Thread(target=lambda: (cell.acquire(urgent=True), order.append("connect")), name="connect")
    look.start()
    assert a_waits.wait(10)
    change.start()
    look.join(10)
    change.join(10)
    assert order == ["connect", "look"]
    assert cell._urgent_waiting == 0 and cell.granted == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=40),
       st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0, 5.0]))
def test_a_cells_own_bucket_never_lets_one_second_hold_more_than_the_quota(gaps: list[float], rate: float) -> None:
    fake = FakeTime()
    cell = CellBudget(rate=rate, burst=rate_budget.burst_for(rate), clock=fake.now, sleep=fake.sleep)
    granted = []
    for gap in gaps:
        fake.sleep(gap)
        cell.acquire(urgent=gap > 1.0)
        granted.append(fake.t)
    for start in granted:
        assert sum(1 for t in granted if start <= t <= start + 1.0 - 1e-9) <= rate_budget.QUOTA


def test_every_client_of_a_cell_shares_one_budget() -> None:
    a = rate_budget.cell_budget(("http://x", "111122223333", "eu-west-1"), rate=2.0)
    b = rate_budget.cell_budget(("http://x", "111122223333", "eu-west-1"), rate=2.0)
    other = rate_budget.cell_budget(("http://x", "444455556666", "eu-west-1"), rate=2.0)
    assert a is b and a is not other
    with pytest.raises(ValueError):
        CellBudget(rate=0)


def test_a_real_client_takes_a_token_per_shared_request_only(start_world) -> None:
    from engine_helpers import load_world

    from migrator.aws.clients import ClientFactory
    from migrator.dryrun import DUMMY_CREDENTIALS

    server = start_world(load_world("public-to-vpc", time_scale=60.0))
    clients = ClientFactory(region=server.world.region, endpoint_url=server.endpoint_url,
                            credentials=dict(DUMMY_CREDENTIALS), cell_rate=50.0, time_scale=60.0,
                            account_id="cell-test-" + server.endpoint_url)
    kms = clients.client("kms")
    cell = rate_budget.cell_budget((server.endpoint_url, "cell-test-" + server.endpoint_url, server.world.region),
                                   rate=50.0, scale=60.0)
    for _ in range(3):
        kms.describe_custom_key_stores()
    kms.list_keys()
    assert cell.granted == 3


# -- one poller per cell ---------------------------------------------------------------------------------------

def test_stores_waiting_in_one_cell_share_each_describe_and_never_see_an_older_look() -> None:
    """Ten stores polling at once: far fewer describes than looks, and every look started after it was asked."""
    import time

    from migrator.aws.cell_poller import CellPoller
    from migrator.aws.store_config import Observation, StoreConfig

    config = StoreConfig("PUBLIC_ENDPOINT", "https://p.example.com", "/kms/xks/v1", "", "", "AKIAPROXY0000000001")
    started: dict[int, float] = {}
    lock = threading.Lock()

    def all_stores() -> list[Observation]:
        with lock:
            n = len(started) + 1
            started[n] = time.time()
        time.sleep(0.02)
        return [Observation(f"cks-{i}", f"look-{n}", "EXTERNAL_KEY_STORE", "CONNECTED", "", config)
                for i in range(10)]

    poller = CellPoller(all_stores)
    stale: list[str] = []

    def wait(i: int) -> None:
        for _ in range(10):
            asked = time.time()
            seen = poller.describe(f"cks-{i}")
            if started[int(seen.name.split("-")[1])] < asked:
                stale.append(f"cks-{i}: {seen.name}")

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stale == []
    assert poller.calls == len(started) and poller.calls < 100 / 3  # 100 looks
    with pytest.raises(Exception, match="does not exist"):
        poller.describe("cks-404")


def test_asks_made_while_a_look_waits_for_its_token_are_served_by_that_look() -> None:
    """The look is stamped once its token is paid (just before it is sent), so the stores that asked during the
    wait share it instead of each paying for another one; and a look that never answered is not published."""
    import time

    from migrator.aws.cell_poller import CellPoller
    from migrator.aws.store_config import Observation, StoreConfig

    config = StoreConfig("PUBLIC_ENDPOINT", "https://p.example.com", "/kms/xks/v1", "", "", "AKIAPROXY0000000001")
    sent: list[float] = []

    def all_stores() -> list[Observation]:
        sent.append(time.time())
        return [Observation(f"cks-{i}", "look", "EXTERNAL_KEY_STORE", "CONNECTED", "", config) for i in range(5)]

    poller = CellPoller(all_stores, pace=lambda urgent: time.sleep(0.3))  # a token wait of 0.3 s
    first = threading.Thread(target=poller.describe, args=("cks-0",))
    first.start()
    time.sleep(0.1)  # inside the first look's token wait
    others = [threading.Thread(target=poller.describe, args=(f"cks-{i}",)) for i in range(1, 5)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert poller.calls == 1 and len(sent) == 1

    def interrupted(urgent: object) -> None:
        raise KeyboardInterrupt

    broken = CellPoller(all_stores, pace=interrupted)
    with pytest.raises(KeyboardInterrupt):
        broken.describe("cks-0")
    assert broken.calls == 0 and broken._latest is None  # nobody is handed an empty look as if it had answered
