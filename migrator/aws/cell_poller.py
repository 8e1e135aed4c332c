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

from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.store_config import Observation

if TYPE_CHECKING:
    from migrator.aws.clients import ClientFactory

_MAKING = threading.Lock()


def poller_for(clients: ClientFactory) -> CellPoller:
    """The one describe stream of this factory's cell, made on first use and kept on the factory."""
    with _MAKING:
        if not isinstance(clients.shared_poller, CellPoller):
            clients.shared_poller = CellPoller(KmsApplier(clients.client("kms")).all_stores)
        return clients.shared_poller


@dataclass(frozen=True)
class _Look:
    started_at: float
    stores: dict[str, Observation]
    error: AwsCallError | None = None


class CellPoller:
    """Shared DescribeCustomKeyStores for one cell; thread-safe."""

    def __init__(self, all_stores: Callable[[], list[Observation]], clock: Callable[[], float] = time.time):
        self._all_stores, self._clock = all_stores, clock
        self._latest: _Look | None = None
        self._busy = False
        self._cond = threading.Condition()
        self.calls = 0  # describes made (each may serve many stores)

    def describe(self, store_id: str) -> Observation:
        """The store as seen by a describe that started no earlier than this call."""
        asked = self._clock()
        with self._cond:
            while True:
                look = self._latest
                if look is not None and look.started_at >= asked:
                    return _pick(look, store_id)
                if not self._busy:
                    self._busy = True
                    break
                self._cond.wait(timeout=1.0)
        started = self._clock()
        look = _Look(started, {})
        try:
            look = _Look(started, {o.id: o for o in self._all_stores()})
        except AwsCallError as exc:  # every store that asked gets the same answer
            look = _Look(started, {}, exc)
        finally:
            with self._cond:
                self.calls += 1
                self._latest, self._busy = look, False
                self._cond.notify_all()
        return _pick(look, store_id)


def _pick(look: _Look, store_id: str) -> Observation:
    if look.error is not None:
        raise look.error
    found = look.stores.get(store_id)
    if found is None:
        raise AwsCallError("DescribeCustomKeyStores", "CustomKeyStoreNotFoundException",
                           f"custom key store {store_id} does not exist")
    return found
