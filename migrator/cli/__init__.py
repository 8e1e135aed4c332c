"""The command line: `xksmigrate = migrator.cli:main`. Commands live in `commands.py`."""

from __future__ import annotations


def main() -> None:
    """Console-script entry point (imported lazily so `migrator.cli` itself costs nothing)."""
    from migrator.cli.commands import main as run

    run()
