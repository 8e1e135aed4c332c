"""One observation stream per account-Region cell: every store waiting there shares one poller.

DescribeCustomKeyStores without a filter answers for every store of the account and Region (paged), so a
single call observes all of them. A store that wants to look asks the cell's poller; if a describe that
started after it asked is already known it gets that, if one is under way that started before, it waits
for the next, and otherwise it makes the call for everyone. Ten stores waiting in one cell then cost one
request per poll, not ten, and the cell's request budget (aws/rate_budget.py) spaces those. The poller
belongs to a ClientFactory (one per cell: its account's credentials, its Region), so every store driven
through that factory shares it.

A look is never older than the moment it was asked for: that is what makes a shared observation as good as
one's own (a state seen before a Connect was sent must never be taken for the state after it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrator.aws import rate_budget
from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.store_config import Observation

if TYPE_CHECKING:
    from migrator.aws.clients import ClientFactory

_MAKING = threading.Lock()
DESCRIBE_RATE = 1.0  # looks per (simulated) second for the cell at most (on average), whatever its budget: the
# rest of a larger budget is for the calls that change stores


def poller_for(clients: ClientFactory) -> CellPoller:
    """The one describe stream of this factory's cell, made on first use and kept on the factory; with a cell
    budget, its looks are paced (on average at the budget's rate, at most DESCRIBE_RATE) and pay their token
    before they are stamped."""
    with _MAKING:
        if not isinstance(clients.shared_poller, CellPoller):
            pace, budget = None, None
            if clients.cell_rate is not None:
                budget = rate_budget.cell_budget(clients.budget_cell(), rate=clients.cell_rate,
                                                 scale=clients.time_scale)
                pace = LookPace(budget, min(clients.cell_rate, DESCRIBE_RATE) * clients.time_scale)
            clients.shared_poller = CellPoller(KmsApplier(clients.client("kms")).all_stores, pace=pace,
                                               budget=budget)
        return clients.shared_poller


class LookPace:
    """The cell's looks: `rate` per real second on average, with room for one more at once.

    A store that polls while a change runs can wait a tick; a store whose window waits on the look (the proof
    after its own UpdateCustomKeyStore) should not. So a polling look needs two of the bucket's two tokens and
    leaves one; a look a step waits on (`urgent`) needs one. Any second then holds at most two looks, and the
    average stays at `rate` (a polling look after an urgent one waits for the bucket to fill again).
    """

    BURST = 2.0

    def __init__(self, budget: rate_budget.CellBudget | None, rate: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("a look pace needs rate > 0")
        self.budget, self.rate, self.clock, self.sleep = budget, rate, clock, sleep
        self.tokens, self.stamp = self.BURST, clock()

    def __call__(self, urgent: Callable[[], bool]) -> None:
        """Wait for this look's turn (asking `urgent()` again each tick: a step may start waiting meanwhile),
        pay the cell budget's token, then take the look's own token: last, so that the looks' spacing holds
        for when they are really sent, however long the budget made this one wait."""
        while not self._ready(urgent()):
            self.sleep(min(self._need(urgent()) - self.tokens, 0.1) / self.rate)
        if self.budget is not None:
            self.budget.acquire(urgent=urgent())
        self._ready(urgent())  # refilled to now: at least what was ready before
        self.tokens = max(0.0, self.tokens - 1.0)

    def _need(self, urgent: bool) -> float:
        return 1.0 if urgent else self.BURST

    def _ready(self, urgent: bool) -> bool:
        now = self.clock()
        self.tokens = min(self.BURST, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens >= self._need(urgent) - 1e-9


@dataclass(frozen=True)
class _Look:
    started_at: float
    stores: dict[str, Observation]
    error: AwsCallError | None = None


class CellPoller:
    """Shared DescribeCustomKeyStores for one cell; thread-safe."""

    def __init__(self, all_stores: Callable[[], list[Observation]], clock: Callable[[], float] = time.time,
                 pace: Callable[[Callable[[], bool]], None] | None = None,
                 budget: rate_budget.CellBudget | None = None):
        self._all_stores, self._clock, self._pace, self._budget = all_stores, clock, pace, budget
        self._latest: _Look | None = None
        self._busy = False
        self._urgent_asks = 0  # stores whose step (not a poll) waits for the next look
        self._cond = threading.Condition()
        self.calls = 0  # describes made (each may serve many stores)

    @property
    def paced(self) -> bool:
        """Does the poller space its looks itself (so a store may ask again as soon as it has an answer)?"""
        return self._pace is not None

    def admit_window(self) -> float:
        """Wait for the cell's turn to start a window (rate_budget.CellBudget.admit_window); 0 without a budget."""
        return self._budget.admit_window() if self._budget is not None else 0.0

    def describe(self, store_id: str, polling: bool = False) -> Observation:
        """The store as seen by a describe that started no earlier than this call. `polling`: the store waits for
        a change to finish and can wait a tick; otherwise the look goes first (LookPace)."""
        asked = self._clock()
        with self._cond:
            self._urgent_asks += not polling
        try:
            return self._look_since(asked, store_id)
        finally:
            with self._cond:
                self._urgent_asks -= not polling

    def _look_since(self, asked: float, store_id: str) -> Observation:
        with self._cond:
            while True:
                seen = self._latest
                if seen is not None and seen.started_at >= asked:
                    return _pick(seen, store_id)
                if not self._busy:
                    self._busy = True
                    break
                self._cond.wait(timeout=1.0)
        # Stamped once its token is paid, just before it is sent: every store that asked meanwhile (while it
        # waited for the cell's budget) is served by this look, which is no older than their asks.
        look: _Look | None = None  # published only when the describe answered (or failed as AWS said)
        try:
            if self._pace is not None:
                self._pace(self._urgent)
            started = self._clock()
            try:
                with rate_budget.prepaid():
                    look = _Look(started, {o.id: o for o in self._all_stores()})
            except AwsCallError as exc:  # every store that asked gets the same answer
                look = _Look(started, {}, exc)
        finally:
            with self._cond:
                self.calls += look is not None
                self._latest = look or self._latest
                self._busy = False
                self._cond.notify_all()
        assert look is not None  # else the exception that left it unset has propagated
        return _pick(look, store_id)

    def _urgent(self) -> bool:
        """Is some store's step (not a poll) waiting for the look being made?"""
        with self._cond:
            return self._urgent_asks > 0


def _pick(look: _Look, store_id: str) -> Observation:
    if look.error is not None:
        raise look.error
    found = look.stores.get(store_id)
    if found is None:
        raise AwsCallError("DescribeCustomKeyStores", "CustomKeyStoreNotFoundException",
                           f"custom key store {store_id} does not exist")
    return found
