"""`xksmigrate abort` and `xksmigrate extend` through the CLI, against the rehearsal world over HTTP (issue 11).

A runner is left in the connect wait (the world's connect never finishes until the test moves the world's
clock), and a second CLI process, as another operator on another machine would, writes the control into the
shared journal. The runner must act on it, and the record (summary, `status`) must say who asked and when.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import load_world
from test_budget_truth import LONG, SCALE, cli, connecting, last_json, plan_with_budget
from test_lock_cli import advance_world, cli_env, wait_until

pytestmark = pytest.mark.slow  # a rehearsed migration and several CLI processes per case


def start_runner(plan: Path, server: Any, journal_url: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "run.out"
    with out.open("wb") as fo:
        runner = subprocess.Popen([sys.executable, "-m", "migrator.cli", "run", str(plan), "--yes", "--json",
                                   "--endpoint-url", server.endpoint_url, "--time-scale", str(SCALE),
                                   "--state", journal_url], stdout=fo, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, cwd=tmp_path, env=cli_env())
    return runner, out


def finished(runner: subprocess.Popen[bytes]) -> int:
    try:
        return runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def connects(journal: Any, run_id: str) -> int:
    return sum(e.kind == "result" and e.operation == "ConnectCustomKeyStore" for e in journal.events(run_id))


def test_abort_during_the_connect_wait_rolls_back_with_the_abort_in_the_record(journal_url, journal, start_world,
                                                                              tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, connect=LONG))
    plan = plan_with_budget(tmp_path, "1h", server)  # plenty: only the abort can end the wait
    runner, out = start_runner(plan, server, journal_url, tmp_path)
    try:
        run_id = wait_until("the connect wait", connecting(journal), runner, timeout=90.0)
        asked = cli(["abort", run_id, "--reason", "proxy team found a bad certificate", "--json",
                     "--state", journal_url], tmp_path)
        assert asked.returncode == 0, asked.stdout + asked.stderr
        assert last_json(asked.stdout)["outcome"] == "abort"
        # The rollback connects the original configuration; the world's connect finishes once its clock moves.
        wait_until("the rollback's connect", lambda: connects(journal, run_id) >= 2, runner, timeout=90.0)
        advance_world(server, LONG)
        code = finished(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 4, out.read_text()[-2000:]
    summary = last_json(out.read_text())
    store = summary["keystores"][0]
    assert (summary["outcome"], store["outcome"]) == ("rolled_back", "rolled_back")
    assert store["error"].startswith("aborted by ") and "proxy team found a bad certificate" in store["error"]
    (control,) = summary["operator_controls"]
    assert control["kind"] == "abort" and control["by"] in store["error"]
    moved = next(e for e in journal.events(run_id) if e.kind == "transition" and e.to_state == "rolling_back")
    assert moved.from_state == "connecting" and moved.at >= control["at"]

    status = cli(["status", run_id, "--json", "--state", journal_url], tmp_path)
    assert status.returncode == 4, status.stdout + status.stderr
    assert last_json(status.stdout)["operator_controls"] == summary["operator_controls"]
    text = cli(["status", run_id, "--state", journal_url], tmp_path).stdout
    assert f"abort by {control['by']}" in text, text
    again = cli(["abort", run_id, "--state", journal_url], tmp_path)
    assert again.returncode == 2 and "already ended: rolled_back" in again.stderr, again.stderr


def test_extend_lets_a_run_that_would_have_rolled_back_complete(journal_url, journal, start_world, tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, connect=LONG))
    plan = plan_with_budget(tmp_path, "15m", server)  # 15 real seconds at SCALE
    runner, out = start_runner(plan, server, journal_url, tmp_path)
    try:
        run_id = wait_until("the connect wait", connecting(journal), runner, timeout=90.0)
        extended = cli(["extend", run_id, "--by", "30m", "--reason", "the connect is slow today", "--json",
                        "--state", journal_url], tmp_path)
        assert extended.returncode == 0, extended.stdout + extended.stderr
        assert last_json(extended.stdout)["budget_seconds"] == 2700.0
        disconnected_at = journal.get_run(run_id).migrations[0].disconnected_at
        while (time.time() - disconnected_at) * SCALE < 900 + 120:  # the plan's budget is past: still waiting
            assert runner.poll() is None, out.read_text()[-2000:]
            time.sleep(0.2)
        assert not [e for e in journal.events(run_id) if e.kind == "transition" and e.to_state == "rolling_back"]
        advance_world(server, LONG)  # now the connect finishes
        code = finished(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 0, out.read_text()[-2000:]
    summary = last_json(out.read_text())
    store = summary["keystores"][0]
    assert store["outcome"] == "completed" and store["budget_seconds"] == 2700.0
    assert 900 < store["window_seconds"] < 2700 and store["over_budget_seconds"] == 0
    (control,) = summary["operator_controls"]
    assert (control["kind"], control["by_seconds"]) == ("extend", 1800.0)
    assert control["reason"] == "the connect is slow today"

    status = cli(["status", run_id, "--json", "--state", journal_url], tmp_path)
    assert status.returncode == 0, status.stderr
    shown = last_json(status.stdout)
    assert shown["keystores"][0]["budget_seconds"] == 2700.0 and shown["operator_controls"] == [control]
    text = cli(["status", run_id, "--state", journal_url], tmp_path).stdout
    assert "budget extended by 30m00s by " in text and "of 45m00s budget" in text, text


def test_controls_refuse_bad_input_and_ended_runs_with_one_line(journal_url, journal, tmp_path):
    missing = cli(["extend", "run-nope", "--by", "10m", "--state", journal_url], tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    bad = cli(["extend", "run-nope", "--by", "ten minutes", "--state", journal_url], tmp_path)
    assert bad.returncode == 2 and "--by" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    zero = cli(["extend", "run-nope", "--by", "0s", "--state", journal_url], tmp_path)
    assert zero.returncode == 2 and "more than zero" in zero.stderr, zero.stderr


def test_a_hung_call_in_the_window_ends_with_the_budget_and_rolls_back(tmp_path):
    """ConnectCustomKeyStore answers only after 50 simulated minutes; the budget is 15: the call is given up at the
    budget's end (journaled `timeout`), and the store goes back, instead of waiting for the call."""
    from engine_helpers import REPO

    hung = tmp_path / "hung-connect.toml"
    hung.write_text('[[faults]]\noperation = "ConnectCustomKeyStore"\nlatency_seconds = 3000\ncount = 1\n')
    done = cli(["run", str(REPO / "plans" / "public-to-vpc.toml"), "--dry-run", "--yes", "--json",
                "--time-scale", str(SCALE), "--faults", str(hung), "--state", f"sqlite:///{tmp_path}/rehearsal.db"],
               tmp_path)
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    given_up = [e for e in lines if e.get("kind") == "result" and e.get("operation") == "ConnectCustomKeyStore"]
    assert given_up[0]["outcome"] == "timeout", given_up
    store = lines[-1]["keystores"][0]
    assert store["error"].startswith("downtime budget exhausted while ConnectCustomKeyStore had not answered")
    assert store["outcome"] == "rolled_back" and store["final"]["connectivity"] == "PUBLIC_ENDPOINT"
    assert "a slow call: ConnectCustomKeyStore took" in store["over_budget_reason"]
