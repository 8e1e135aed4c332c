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
    assert "READY" in done.stdout and "NOT READY" not in done.stdout


def test_remedies_are_shown_verbatim_not_eaten_as_markup(tmp_path):
    plan = tmp_path / "short.toml"
    plan.write_text((REPO / "plans" / "public-to-vpc.toml").read_text().replace('max_disconnected = "15m"',
                                                                               'max_disconnected = "1m"'))
    done = _plan(str(plan), "--dry-run", "--world", str(REPO / "plans" / "worlds" / "public-to-vpc.toml"), "--state",
                 f"sqlite:///{tmp_path}/r.db", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "set [plan] max_disconnected to at least" in " ".join(done.stdout.split())  # the budget floor's remedy
    assert "BLOCKED" in done.stdout


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


@pytest.mark.parametrize(("args", "env", "said"), [
    (["--resolve", "myproxy-private.xks.example.com"], {}, "--resolve: 'myproxy-private.xks.example.com' is not "
                                                           "HOST=IP:PORT"),
    (["--resolve", "myproxy-private.xks.example.com=127.0.0.1:99999"], {}, "port 1-65535"),
    ([], {"XKSMIGRATE_RESOLVE": "myproxy-private.xks.example.com=nowhere"}, "XKSMIGRATE_RESOLVE: 'nowhere'"),
    (["--accept-unverified", "not a check"], {}, "--accept-unverified: 'not a check' is not a check id"),
])
def test_a_bad_vantage_point_or_acceptance_is_one_line_and_exit_2(args, env, said, tmp_path):
    done = subprocess.run([sys.executable, "-m", "migrator.cli", "plan", str(REPO / "plans" / "public-to-vpc.toml"),
                           "--dry-run", "--state", f"sqlite:///{tmp_path}/r.db", *args], cwd=tmp_path,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))},
                               **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_rehearsal_endpoint_on_another_clock_is_one_warning_line(tmp_path):
    """Issue 11: the world runs at time scale 60; a run that says 30 (or nothing) is told so, once."""
    import tomllib

    from engine_helpers import roomy_plan_file

    from migrator.rehearsal.server import RehearsalServer
    from migrator.rehearsal.world import model

    text = (REPO / "plans" / "worlds" / "public-to-vpc.toml").read_text()
    data = tomllib.loads(text.replace("acceptance_required = false", "acceptance_required = true"))  # blocks
    data.setdefault("world", {})["time_scale"] = 60.0
    server = RehearsalServer(model.world_from_dict(data, "w.toml")).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
        env.update(AWS_ACCESS_KEY_ID="AKIAREHEARSAL0000000", AWS_SECRET_ACCESS_KEY="rehearsal")
        for scale, told in ((["--time-scale", "30"], "this run has --time-scale 30"),
                            ([], "this run has no --time-scale")):
            done = subprocess.run([sys.executable, "-m", "migrator.cli", "run", str(roomy_plan_file(tmp_path)),
                                   "--yes", "--endpoint-url", server.endpoint_url, "--state",
                                   f"sqlite:///{tmp_path}/j.db", *scale], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 3, done.stdout + done.stderr  # blocked before anything changed
            warnings = [line for line in done.stderr.splitlines() if "time scale 60" in line]
            assert len(warnings) == 1 and told in warnings[0] and "--time-scale 60" in warnings[0], done.stderr
        same = subprocess.run([sys.executable, "-m", "migrator.cli", "run", str(roomy_plan_file(tmp_path)), "--yes",
                               "--endpoint-url", server.endpoint_url, "--state", f"sqlite:///{tmp_path}/j.db",
                               "--time-scale", "60"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert same.returncode == 3 and "time scale" not in same.stderr, same.stderr
    finally:
        server.stop()
