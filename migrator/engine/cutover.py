"""The postponed cut-over (gh-ost's `--postpone-cut-over-flag-file`): hold before the disconnect.

Released by `xksmigrate proceed RUN_ID` (an event in the journal, so from any machine that shares
it), by deleting the flag file, or at `cutover_at`. Survives a resume: the settings live in the
run's options, and the `postponed` / `released` notes in the journal say where the wait stands.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from migrator.engine.errors import LockLostStop

if TYPE_CHECKING:
    from migrator.journal.models import EventView


class CutoverJournal(Protocol):
    """The journal reads and writes the wait needs."""

    def events(self, run_id: str) -> list[EventView]: ...
    def note(self, mid: int, outcome: str, message: str) -> None: ...


def is_postponed(options: Mapping[str, object]) -> bool:
    return bool(options.get("postpone") or options.get("postpone_flag_file") or options.get("cutover_at"))


def wait_for_release(journal: CutoverJournal, run_id: str, mid: int, options: Mapping[str, object], *,
                     on_postponed: Callable[[], None], progress: Callable[[int], None],
                     lock_lost: Callable[[], bool]) -> bool:
    """Hold until released; True if the run waited (the caller then preflights again).

    `on_postponed` fires once (the `postponed` hook), `progress(after_seq)` once a second while
    waiting, and a lost lock stops the wait (LockLostStop) as it would stop an AWS call.
    """
    if not is_postponed(options):
        return False
    flag = str(options["postpone_flag_file"]) if options.get("postpone_flag_file") else None
    at_value = options.get("cutover_at")
    at = float(at_value) if isinstance(at_value, int | float | str) and at_value else None
    events = journal.events(run_id)
    if any(e.kind == "note" and e.outcome == "released" and e.migration_id == mid for e in events):
        return False
    if flag and not os.path.exists(flag) and not any(e.outcome == "postponed" for e in events):
        with open(flag, "a"):
            pass  # gh-ost creates the flag file; the operator deletes it to cut over
    how = [f"xksmigrate proceed {run_id}"] + ([f"rm {flag}"] if flag else [])
    if at:
        how.append(time.strftime("wait until %Y-%m-%d %H:%M:%S", time.localtime(at)))
    if not any(e.outcome == "postponed" and e.migration_id == mid for e in events):
        journal.note(mid, "postponed", "cut-over postponed; release with: " + " or ".join(how))
        on_postponed()
    after = max((e.seq for e in events), default=0)
    while True:
        reason = _released(journal, run_id, flag, at)
        if reason:
            break
        if lock_lost():
            raise LockLostStop
        progress(after)
        time.sleep(1.0)  # real time: a cut-over is chosen on the wall clock, not the simulated one
    journal.note(mid, "released", f"cut-over released: {reason}")
    return True


def _released(journal: CutoverJournal, run_id: str, flag: str | None, at: float | None) -> str | None:
    if any(e.kind == "note" and e.outcome == "proceed" for e in journal.events(run_id)):
        return "xksmigrate proceed"
    if flag and not os.path.exists(flag):
        return f"{flag} removed"
    if at and time.time() >= at:
        return "cut-over time reached"
    return None
