"""Text for a terminal: names and messages that come from AWS (or a plan) are data, never terminal commands.

A key store name, an error message or a hook's output may hold control characters (an ESC starting a
terminal escape sequence, a carriage return that overwrites the line). Human output shows each as a
visible escape (`\\x1b`); NDJSON needs nothing of this, `json.dumps` escapes them anyway.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and the C1 controls (U+0080-U+009F: 8-bit CSI is U+009B).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """`text` with every control character but tab and newline shown as an escape."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def one_line(text: object) -> str:
    """`printable`, newlines shown as `\\n` too (a one-line message stays one line)."""
    return printable(text).replace("\n", "\\n")
