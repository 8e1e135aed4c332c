"""The live view's window timer: it keeps ticking between the engine's reports, during a slow AWS call too.

The engine reports the window (simulated seconds in a rehearsal) with its events and polls; a call that
hangs sends nothing. The timer anchors on the last report and adds the time passed since, at the run's
time scale (given, or learned from two reports), so the operator sees the window grow rather than a
frozen number. It stops at a terminal state: the window is then what the engine reported last.
"""

from __future__ import annotations

import time
from collections.abc import Callable

ENDS = ("completed", "rolled_back", "stuck", "blocked")


class WindowTimer:
    def __init__(self, scale: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.scale, self._clock = scale, clock
        self._anchor: tuple[float, float] | None = None  # (window reported, when it was received)
        self._first: tuple[float, float] | None = None  # the first report, to learn an unknown scale
        self.stopped = False

    def report(self, window: float | None, state: str | None = None) -> None:
        """A window the engine reported (None: not disconnected); `state`: the store's state, if known."""
        if state in ENDS:
            self.stopped = True
        if window is None:
            return
        now = self._clock()
        self._anchor = (float(window), now)
        if self._first is None:
            self._first = self._anchor
        elif self.scale is None and now - self._first[1] >= 0.5 and window > self._first[0]:
            self.scale = (window - self._first[0]) / (now - self._first[1])

    def window(self) -> float | None:
        """The window now: the last report plus the time since, at the scale (the last report if unknown)."""
        if self._anchor is None:
            return None
        reported, at = self._anchor
        if self.stopped or self.scale is None:
            return reported
        return reported + (self._clock() - at) * self.scale
