"""Reading the world's log (GET /_rehearsal/log) on the world's own clock, for tests and benchmarks.

The log is the rehearsal's ground truth: what KMS did and when, in simulated seconds, independent of
what the engine believes or journals.
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
