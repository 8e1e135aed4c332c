"""One request budget per account-Region cell for the custom key store APIs, shared by every store of a run.

DescribeCustomKeyStores, ConnectCustomKeyStore, DisconnectCustomKeyStore and UpdateCustomKeyStore share a
quota of 5 requests per second per account and Region with every other caller in that account (AWS KMS
quotas). Several stores migrating at once in one cell must not each poll as if alone, so every HTTP request
of those operations takes a token from its cell's bucket first (botocore's `before-send`, so retries count
too), and a ThrottlingException backs the whole cell off, not just the call that saw it. A call that changes a
store (Connect, Disconnect, Update) goes before a waiting describe: it is on a window's critical path, while
a look delayed by one token serves every store that waits for it anyway.

The rate is in the run's seconds: simulated in a rehearsal (`scale` simulated seconds per real second), so
"1 request per second" keeps its meaning at any time scale. The default leaves most of the quota to the
account's other callers: 1 request/s, with a burst of 4 (a preflight's few describes go at once), so that no
second ever holds more than the quota's 5.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHANGING_OPERATIONS = frozenset({"ConnectCustomKeyStore", "DisconnectCustomKeyStore", "UpdateCustomKeyStore"})
SHARED_OPERATIONS = CHANGING_OPERATIONS | {"DescribeCustomKeyStores"}
DEFAULT_RATE = 1.0  # requests per (simulated) second per cell
QUOTA = 5.0  # AWS's requests per second per account-Region for these operations (each), shared with every caller
DEFAULT_BURST = 5.0  # a bucket made by hand (tests); a cell's own bucket takes burst_for(rate)
_EPSILON = 1e-9
MAX_BACKOFF = 30.0  # seconds (simulated) a throttled cell waits at most before its next request
WINDOW_CALLS = 4.0  # what one window asks of its cell at its end: Update, its proof, Connect, and a look for the others


@dataclass
class CellBudget:
    """A token bucket for one account-Region cell; thread-safe, blocking."""

    rate: float = DEFAULT_RATE
    burst: float = DEFAULT_BURST
    scale: float = 1.0
    clock: Callable[[], float] = time.monotonic  # real seconds
    sleep: Callable[[float], None] = time.sleep  # real seconds
    _tokens: float = field(default=-1.0, repr=False)
    _stamp: float = field(default=0.0, repr=False)
    _paused_until: float = field(default=0.0, repr=False)
    _throttles: int = field(default=0, repr=False)
    _urgent_waiting: int = field(default=0, repr=False)
    _next_window: float = field(default=float("-inf"), repr=False)
    _reserved: dict[str, int] = field(default_factory=dict, repr=False)  # paid ahead: {operation: requests}
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    granted: int = 0  # requests let through (what the bench and tests read)
    throttled_count: int = 0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.scale <= 0:
            raise ValueError("a cell budget needs rate > 0, burst >= 1 and scale > 0")
        self._tokens, self._stamp = self.burst, self.clock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate * self.scale)
        self._stamp = now

    def acquire(self, urgent: bool = False) -> float:
        """Wait for a token; returns the real seconds waited. An `urgent` request (a call that changes a store:
        always on some window's critical path) goes before every waiting look (a describe can wait a tick)."""
        waited = 0.0
        if urgent:
            with self._lock:
                self._urgent_waiting += 1
        try:
            while True:
                with self._lock:
                    now = self.clock()
                    self._refill(now)
                    pause = self._paused_until - now
                    ready = pause <= 0 and self._tokens >= 1.0 - _EPSILON  # float refills land a hair short of 1
                    if ready and (urgent or self._urgent_waiting == 0):
                        self._tokens = max(0.0, self._tokens - 1.0)
                        self.granted += 1
                        return waited
                    tick = 1.0 / (self.rate * self.scale)
                    need = max(pause, (1.0 - self._tokens) * tick, _EPSILON)
                    if ready:  # a token is there, but an urgent request takes it: look again shortly
                        need = tick / 10
                self.sleep(need)
                waited += need
        finally:
            if urgent:
                with self._lock:
                    self._urgent_waiting -= 1

    def admit_window(self) -> float:
        """Wait for this cell's turn to start a window, then take the Disconnect's token (the cell's next
        DisconnectCustomKeyStore goes without waiting again); returns the real seconds waited.

        Windows of one cell start at most one per WINDOW_CALLS tokens: when their changes finish about five
        minutes later, each then finds the tokens of its update, proof and connect at once instead of queueing
        behind the others' inside its window. The store is still connected while it waits its turn.
        """
        with self._lock:
            now = self.clock()
            start = max(now, self._next_window)
            self._next_window = start + WINDOW_CALLS / (self.rate * self.scale)
        waited = max(0.0, start - now)
        if waited > 0:
            self.sleep(waited)
        waited += self.acquire(urgent=True)
        with self._lock:
            self._reserved["DisconnectCustomKeyStore"] = self._reserved.get("DisconnectCustomKeyStore", 0) + 1
        return waited

    def take_reserved(self, operation: str) -> bool:
        """Was a request of `operation` paid ahead (admit_window)? Then this one uses that token."""
        with self._lock:
            if self._reserved.get(operation, 0) <= 0:
                return False
            self._reserved[operation] -= 1
            return True

    def throttled(self) -> None:
        """AWS said ThrottlingException: the whole cell waits, longer each time in a row (capped)."""
        with self._lock:
            self._throttles += 1
            self.throttled_count += 1
            backoff = min(MAX_BACKOFF, (2 ** (self._throttles - 1)) / self.rate) / self.scale
            self._paused_until = max(self._paused_until, self.clock() + backoff)
            self._tokens = 0.0

    def succeeded(self) -> None:
        with self._lock:
            self._throttles = 0


Cell = tuple[str, str, str]  # (endpoint or "aws", account id or "caller", Region)
_CELLS: dict[Cell, CellBudget] = {}
_CELLS_LOCK = threading.Lock()


def burst_for(rate: float) -> float:
    """The burst that keeps any one second within AWS's quota: the burst plus one second's refill is at most
    QUOTA (at the default 1/s a burst of 4, so a preflight's few describes still go at once)."""
    return max(1.0, QUOTA - rate)


def cell_budget(cell: Cell, *, rate: float = DEFAULT_RATE, burst: float | None = None,
                scale: float = 1.0) -> CellBudget:
    """The process's one budget for `cell` (made on first use): every client of the cell shares it."""
    burst = burst_for(rate) if burst is None else burst
    with _CELLS_LOCK:
        found = _CELLS.get(cell)
        if found is None or (found.rate, found.burst, found.scale) != (rate, burst, scale):
            found = _CELLS[cell] = CellBudget(rate=rate, burst=burst, scale=scale)
        return found


_PREPAID = threading.local()


class prepaid:
    """The next describe on this thread is already paid for (the cell poller takes its token first, so that
    its look can be stamped when it is really sent)."""

    def __enter__(self) -> None:
        _PREPAID.count = 1

    def __exit__(self, *exc: object) -> None:
        _PREPAID.count = 0


def attach(client: object, budget: CellBudget) -> None:
    """Make `client` (a boto3 KMS client) take a token before each HTTP request of a shared operation, and
    back the cell off when AWS throttles one."""
    events = client.meta.events  # type: ignore[attr-defined]

    def before_send(event_name: str = "", **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation in SHARED_OPERATIONS:
            if operation == "DescribeCustomKeyStores" and getattr(_PREPAID, "count", 0) > 0:
                _PREPAID.count -= 1
                return
            if budget.take_reserved(operation):
                return
            budget.acquire(urgent=operation in CHANGING_OPERATIONS)

    def needs_retry(event_name: str = "", response: object = None, **_: object) -> None:
        if event_name.rsplit(".", 1)[-1] not in SHARED_OPERATIONS or not isinstance(response, tuple):
            return
        parsed = response[1] if len(response) > 1 else None
        code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        if code in ("ThrottlingException", "Throttling", "RequestLimitExceeded"):
            budget.throttled()
        elif code is None:
            budget.succeeded()

    events.register("before-send.kms", before_send)
    events.register("needs-retry.kms", needs_retry)
