"""The command line's shape: `--help` stays light, and NDJSON has one version header written in one place.

Fast and without a world: one `python -X importtime -m migrator.cli --help` and a grep of the source.

Check by hand with:  pytest -n 0 -p no:cacheprovider tests/test_cli_layout.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("boto3", "botocore", "sqlalchemy", "dbos", "migrator.engine", "migrator.preflight", "migrator.rehearsal")
VERSION_LINE = re.compile(r"""["']type["']\s*:\s*["']version["']""")


def _heavy(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HEAVY)


def test_help_exits_0_and_imports_nothing_heavy() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "migrator.cli", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage: xksmigrate" in proc.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "typer" in imported, proc.stderr[-500:]
    assert sorted(m for m in imported if _heavy(m)) == []


def test_one_place_writes_the_ndjson_version_line() -> None:
    """`cli.output.write_version`: plan, status, history and the engine renderers all call it."""
    places = [f"{path.relative_to(REPO).as_posix()}:{n}: {line.strip()}"
              for path in sorted((REPO / "migrator").rglob("*.py"))
              for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if VERSION_LINE.search(line)]
    assert len(places) == 1 and places[0].startswith("migrator/cli/output.py:"), places


def test_shell_completion_completes_commands_and_options() -> None:
    """`--install-completion` / `--show-completion` are offered; the completion protocol answers from the app."""
    import os

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_XKSMIGRATE_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        done = subprocess.run([sys.executable, "-c", "from migrator.cli import main; main()"], env=env,
                              capture_output=True, text=True, timeout=60)
        return done.stdout.split()

    assert {"run", "runbook"} <= set(complete("xksmigrate ru"))
    assert complete("xksmigrate run --dr") == ["--dry-run"]
    help_text = subprocess.run([sys.executable, "-m", "migrator.cli", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text
