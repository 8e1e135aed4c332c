"""`xksmigrate runbook [SECTION]`: RUNBOOK.md as shipped inside the package, whole or one section.

The runbook is where the tool points an operator when a run stops ("see `xksmigrate runbook stuck`"), so it
must be readable where the tool is installed, not only in a source checkout. A section is named by its
heading's anchor, as GitHub links it (`## Lock held` is `lock-held`); a shorter unique prefix is enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from migrator.cli.errors import CliError

_HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class Section:
    anchor: str
    level: int
    start: int  # index of the heading line
    end: int  # index after the last line of the section (before the next heading of the same or higher level)


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_text() -> str:
    return (resources.files("migrator") / "data" / "RUNBOOK.md").read_text(encoding="utf-8")


def sections(lines: list[str]) -> list[Section]:
    """Every markdown heading outside code fences (the runbook's shell blocks are full of `# comments`)."""
    found: list[tuple[str, int, int]] = []
    fenced = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            found.append((anchor_of(match.group(2)), len(match.group(1)), index))
    result = []
    for i, (anchor, level, start) in enumerate(found):
        end = next((s for _a, lv, s in found[i + 1:] if lv <= level), len(lines))
        result.append(Section(anchor, level, start, end))
    return result


def runbook_section(name: str | None, text: str | None = None) -> str:
    """The whole runbook, or the section `name` names (CliError, exit 2, listing the sections otherwise)."""
    text = runbook_text() if text is None else text
    if not name:
        return text
    lines = text.splitlines()
    known = [s for s in sections(lines) if s.level >= 2]
    wanted = anchor_of(name.removeprefix("#"))
    chosen = [s for s in known if s.anchor == wanted] or [s for s in known if s.anchor.startswith(wanted)]
    if len(chosen) != 1:
        names = ", ".join(dict.fromkeys(s.anchor for s in known))
        why = "matches several sections" if chosen else "is not a section of the runbook"
        raise CliError(f"runbook: {name!r} {why}; sections: {names}", 2)
    section = chosen[0]
    return "\n".join(lines[section.start:section.end]).rstrip() + "\n"
