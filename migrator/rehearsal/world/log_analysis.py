"""Reading the world's log (GET /_rehearsal/log) on the world's own clock, for tests and benchmarks.

The log is the rehearsal's ground truth: what KMS did and when, in simulated seconds, independent of
what the engine believes or journals. Every entry names its account and Region, so calls can be counted per
account-Region cell (`calls_per_cell`, `peak_rate`, `throttled`).
"""

from __future__ import annotations

from typing import Any


def describe_calls(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e.get("kind") == "call" and e.get("operation") == "DescribeCustomKeyStores"]


def poll_lag(log: list[dict[str, Any]]) -> float:
    """Simulated seconds between KMS finishing a change and the next DescribeCustomKeyStores after it, summed
    over the last disconnect and the last connect: the part of a window that the poll schedule governs."""
    describes = describe_calls(log)
    lag = 0.0
    for done in ("DisconnectCompleted", "ConnectCompleted"):
        changed = max(e["t"] for e in log if e.get("kind") == "state" and e.get("operation") == done)
        seen = min(e["t"] for e in describes if e["t"] >= changed)
        lag += seen - changed
    return lag


# ---------------------------------------------------------------------------------------------
# Per account-Region cell (every entry names its `account` and `region`; see `world.state.CallLog`)

Cell = tuple[str, str]  # (account id, Region)

THROTTLING_ERRORS = ("ThrottlingException", "Throttling", "RequestLimitExceeded")


def cell_of(entry: dict[str, Any]) -> Cell:
    return str(entry.get("account")), str(entry.get("region"))


def calls(log: list[dict[str, Any]], operation: str | tuple[str, ...] | None = None, cell: Cell | None = None, *,
          accepted: bool = False) -> list[dict[str, Any]]:
    """API calls, optionally of one operation (or any of several), in one cell, and only those not throttled
    (`accepted`)."""
    wanted = (operation,) if isinstance(operation, str) else operation
    return [e for e in log if e.get("kind") == "call"
            and (wanted is None or e.get("operation") in wanted)
            and (cell is None or cell_of(e) == cell)
            and not (accepted and e.get("error") in THROTTLING_ERRORS)]


def calls_per_cell(log: list[dict[str, Any]], operation: str | None = None) -> dict[Cell, int]:
    """How many calls (of `operation`, or all) each cell received, throttled ones included."""
    counts: dict[Cell, int] = {}
    for e in calls(log, operation):
        counts[cell_of(e)] = counts.get(cell_of(e), 0) + 1
    return counts


def throttled(log: list[dict[str, Any]], cell: Cell | None = None) -> list[dict[str, Any]]:
    return [e for e in calls(log, cell=cell) if e.get("error") in THROTTLING_ERRORS]


def peak_rate(log: list[dict[str, Any]], operation: str | tuple[str, ...], cell: Cell, *, window: float = 1.0,
              accepted: bool = False) -> int:
    """The most calls of `operation` in `cell` within any `window` simulated seconds ([t, t + window)).

    "At most 1 DescribeCustomKeyStores per second for the cell" is `peak_rate(log, "DescribeCustomKeyStores",
    cell) <= 1`; `accepted=True` counts only what the quota let through.
    """
    times = sorted(e["t"] for e in calls(log, operation, cell, accepted=accepted))
    peak, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def most_disconnected_at_once(log: list[dict[str, Any]]) -> tuple[int, float]:
    """The most stores out of CONNECTED at one moment (a store is out from its first change away from CONNECTED
    until it is CONNECTED again), and when (simulated seconds): what a fleet's max_in_flight bounds."""
    changes = sorted((e["t"], e.get("keystore"), e.get("from"), e.get("to")) for e in log
                     if e.get("kind") == "state" and e.get("keystore"))
    out: set[str] = set()
    peak, when = 0, 0.0
    for t, store, before, after in changes:
        if after == "CONNECTED":
            out.discard(str(store))
        elif before == "CONNECTED" or after in ("DISCONNECTING", "DISCONNECTED"):
            out.add(str(store))
        if len(out) > peak:
            peak, when = len(out), float(t)
    return peak, when


def first_disconnects(log: list[dict[str, Any]]) -> list[str]:
    """The stores in the order they were first disconnected (accepted DisconnectCustomKeyStore calls)."""
    order: list[str] = []
    for e in calls(log, "DisconnectCustomKeyStore", accepted=True):
        store = str(e.get("keystore"))
        if e.get("error") is None and store not in order:
            order.append(store)
    return order
