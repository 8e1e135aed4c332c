"""How a step says it cannot go on: the exceptions the driver's loop routes through the machine table.

A leaf module (it imports nothing of the engine), so every other engine module can raise them.
`Blocked`, `StepFailed` and `DeadlineExceeded` are ordinary exceptions the loop turns into a move
(block, roll back, stuck: the row's `on_failure`); `LockLostStop` is a BaseException so that,
like Ctrl-C, it passes every `except Exception` and stops the run before its next AWS call.
"""

from __future__ import annotations


class Blocked(Exception):
    """Preflight (or the operator) stopped the run before anything changed."""


class NothingToDo(Blocked):
    """The store already has the plan's target: it ends unchanged with the outcome `no_changes` (exit 0)."""


class StepFailed(Exception):
    """The forward path cannot continue; the store must go back to its original configuration."""


class DeadlineExceeded(Exception):
    """The budget ran out while waiting; `last` is the last observation (if any)."""

    def __init__(self, what: str, last: object = None):
        super().__init__(f"budget exhausted while {what}")
        self.what, self.last = what, last


class LockLostStop(BaseException):
    """Our lock was removed (xksmigrate unlock) or its session died: stop before the next side effect."""


class JournalLostStop(LockLostStop):
    """The journal cannot be written (disk full, database gone): stop before the next side effect, which could
    not be journaled first. A LockLostStop, so it passes every handler that lets a lost lock through."""
