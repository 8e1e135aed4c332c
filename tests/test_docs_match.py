"""README.md and RUNBOOK.md say only what the tool does: the commands said to take `--json` take it, and every
file they point at exists (a file an example tells the reader to create is named in that example's block).

Fast and without a world: `--help` of each command and a read of the two documents.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "RUNBOOK.md")
JSON_CLAIM = re.compile(r"((?:`[a-z]+`(?:,\s*|\s+and\s+)?)+)\s+take\s+`--json`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
REPO_PATH = re.compile(r"(?<![\w$/.{-])((?:plans|migrator|docs|tests|bench)/[\w./-]+\.(?:toml|md|py|json|sh))\b")
FILE_OPTION = re.compile(r"--(?:faults|world)\s+([\w./-]+\.toml)")
WRITTEN = re.compile(r"--out\s+([\w./-]+\.toml)")  # a file a command on the same page writes (capture --out)


def _json_commands() -> list[str]:
    text = " ".join((REPO / "README.md").read_text().split())
    claims = JSON_CLAIM.findall(text)
    assert claims, "README.md no longer says which commands take --json"
    return [name for claim in claims for name in re.findall(r"`([a-z]+)`", claim)]


@pytest.mark.parametrize("command", _json_commands())
def test_every_command_readme_says_takes_json_does(command: str) -> None:
    done = subprocess.run([sys.executable, "-m", "migrator.cli", command, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--json" in done.stdout, f"README.md says `{command}` takes --json; its help does not list it"


def test_readme_does_not_claim_every_command_takes_json() -> None:
    text = " ".join((REPO / "README.md").read_text().split())
    assert "Every command takes `--json`" not in text


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)


@pytest.mark.parametrize("doc", DOCS)
def test_every_file_the_docs_point_at_exists(doc: str) -> None:
    text = (REPO / doc).read_text()
    named_in_blocks = {line.strip()[2:].strip() for block in _code_blocks(text) for line in block.splitlines()[:1]
                       if line.startswith("# ")}
    written = set(WRITTEN.findall(text))
    missing = []
    for target in LINK.findall(text):
        if "://" not in target and not (REPO / target).exists():
            missing.append(f"link {target}")
    for path in REPO_PATH.findall(text):
        if not (REPO / path).exists():
            missing.append(f"path {path}")
    for path in FILE_OPTION.findall(text):
        if not (REPO / path).exists() and path not in named_in_blocks and path not in written:
            missing.append(f"file {path} (neither in the repository, nor an example block headed `# {path}`, "
                           f"nor written by `--out {path}`)")
    assert not missing, f"{doc}: {sorted(set(missing))}"
