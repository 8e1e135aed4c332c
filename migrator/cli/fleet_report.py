"""`xksmigrate fleet report [FLEET_ID]` (also `report FLEET_ID`) and `--report DIR` of `fleet run`/`fleet resume`.

The fleet's change record (migrator/report/fleet_record.py): the fleet's summary from its DBOS record (what
`fleet status` shows), each store's row from its own journal run `FLEET_ID.STORE`, read as `report RUN_ID`
reads it. The journal is opened read-only; a rehearsal's fleet is found in the rehearsal journal.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.cli import environment as support
from migrator.cli.errors import CliError, warn
from migrator.cli.report import out_dir, parse_formats, told_written
from migrator.cli.text import printable

if TYPE_CHECKING:
    from migrator.cli.fleet_state import FleetView
    from migrator.journal.repository import Journal

FLEET_ID = re.compile(r"fleet-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")  # fleet/stores.py new_fleet_id


def is_fleet_id(text: str) -> bool:
    return FLEET_ID.fullmatch(text) is not None


def fleet_report(fleet_id: str | None, *, state: str | None, dry_run: bool, out: str, formats: str) -> int:
    """`fleet report`: write the fleet's report under OUT; the paths written, one a line."""
    from migrator.report.files import write_fleet_record

    chosen = parse_formats(formats)
    journal, view = _find(state, dry_run, fleet_id)
    try:
        record = build(journal, fleet_id, view)
    finally:
        journal.close()
    folder = out_dir(out)
    try:
        written = write_fleet_record(record, folder, chosen)
    except OSError as exc:
        raise support.fail(f"--out {out}: cannot write the report: {exc.strerror or exc}") from None
    for path in written:
        sys.stdout.write(printable(str(path)) + "\n")
    if not record["fleet"]["finished"]:
        warn(f"fleet {record['fleet']['id']} has not ended: this record has no close code yet; write it again "
             "once it has")
    return 0


def build(journal: Journal, fleet_id: str | None, view: FleetView | None = None) -> dict[str, Any]:
    """The fleet's change record, from its DBOS record (`view`, when it was already read) and its stores'
    journal runs."""
    from migrator.cli.fleet_state import fleet_view
    from migrator.journal.models import JournalError
    from migrator.report import fleet_record
    from migrator.report import record as change_record

    summary, finished, request = view or fleet_view(journal, fleet_id)
    runs: dict[str, dict[str, Any]] = {}
    now = time.time()
    for store in summary.get("keystores") or []:
        run_id = store.get("run_id")
        if run_id:
            try:
                runs[str(run_id)] = change_record.build(journal, str(run_id), now=now)
            except JournalError:
                continue  # the fleet names a run this journal lacks (a copy of another journal): its row says so
    return fleet_record.from_parts(summary, request.to_dict(), runs, now=now, finished=finished,
                                   executor_id=summary.get("executor_id"))


def _find(state: str | None, dry_run: bool, fleet_id: str | None) -> tuple[Journal, FleetView | None]:
    """The journal whose DBOS state holds the fleet: --state, or the rehearsal journal with --dry-run; with
    neither (and no XKSMIGRATE_STATE), a fleet id not in the journal is also looked for in the rehearsal's
    (and the fleet's view read then is handed on, not read again)."""
    import os

    from migrator.cli.fleet_state import fleet_view, state_journal

    if dry_run or state is not None or os.environ.get("XKSMIGRATE_STATE") or fleet_id is None:
        return state_journal(state, dry_run), None
    for rehearsal in (False, True):
        try:
            journal = state_journal(None, rehearsal)
        except CliError:
            if rehearsal:
                raise
            continue
        try:
            return journal, fleet_view(journal, fleet_id)
        except CliError:
            journal.close()
            if rehearsal:
                raise
    raise AssertionError("unreachable")


def after_fleet(journal: Journal, fleet_id: str, folder: Path) -> None:
    """`--report DIR` once the fleet ended: write its report, or say why not (the fleet's exit code stands)."""
    from migrator.report.files import write_fleet_record

    try:
        written = write_fleet_record(build(journal, fleet_id), folder)
    except (Exception, KeyboardInterrupt) as exc:  # the fleet is over; its report is a courtesy
        warn(f"--report {folder}: the report of {fleet_id} was not written ({type(exc).__name__}: {exc}); "
             f"write it with: xksmigrate fleet report {fleet_id} --out {folder}")
        return
    told_written(fleet_id, written, folder)
