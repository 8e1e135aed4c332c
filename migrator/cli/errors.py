"""How the command line says no: a one-line `CliError` with its exit code (2: usage), and one-line warnings.

A leaf of cli/ (it imports only cli/text.py), so every CLI module can raise them without import cycles.
"""

from __future__ import annotations

import sys

from migrator.cli.text import one_line


class CliError(Exception):
    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> CliError:
    return CliError(message, code)


def warn(message: str) -> None:
    print(f"xksmigrate: warning: {one_line(message)}", file=sys.stderr)
