"""Writing a run's (or a fleet's) report: the change record (JSON), the timeline (SVG, PNG), the page (HTML), Markdown.

Files are named after the run or the fleet (`RUN_ID.json`, `RUN_ID.html`, `RUN_ID.md`, `RUN_ID-timeline.svg`,
`RUN_ID-timeline.png`) and each is written whole (a temporary file renamed into place), so a report being
rewritten is never seen half done. The timeline is drawn for every format but JSON alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.report import record as change_record

if TYPE_CHECKING:
    from migrator.journal.repository import Journal

FORMATS = ("html", "json", "md")


def names(run_id: str) -> dict[str, str]:
    """The file name of each part of RUN_ID's report."""
    return {"json": f"{run_id}.json", "html": f"{run_id}.html", "md": f"{run_id}.md",
            "svg": f"{run_id}-timeline.svg", "png": f"{run_id}-timeline.png"}


def write_report(journal: Journal, run_id: str, out_dir: Path, formats: Sequence[str] = FORMATS, *,
                 runner_gone: bool = False, exit_code: int | None = None) -> list[Path]:
    """Write RUN_ID's report in `formats` under `out_dir` (which must exist); the paths written, in order."""
    record = change_record.build(journal, run_id, runner_gone=runner_gone, exit_code=exit_code)
    return write_record(record, out_dir, formats)


def write_record(record: dict[str, Any], out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """A run's change record (record.py) in `formats` under `out_dir`."""
    from migrator.report import html, markdown, timeline

    return _write_all(record, str(record["run"]["id"]), out_dir, formats,
                      (timeline.render, html.page, markdown.document))


def write_fleet_record(record: dict[str, Any], out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """A fleet's change record (fleet_record.py) in `formats` under `out_dir`, named after the fleet."""
    from migrator.report import fleet_page, fleet_timeline

    return _write_all(record, str(record["fleet"]["id"]), out_dir, formats,
                      (fleet_timeline.render, fleet_page.page, fleet_page.document))


Renderers = tuple[Callable[[dict[str, Any]], tuple[bytes, bytes]], Callable[[dict[str, Any], bytes], str],
                  Callable[[dict[str, Any], str], str]]


def _write_all(record: dict[str, Any], name: str, out_dir: Path, formats: Sequence[str],
               renderers: Renderers) -> list[Path]:
    file = names(name)
    written: list[Path] = []
    if "json" in formats:
        written.append(_write(out_dir / file["json"], (json.dumps(record, indent=2, default=str) + "\n").encode()))
    if not {"html", "md"} & set(formats):
        return written
    draw, page, document = renderers
    svg, png = draw(record)
    written += [_write(out_dir / file["svg"], svg), _write(out_dir / file["png"], png)]
    if "html" in formats:
        written.append(_write(out_dir / file["html"], page(record, svg).encode()))
    if "md" in formats:
        written.append(_write(out_dir / file["md"], document(record, file["png"]).encode()))
    return written


def _write(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # a file to attach and share, as a file made under the usual umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
