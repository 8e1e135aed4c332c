"""`xksmigrate runbook [SECTION]` prints the runbook shipped inside the package, whole or one section."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from migrator.cli.errors import CliError
from migrator.cli.runbook_text import anchor_of, runbook_section, runbook_text, sections

REPO = Path(__file__).resolve().parents[1]


def xksmigrate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XKSMIGRATE_")}
    return subprocess.run([sys.executable, "-m", "migrator.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd="/")


def test_the_packaged_runbook_is_the_repository_runbook() -> None:
    assert runbook_text() == (REPO / "RUNBOOK.md").read_text(encoding="utf-8")


def test_anchors_follow_github() -> None:
    assert anchor_of("Lock held") == "lock-held"
    assert anchor_of("Before the change: prerequisites") == "before-the-change-prerequisites"
    assert anchor_of("Where a run can stop, and how to get out by hand") == \
        "where-a-run-can-stop-and-how-to-get-out-by-hand"


def test_a_section_ends_at_the_next_heading_of_its_level_and_code_comments_are_not_headings() -> None:
    text = "# T\n## A\nline\n```sh\n# a shell comment\n```\n### A.1\nmore\n## B\nlast\n"
    assert [s.anchor for s in sections(text.splitlines())] == ["t", "a", "a1", "b"]
    assert runbook_section("a", text) == "## A\nline\n```sh\n# a shell comment\n```\n### A.1\nmore\n"
    assert runbook_section("#b", text) == "## B\nlast\n"


def test_an_unknown_or_ambiguous_section_is_a_usage_error_naming_the_sections() -> None:
    text = "# T\n## Stuck\nx\n## Stop here\ny\n"
    with pytest.raises(CliError) as unknown:
        runbook_section("nowhere", text)
    assert unknown.value.code == 2 and "sections: stuck, stop-here" in str(unknown.value)
    with pytest.raises(CliError, match="matches several sections"):
        runbook_section("st", text)


def test_every_section_the_tool_points_at_exists() -> None:
    """The stuck help (engine) names a section: it must be printable."""
    from migrator.engine.runbook import stuck_help

    named = str(stuck_help("us-east-1", "cks-1", None, None)["runbook"])
    assert named == "xksmigrate runbook stuck"
    assert runbook_section(named.rsplit(" ", 1)[1]).startswith("## Stuck\n")


def test_runbook_command_prints_a_section_and_refuses_an_unknown_one_in_one_line() -> None:
    shown = xksmigrate("runbook", "lock-held")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("### Lock held\n") and "xksmigrate unlock" in shown.stdout
    whole = xksmigrate("runbook")
    assert whole.returncode == 0 and whole.stdout.startswith("# xksmigrate runbook")
    bad = xksmigrate("runbook", "no-such-section")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_the_wheel_ships_the_runbook(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("xksmigrate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("migrator/data/RUNBOOK.md")
    assert shipped == (REPO / "RUNBOOK.md").read_bytes()
