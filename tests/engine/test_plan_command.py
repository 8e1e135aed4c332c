"""`xksmigrate plan` through the real entry point (issue 4): ready on the example worlds, blocked on a bad one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import REPO

pytestmark = pytest.mark.slow  # CLI processes or whole rehearsed migrations per case: the full tier


def _plan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "migrator.cli", "plan", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["public-to-vpc", "vpc-to-public"])
def test_plan_on_the_example_worlds_is_ready_and_shows_both_sequences(name, tmp_path):
    done = _plan(str(REPO / "plans" / f"{name}.toml"), "--dry-run", "--world",
                 str(REPO / "plans" / "worlds" / f"{name}.toml"), "--state", f"sqlite:///{tmp_path}/r.db", "--json",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["type"] == "version" and lines[-1]["type"] == "summary"
    findings = [line for line in lines if line["type"] == "finding"]
    assert findings and all({"check", "status", "message", "remedy"} <= set(f) for f in findings)
    assert not [f for f in findings if f["status"] == "block"]
    store = lines[-1]["keystores"][0]
    assert lines[-1]["ready"] is True
    assert [c.split()[2] for c in store["calls"][:4]] == ["disconnect-custom-key-store",
                                                         "describe-custom-key-stores", "update-custom-key-store",
                                                         "connect-custom-key-store"]
    assert any("update-custom-key-store" in c and "--xks-proxy-connectivity" in c for c in store["rollback"])
    # Read-only: nothing was recorded as a run.
    from migrator.journal.repository import Journal

    with Journal.open(f"sqlite:///{tmp_path}/r.db") as journal:
        assert journal.list_runs() == []


def test_plan_reads_well_for_a_person(tmp_path):
    done = _plan(str(REPO / "plans" / "public-to-vpc.toml"), "--dry-run", "--world",
                 str(REPO / "plans" / "worlds" / "public-to-vpc.toml"), "--state", f"sqlite:///{tmp_path}/r.db",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "The run will call, in order:" in done.stdout and "the rollback calls:" in done.stdout
    assert "READY" in done.stdout
    assert "[keystores.original_credential]" in done.stdout  # remedies are shown verbatim, not eaten as markup


def test_plan_on_a_misconfigured_world_exits_3_naming_the_check(tmp_path):
    world = (REPO / "plans" / "worlds" / "public-to-vpc.toml").read_text()
    bad = tmp_path / "acceptance.toml"
    bad.write_text(world.replace("acceptance_required = false", "acceptance_required = true"))
    done = _plan(str(REPO / "plans" / "public-to-vpc.toml"), "--dry-run", "--world", str(bad), "--state",
                 f"sqlite:///{tmp_path}/r.db", "--json", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    blocks = [json.loads(line) for line in done.stdout.splitlines()]
    assert [b["check"] for b in blocks if b.get("status") == "block"] == ["vpc.acceptance_required"]
    assert blocks[-1]["ready"] is False
