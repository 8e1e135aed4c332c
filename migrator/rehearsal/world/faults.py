"""The world's fault book: which API errors, latencies, connect outcomes and proxy faults fire, and when.

Split from `world.state`; `WorldState.faults` is one `FaultBook`. `after`, `count` and `probability` work
the same for every kind of fault (see `model.Fault`); probabilities come from a seeded RNG so runs repeat.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from migrator.rehearsal.world import model


@dataclass
class _FaultRuntime:
    fault: model.Fault
    matched: int = 0
    fired: int = 0


class FaultBook:
    """Faults by operation with `after`, `count` and `probability` (seeded, so runs repeat).

    Has its own lock, not the world's: proxy threads consult it (via the proxy's fault hook) while a
    KMS handler holds the world lock and waits for that very proxy.
    """

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.items: list[_FaultRuntime] = []
        self._lock = threading.Lock()

    def add(self, faults: list[model.Fault] | tuple[model.Fault, ...]) -> None:
        with self._lock:
            self.items.extend(_FaultRuntime(f) for f in faults)

    @staticmethod
    def persistent(fault: model.Fault) -> bool:
        return fault.count is None and fault.probability is None and fault.after == 0

    def proxy_faults(self, proxy: str) -> dict[str, float]:
        """Counted or probabilistic proxy faults for one proxy request ({kind: latency_ms})."""
        out: dict[str, float] = {}
        for item in list(self.items):
            f = item.fault
            if f.proxy_fault and f.proxy == proxy and not self.persistent(f) and self._take(item):
                out[f.proxy_fault] = f.latency_ms
        return out

    def _take(self, item: _FaultRuntime) -> bool:
        with self._lock:
            return self._take_locked(item)

    def _take_locked(self, item: _FaultRuntime) -> bool:
        item.matched += 1
        f = item.fault
        if item.matched <= f.after or (f.count is not None and item.fired >= f.count):
            return False
        if f.probability is not None and self.rng.random() >= f.probability:
            return False
        item.fired += 1
        return True

    def _matching(self, operation: str, attr: str, account: str | None, region: str | None) -> list[_FaultRuntime]:
        """Faults of `operation` setting `attr`, limited to a cell when they name one (None: any cell)."""
        return [i for i in self.items if getattr(i.fault, attr) and i.fault.operation in (operation, "*")
                and (not i.fault.account or account is None or i.fault.account == account)
                and (not i.fault.region or region is None or i.fault.region == region)]

    def api_error(self, operation: str, account: str | None = None, region: str | None = None) -> model.Fault | None:
        for item in self._matching(operation, "error_code", account, region):
            if self._take(item):
                return item.fault
        return None

    def latency(self, operation: str, account: str | None = None, region: str | None = None) -> float:
        return sum(i.fault.latency_seconds for i in self._matching(operation, "latency_seconds", account, region)
                   if self._take(i))

    def connection_error(self, account: str | None = None, region: str | None = None) -> str:
        for item in self._matching("ConnectCustomKeyStore", "connection_error_code", account, region):
            if self._take(item):
                return item.fault.connection_error_code
        return ""
