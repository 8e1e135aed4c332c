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
DESCRIBE_RATE = 1.0  # looks per (simulated) second for the cell at most, whatever its budget: the rest of a
# larger budget is for the calls that change stores


def poller_for(clients: ClientFactory) -> CellPoller:
    """The one describe stream of this factory's cell, made on first use and kept on the factory; with a cell
    budget, its looks are paced at the budget's rate (at most DESCRIBE_RATE) and pay their token before they
    are stamped."""
    with _MAKING:
        if not isinstance(clients.shared_poller, CellPoller):
            pace = None
            if clients.cell_rate is not None:
                budget = rate_budget.cell_budget(clients.budget_cell(), rate=clients.cell_rate,
                                                 scale=clients.time_scale)
                pace = _Pace(budget, 1.0 / (min(clients.cell_rate, DESCRIBE_RATE) * clients.time_scale))
            clients.shared_poller = CellPoller(KmsApplier(clients.client("kms")).all_stores, pace=pace)
        return clients.shared_poller


class _Pace:
    """At most one look per `spacing` real seconds (the cell's rate, at most DESCRIBE_RATE, without its burst),
    each with its token."""

    def __init__(self, budget: rate_budget.CellBudget, spacing: float):
        self.budget, self.spacing, self.last = budget, spacing, float("-inf")

    def __call__(self) -> None:
        wait = self.last + self.spacing - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.budget.acquire()
        self.last = time.monotonic()


@dataclass(frozen=True)
class _Look:
    started_at: float
    stores: dict[str, Observation]
    error: AwsCallError | None = None


class CellPoller:
    """Shared DescribeCustomKeyStores for one cell; thread-safe."""

    def __init__(self, all_stores: Callable[[], list[Observation]], clock: Callable[[], float] = time.time,
                 pace: Callable[[], None] | None = None):
        self._all_stores, self._clock, self._pace = all_stores, clock, pace
        self._latest: _Look | None = None
        self._busy = False
        self._cond = threading.Condition()
        self.calls = 0  # describes made (each may serve many stores)

    def describe(self, store_id: str) -> Observation:
        """The store as seen by a describe that started no earlier than this call."""
        asked = self._clock()
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
                self._pace()
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


def _pick(look: _Look, store_id: str) -> Observation:
    if look.error is not None:
        raise look.error
    found = look.stores.get(store_id)
    if found is None:
        raise AwsCallError("DescribeCustomKeyStores", "CustomKeyStoreNotFoundException",
                           f"custom key store {store_id} does not exist")
    return found
