"""The postponed cut-over (gh-ost's `--postpone-cut-over-flag-file`): hold before the disconnect.

Released by `xksmigrate proceed RUN_ID` (an event in the journal, so from any machine that shares
it), by deleting the flag file, or at `cutover_at`. Survives a resume: the settings live in the
run's options, and the `postponed` / `released` notes in the journal say where the wait stands.

Deleting the flag file releases the cut-over only when a waiting runner sees it gone (and journals
`released`): a flag file that vanished while no runner watched (the tool was killed, /tmp was
cleaned) says nothing about the operator's intent, so a resume recreates it and waits again until
`proceed`, the flag's removal or the cut-over time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from migrator.engine.errors import Blocked, LockLostStop

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
                     lock_lost: Callable[[], bool], checkpoint: Callable[[], None] = lambda: None) -> bool:
    """Hold until released; True if the run waited (the caller then preflights again).

    `on_postponed` fires once (the `postponed` hook), `progress(after_seq)` once a second while
    waiting, and a lost lock stops the wait (LockLostStop) as it would stop an AWS call; `checkpoint` raises
    to end the wait (an operator's `xksmigrate abort`).
    """
    if not is_postponed(options):
        return False
    flag = str(options["postpone_flag_file"]) if options.get("postpone_flag_file") else None
    at_value = options.get("cutover_at")
    at = float(at_value) if isinstance(at_value, int | float | str) and at_value else None
    events = journal.events(run_id)
    if any(e.kind == "note" and e.outcome == "released" and e.migration_id == mid for e in events):
        return False
    seen_removed = any(e.kind == "note" and e.outcome == "released" for e in events)  # by a runner, any store
    if flag and not os.path.exists(flag) and not seen_removed:  # gh-ost creates the flag; deleting it cuts over
        _create_flag(flag)
        if any(e.outcome == "postponed" and e.migration_id == mid for e in events):
            journal.note(mid, "flag_recreated", f"{flag} was gone while no runner watched it; recreated: "
                                                "deleting it releases the cut-over only while a runner waits")
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
        checkpoint()
        progress(after)
        time.sleep(1.0)  # real time: a cut-over is chosen on the wall clock, not the simulated one
    journal.note(mid, "released", f"cut-over released: {reason}")
    return True


def _create_flag(flag: str) -> None:
    try:
        with open(flag, "a"):
            pass
    except OSError as exc:
        raise Blocked(f"cannot create the postpone flag file {flag}: {exc.strerror}; nothing was changed") from None


def _released(journal: CutoverJournal, run_id: str, flag: str | None, at: float | None) -> str | None:
    if any(e.kind == "note" and e.outcome == "proceed" for e in journal.events(run_id)):
        return "xksmigrate proceed"
    if flag and not os.path.exists(flag):
        return f"{flag} removed"
    if at and time.time() >= at:
        return "cut-over time reached"
    return None
