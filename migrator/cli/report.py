"""`xksmigrate report RUN_ID` and `--report DIR`: a run's change record, written from the journal (migrator/report/).

`report` opens the journal read-only, as `status` does (an auditor's copy works), and tells a run whose runner
is gone the way `status` does. `run`, `resume` and `rollback` with `--report DIR` check DIR before anything
else (exit 2, nothing called) and write the report once the run has ended; a report that cannot be written
then is a warning, never another exit code for the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.cli import environment as support
from migrator.cli.errors import CliError, warn
from migrator.cli.text import printable

if TYPE_CHECKING:
    from migrator.journal.repository import Journal, RunView

FORMATS = ("html", "json", "md")  # migrator.report.files.FORMATS, without importing the report package here


def parse_formats(text: str) -> tuple[str, ...]:
    """`html,json,md` (any of them, in any order) -> the formats, each once; anything else is exit 2."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise support.fail(f"--format: {text!r}: give one or more of {', '.join(FORMATS)}, separated by commas")
    return tuple(dict.fromkeys(names))


def out_dir(path: str, option: str = "--out") -> Path:
    """The directory a report goes to, created if missing; one that cannot be written is exit 2."""
    folder = Path(path).expanduser().absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".xksmigrate-report-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise support.fail(f"{option} {path}: cannot write a report there: {exc.strerror or exc}") from None
    return folder


def report(state: str | None, run_id: str, *, out: str, formats: str) -> int:
    """`report`: write RUN_ID's report under OUT; the paths written, one a line."""
    from migrator.cli import views
    from migrator.report.files import write_report

    chosen = parse_formats(formats)
    journal, run = _find(state, run_id)
    folder = out_dir(out)
    warning = views._liveness(journal, run)  # as `status` tells a runner that is gone
    try:
        written = write_report(journal, run.id, folder, chosen, runner_gone=warning is not None,
                               exit_code=views._exit_code(run, warning))
    except OSError as exc:
        raise support.fail(f"--out {out}: cannot write the report: {exc.strerror or exc}") from None
    for path in written:
        sys.stdout.write(printable(str(path)) + "\n")
    if warning:
        warn(warning)
    return 0


def _find(state: str | None, run_id: str) -> tuple[Journal, RunView]:
    """RUN_ID in the journal (read-only); with neither --state nor XKSMIGRATE_STATE, a rehearsal's run is also
    looked for in the rehearsal journal (`rehearsal.db`), where `run --dry-run` records it."""
    from migrator.dryrun import REHEARSAL_JOURNAL_NAME

    try:
        journal = support.open_journal(state, read_only=True)
        return journal, support.find_run(journal, run_id)
    except CliError as first:
        if state is not None or os.environ.get("XKSMIGRATE_STATE"):
            raise
        url = os.environ.get("XKSMIGRATE_REHEARSAL_STATE") or support.default_journal_url(REHEARSAL_JOURNAL_NAME)
        try:
            journal = support.open_journal(url, rehearsal=True, read_only=True)
            return journal, support.find_run(journal, run_id)
        except CliError:
            raise first from None


def after_run(journal: Journal, run_id: str, folder: Path) -> None:
    """`--report DIR` once the run ended: write its report, or say why not (the run's exit code stands)."""
    from migrator.report.files import write_report

    try:
        written = write_report(journal, run_id, folder)
    except (Exception, KeyboardInterrupt) as exc:  # the run is over; its report is a courtesy
        warn(f"--report {folder}: the report of {run_id} was not written ({type(exc).__name__}: {exc}); "
             f"write it with: xksmigrate report {run_id} --out {folder}")
        return
    told_written(run_id, written, folder)


def told_written(name: str, written: list[Path], folder: Path) -> None:
    """The one line `--report DIR` says once the report of NAME (a run, a fleet) is written."""
    html = next((p for p in written if p.suffix == ".html"), written[0] if written else folder)
    print(f"xksmigrate: report of {name}: {printable(html)} (and {len(written) - 1} more file(s) beside it)",
          file=sys.stderr)
