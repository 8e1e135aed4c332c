"""Time as the engine sees it: wall-clock instants, durations in (possibly simulated) seconds.

Against real AWS the scale is 1. In a rehearsal the world runs `scale` simulated seconds per real
second, and so does the engine: sleeps are divided by the scale and elapsed times multiplied, so a
15-minute budget and a 5-second poll interval keep their meaning while the rehearsal runs in
seconds. Instants are stored as real epoch seconds, so a budget keeps counting across a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    scale: float = 1.0

    @property
    def simulated(self) -> bool:
        return self.scale != 1.0

    def now(self) -> float:
        """Real epoch seconds (what the journal stores)."""
        return time.time()

    def elapsed(self, since: float, until: float | None = None) -> float:
        """Seconds (simulated in a rehearsal) between two real instants."""
        return ((self.now() if until is None else until) - since) * self.scale

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of (simulated) time."""
        if seconds > 0:
            time.sleep(seconds / self.scale)


def leave_signals_to_the_main_thread() -> None:
    """Call first in a helper thread: SIGINT/SIGTERM then always reach the main thread, whose handler turns
    them into an interruption (exit 130). Delivered to a helper thread, a signal can sit unhandled while the
    main thread blocks in a read, and Ctrl-C seems lost."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
