"""Budget truth (issue 11): the budget, the window and any overrun with its reason, the same everywhere.

The fast tests drive the one computation (engine/budget.py) with journal events made by hand. The slow
ones go through the CLI against the rehearsal world: Ctrl-C in the connect wait, a resume after the
budget has passed, and the run's summary, `status`, `history` (text and JSON) all tell the same overrun
with the same reason; a run within its budget says 0; `status` exits with the run's exit code, 124 on
--timeout, and its JSON summary is `run`'s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import default_sigint
from engine_helpers import REPO, load_world, roomy_plan_file
from test_lock_cli import advance_world, cli_env, wait_until

from migrator.engine.budget import BudgetFacts, budget_of, duration, measure
from migrator.engine.results import RunResult, StoreResult, over_budget_line
from migrator.journal.models import EventView

STORE = "cks-1234567890abcdef0"
T0 = 1_700_000_000.0  # the disconnect, a real instant


def ev(seq: int, at: float, kind: str, *, mid: int | None = 1, to_state: str | None = None,
       operation: str | None = None, outcome: str | None = None, **detail: Any) -> EventView:
    return EventView(seq, at, "run-x", mid, kind, None, to_state, operation, None, outcome, detail)


def facts(events: list[EventView], *, end: float | None, budget: float = 900.0, scale: float = 1.0,
          now: float | None = None, gone: bool = False) -> BudgetFacts:
    return measure(events, mid=1, disconnected_at=T0, verified_at=end, window_seconds=None, budget=budget,
                   scale=scale, now=now if now is not None else (end or T0), runner_gone=gone)


# -- the pure computation ------------------------------------------------------------------------------
def test_within_the_budget_there_is_no_overrun_and_no_reason():
    got = facts([ev(1, T0, "transition", to_state="disconnecting")], end=T0 + 600)
    assert got == BudgetFacts(900.0, 600.0, 0.0, None)
    assert over_budget_line(got, simulated=False) is None


def test_never_disconnected_has_no_window_but_keeps_the_budget():
    got = measure([], mid=1, disconnected_at=None, verified_at=None, window_seconds=None, budget=900.0,
                  scale=1.0, now=T0)
    assert got.to_dict() == {"budget_seconds": 900.0, "window_seconds": None, "over_budget_seconds": 0.0,
                             "over_budget_reason": None}


def test_a_gap_with_no_runner_is_named_with_its_instants_and_simulated_length():
    events = [ev(1, T0, "transition", to_state="disconnecting"),
              ev(2, T0 + 5, "transition", to_state="connecting"),
              ev(3, T0 + 6, "note", mid=None, outcome="interrupted", message="interrupted; ..."),
              ev(4, T0 + 26, "note", mid=None, message="resumed"),
              ev(5, T0 + 27, "transition", to_state="completed")]
    got = facts(events, end=T0 + 27, budget=900.0, scale=60.0)
    assert got.window_seconds == 27 * 60 and got.over_budget_seconds == 27 * 60 - 900
    assert got.over_budget_reason is not None and got.over_budget_reason.startswith("runner down from ")
    assert "(20m00s simulated)" in got.over_budget_reason  # 20 real seconds at scale 60
    assert over_budget_line(got, simulated=True) == (f"over budget by 12m00s simulated (budget 15m00s): "
                                                     f"{got.over_budget_reason}")


def test_a_killed_runner_gap_starts_at_its_last_record():
    events = [ev(1, T0, "transition", to_state="disconnecting"),
              ev(2, T0 + 100, "note", connection_state="CONNECTING"),  # then SIGKILL: no interrupted note
              ev(3, T0 + 2000, "note", mid=None, message="resumed"),
              ev(4, T0 + 2010, "transition", to_state="completed")]
    got = facts(events, end=T0 + 2010)
    assert got.over_budget_seconds == 2010 - 900
    assert "runner down from" in (got.over_budget_reason or "") and "(31m40s)" in (got.over_budget_reason or "")


def test_a_slow_call_is_named_with_how_long_it_took():
    events = [ev(1, T0, "transition", to_state="disconnecting"),
              ev(2, T0 + 10, "call", operation="ConnectCustomKeyStore", outcome="started"),
              ev(3, T0 + 950, "result", operation="ConnectCustomKeyStore", outcome="ok"),
              ev(4, T0 + 960, "transition", to_state="completed")]
    got = facts(events, end=T0 + 960)
    assert got.over_budget_reason == "a slow call: ConnectCustomKeyStore took 15m40s"


def test_a_budget_rollback_that_took_time_is_the_reason_and_combines_with_a_gap():
    events = [ev(1, T0, "transition", to_state="disconnecting"),
              ev(2, T0 + 900, "transition", to_state="rolling_back", reason="downtime budget exhausted"),
              ev(3, T0 + 901, "note", mid=None, outcome="interrupted"),
              ev(4, T0 + 1000, "note", mid=None, message="resumed"),
              ev(5, T0 + 1200, "transition", to_state="rolled_back")]
    reason = facts(events, end=T0 + 1200).over_budget_reason or ""
    assert reason.startswith("runner down from") and reason.endswith("; the rollback took 5m00s")


def test_otherwise_the_state_in_which_the_budget_ran_out():
    events = [ev(1, T0, "transition", to_state="disconnecting"),
              ev(2, T0 + 100, "transition", to_state="connecting"),
              ev(3, T0 + 1000, "transition", to_state="completed")]
    assert facts(events, end=T0 + 1000).over_budget_reason == "the budget ran out while connecting"


def test_a_run_nobody_drives_counts_the_gap_up_to_now():
    events = [ev(1, T0, "transition", to_state="disconnecting"), ev(2, T0 + 100, "note", connection_state="X")]
    got = facts(events, end=None, now=T0 + 1000, gone=True)
    assert got.window_seconds == 1000 and "runner down from" in (got.over_budget_reason or "")


def test_the_latest_journaled_budget_wins_over_the_plans():
    events = [ev(1, T0, "transition", budget_seconds=900), ev(2, T0 + 1, "note", mid=None, budget_seconds=1500)]
    assert budget_of(events, 1, 60.0) == 1500.0
    assert budget_of([ev(1, T0, "transition", mid=2, budget_seconds=900)], 1, 60.0) == 60.0


def test_the_summary_carries_the_facts_per_store_and_for_the_run():
    over = BudgetFacts(900.0, 1000.0, 100.0, "runner down from a to b (1m40s)")
    stores = [StoreResult("a", "cks-a", "completed", "completed", None, None, 1000.0, {}, None, budget=over),
              StoreResult("b", "cks-b", "blocked", "blocked", None, None, None, {}, None,
                          budget=BudgetFacts(900.0, None))]
    summary = RunResult("run-x", "partial", 5, stores).summary()
    assert (summary["budget_seconds"], summary["window_seconds"], summary["over_budget_seconds"]) == (900, 1000, 100)
    assert summary["over_budget_reason"] == "cks-a: runner down from a to b (1m40s)"
    first, second = summary["keystores"]
    assert (first["over_budget_seconds"], first["disconnected_seconds"]) == (100, 1000)
    assert second["over_budget_seconds"] == 0


def test_durations_read_like_the_rest_of_the_tool():
    assert [duration(12.5), duration(301), duration(3723), duration(60, simulated=True)] == [
        "12.5s", "5m01s", "1h02m03s", "1m00s simulated"]


def test_the_live_timer_keeps_ticking_between_reports_and_learns_the_scale():
    from migrator.cli.window_timer import WindowTimer

    now = [100.0]
    timer = WindowTimer(clock=lambda: now[0])
    assert timer.window() is None
    timer.report(None, "connecting")  # not disconnected yet
    timer.report(60.0)
    now[0] += 1.0
    assert timer.window() == 60.0  # the scale is not known yet: the last report
    timer.report(120.0)  # 60 simulated seconds per real second
    now[0] += 9.0  # a slow call: nothing reported for 9 real seconds
    assert timer.window() == pytest.approx(120.0 + 9 * 60)
    timer.report(700.0, "completed")
    now[0] += 5.0
    assert timer.window() == 700.0  # the window ended: what the engine said last


# -- through the CLI ------------------------------------------------------------------------------------
SCALE = 60.0
LONG = 100_000.0
BUDGET = 900.0  # 15 simulated minutes (above the floor): 15 real seconds at SCALE
DATA = Path(__file__).parent / "data"
BAD_WORLD = DATA / "service-without-kms-principal.toml"


def cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migrator.cli", *args], cwd=tmp_path, env=cli_env(), text=True,
                          capture_output=True, timeout=180, stdin=subprocess.DEVNULL)


def last_json(text: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and lines[0]["type"] == "version" and lines[-1]["type"] == "summary", text[-500:]
    return lines[-1]


def plan_with_budget(tmp_path: Path, budget: str, server: Any) -> Path:
    """The example plan with `budget`, trusting the world's CA (its proxies' certificates chain to it)."""
    path = tmp_path / "plan.toml"
    text = (REPO / "plans" / "public-to-vpc.toml").read_text()
    text = text.replace('max_disconnected = "15m"', f'max_disconnected = "{budget}"')
    path.write_text(text.replace("[plan]\n", f'[plan]\nextra_trusted_roots = ["{server.ca_bundle_path}"]\n', 1))
    return path


def connecting(journal: Any) -> Any:
    """The run id once the runner has sent ConnectCustomKeyStore (it is in the connect wait)."""
    def check() -> Any:
        runs = journal.list_runs(limit=1)
        if runs and [e for e in journal.events(runs[0].id) if e.kind == "result"
                     and e.operation == "ConnectCustomKeyStore"]:
            return runs[0].id
        return None
    return check


BUDGET_KEYS = ("budget_seconds", "window_seconds", "over_budget_seconds", "over_budget_reason")


@pytest.mark.slow
def test_ctrl_c_in_the_connect_wait_and_a_late_resume_show_the_overrun_everywhere(journal_url, journal, start_world,
                                                                                 tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, connect=LONG))
    plan = plan_with_budget(tmp_path, "15m", server)
    out = tmp_path / "run.out"
    with out.open("wb") as fo:
        runner = subprocess.Popen([sys.executable, "-m", "migrator.cli", "run", str(plan), "--yes", "--json",
                                   "--endpoint-url", server.endpoint_url, "--time-scale", str(SCALE),
                                   "--state", journal_url], stdout=fo, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, cwd=tmp_path, env=cli_env(),
                                  preexec_fn=default_sigint)
    try:
        run_id = wait_until("the connect wait", connecting(journal), runner, timeout=90.0)
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=60) == 130
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    interrupted = cli(["status", run_id, "--state", journal_url], tmp_path)
    assert interrupted.returncode == 130, interrupted.stdout + interrupted.stderr
    advance_world(server, LONG)  # the connect finishes while nobody watches
    disconnected_at = journal.get_run(run_id).migrations[0].disconnected_at
    while (time.time() - disconnected_at) * SCALE < BUDGET + 120:  # the budget passes with no runner
        time.sleep(0.2)

    resumed = cli(["resume", run_id, "--yes", "--json", "--state", journal_url], tmp_path)

    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    summary = last_json(resumed.stdout)
    store = summary["keystores"][0]
    assert summary["outcome"] == "completed" and store["budget_seconds"] == BUDGET
    assert store["over_budget_seconds"] > 0 and store["window_seconds"] > BUDGET
    assert store["over_budget_seconds"] == pytest.approx(store["window_seconds"] - BUDGET, abs=0.01)
    assert store["over_budget_reason"].startswith("runner down from "), store["over_budget_reason"]
    assert {k: summary[k] for k in BUDGET_KEYS} == {k: store[k] for k in BUDGET_KEYS}  # one store: the run's

    status = cli(["status", run_id, "--json", "--state", journal_url], tmp_path)
    assert status.returncode == 0, status.stderr
    shown = last_json(status.stdout)
    assert {k: shown["keystores"][0][k] for k in BUDGET_KEYS} == {k: store[k] for k in BUDGET_KEYS}
    history = cli(["history", "--json", "--state", journal_url], tmp_path)
    record = next(json.loads(x) for x in history.stdout.splitlines() if json.loads(x).get("run_id") == run_id)
    assert {k: record["keystores"][0][k] for k in BUDGET_KEYS} == {k: store[k] for k in BUDGET_KEYS}
    assert {k: record[k] for k in BUDGET_KEYS} == {k: summary[k] for k in BUDGET_KEYS}

    over = f"over budget by {duration(store['over_budget_seconds'], True)}"
    text = cli(["status", run_id, "--state", journal_url], tmp_path).stdout
    assert over in text and store["over_budget_reason"] in text, text
    lines = cli(["history", "--state", journal_url], tmp_path).stdout
    assert over in lines and store["over_budget_reason"] in lines, lines


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A completed, a rolled-back and a blocked rehearsal in one journal, through the CLI (--json)."""
    tmp = tmp_path_factory.mktemp("budget")
    state = f"sqlite:///{tmp}/rehearsal.db"
    faults = tmp / "connect-fails.toml"
    faults.write_text('[[faults]]\noperation = "ConnectCustomKeyStore"\n'
                      'connection_error_code = "XKS_PROXY_INVALID_TLS_CONFIGURATION"\ncount = 1\n')
    common = ["--dry-run", "--yes", "--json", "--time-scale", "600", "--state", state]
    plan = roomy_plan_file(tmp)
    stuck = tmp / "connect-always-fails.toml"  # the rollback's connect fails too
    stuck.write_text(faults.read_text().replace("count = 1", "count = 5"))
    runs = {"completed": cli(["run", str(plan), *common], tmp),
            "rolled_back": cli(["run", str(plan), *common, "--faults", str(faults)], tmp),
            "blocked": cli(["run", str(plan), *common, "--world", str(BAD_WORLD)], tmp),
            "stuck": cli(["run", str(plan), *common, "--faults", str(stuck)], tmp)}
    return {"state": state, "tmp": tmp, "runs": runs}


@pytest.mark.slow
@pytest.mark.parametrize(("which", "code"), [("completed", 0), ("rolled_back", 4), ("blocked", 3), ("stuck", 5)])
def test_status_exits_with_the_runs_code_and_its_json_summary_is_the_runs(rehearsed, which, code):
    done = rehearsed["runs"][which]
    assert done.returncode == code, done.stdout[-2000:] + done.stderr
    summary = last_json(done.stdout)

    status = cli(["status", summary["run_id"], "--json", "--state", rehearsed["state"]], rehearsed["tmp"])

    assert status.returncode == code, status.stdout + status.stderr
    shown = last_json(status.stdout)
    assert set(shown) - set(summary) <= {"plan", "region", "dry_run", "started_at", "finished_at", "who", "host"}
    if which == "stuck":  # the store is still disconnected: its window keeps growing between the two looks
        growing = {"window_seconds", "disconnected_seconds", "over_budget_seconds", "over_budget_reason"}
        for part in (summary, shown, summary["keystores"][0], shown["keystores"][0]):
            for key in growing:
                part.pop(key, None)
    assert {k: shown[k] for k in summary} == summary  # every key of run's summary, with the same value
    assert summary["budget_seconds"] == 3600.0
    plain = cli(["status", summary["run_id"], "--state", rehearsed["state"]], rehearsed["tmp"])
    assert plain.returncode == code, plain.stdout + plain.stderr
    if which == "stuck":  # the recovery commands, as the run's summary gave them
        manual = shown["keystores"][0]["manual"]
        assert "OPERATOR ACTION NEEDED" in plain.stdout and manual["commands"]
        assert all(command in plain.stdout for command in manual["commands"]), plain.stdout
    else:
        assert summary["over_budget_seconds"] == 0 and summary["over_budget_reason"] is None
        assert "over budget" not in plain.stdout


@pytest.mark.slow
def test_status_gives_up_with_124_while_the_run_is_still_going(journal_url, journal, start_world, tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, disconnect=LONG))
    plan = plan_with_budget(tmp_path, "1h", server)
    runner = subprocess.Popen([sys.executable, "-m", "migrator.cli", "run", str(plan), "--yes", "--endpoint-url",
                               server.endpoint_url, "--time-scale", str(SCALE), "--state", journal_url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              cwd=tmp_path, env=cli_env(), preexec_fn=default_sigint)
    try:
        run_id = wait_until("the disconnect", lambda: next((r.id for r in journal.list_runs(limit=1)
                                                            if r.migrations and r.migrations[0].disconnected_at),
                                                           None), runner, timeout=90.0)
        watched = cli(["status", run_id, "--watch", "--timeout", "2", "--json", "--state", journal_url], tmp_path)
        assert watched.returncode == 124, watched.stdout[-2000:] + watched.stderr
        shown = last_json(watched.stdout)
        assert (shown["outcome"], shown["exit_code"]) == ("running", 124)
        assert shown["keystores"][0]["window_seconds"] > 0 and shown["over_budget_seconds"] == 0
        text = cli(["status", run_id, "--watch", "--timeout", "2", "--state", journal_url], tmp_path)
        assert text.returncode == 124, text.stdout[-2000:] + text.stderr
        assert f"{STORE} disconnecting: disconnected " in text.stdout and " of 60m00s budget simulated" in text.stdout
        assert "calling DisconnectCustomKeyStore" not in text.stdout  # the timer, not a replay of every line
        assert runner.poll() is None  # status only looked
    finally:
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=60)


@pytest.mark.slow
def test_the_live_view_timer_moves_during_a_slow_call(tmp_path):
    """On a terminal, a 9-real-second UpdateCustomKeyStore: two looks at the panel during it, the window grew."""
    import re

    from crash_helpers import tool_env
    from test_operator_view import Terminal

    slow = tmp_path / "slow-update.toml"
    slow.write_text('[[faults]]\noperation = "UpdateCustomKeyStore"\nlatency_seconds = 540\ncount = 1\n')
    plan = roomy_plan_file(tmp_path)
    term = Terminal(["-m", "migrator.cli", "run", str(plan), "--dry-run", "--yes", "--time-scale", str(SCALE),
                     "--faults", str(slow), "--state", f"sqlite:///{tmp_path}/rehearsal.db"], tmp_path,
                    tool_env(XDG_STATE_HOME=str(tmp_path), COLUMNS="120", LINES="40", TERM="xterm"))
    shown = re.compile(rb"disconnected\s+(?:(\d+)m(\d\d)s|(\d+\.\d)s) of")

    def last_window() -> float:
        found = shown.findall(term.output)
        assert found, term.output[-2000:]
        minutes, seconds, short = found[-1]
        return float(short) if short else int(minutes) * 60 + int(seconds)

    try:
        term.read_until(b"calling UpdateCustomKeyStore")
        time.sleep(1.5)
        term._read(0.5)
        first = last_window()
        time.sleep(3.0)
        term._read(0.5)
        second = last_window()
        assert b"UpdateCustomKeyStore ok" not in term.output  # both looks were during the call
    finally:
        code = term.wait(timeout=120)
    assert second > first + 60, (first, second)  # 3 real seconds at scale 60: about 180 simulated
    assert code == 0, term.output[-3000:]


def test_the_text_summary_says_the_overrun_and_its_reason():
    from migrator.cli.output import describe_summary

    over = BudgetFacts(900.0, 1000.0, 100.0, "runner down from 10:00:00Z to 10:01:40Z (1m40s)")
    store = StoreResult("a", STORE, "completed", "completed", None, None, 1000.0, {}, None, budget=over)
    lines = describe_summary(RunResult("run-x", "completed", 0, [store]).summary())
    assert f"  {STORE}: completed, disconnected 16m40s of a 15m00s budget" in lines
    assert "    over budget by 1m40s (budget 15m00s): runner down from 10:00:00Z to 10:01:40Z (1m40s)" in lines


@pytest.mark.slow
def test_a_killed_runner_is_seen_dead_by_status_with_its_gap_counted_to_now(journal_url, journal, start_world,
                                                                            tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, connect=LONG))
    plan = plan_with_budget(tmp_path, "15m", server)
    runner = subprocess.Popen([sys.executable, "-m", "migrator.cli", "run", str(plan), "--yes", "--endpoint-url",
                               server.endpoint_url, "--time-scale", str(SCALE), "--state", journal_url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              cwd=tmp_path, env=cli_env())
    try:
        run_id = wait_until("the connect wait", connecting(journal), runner, timeout=90.0)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    [lock] = journal.list_locks()
    assert cli(["unlock", lock.id, "--state", journal_url], tmp_path).returncode == 0  # no runner holds it now
    disconnected_at = journal.get_run(run_id).migrations[0].disconnected_at
    while (time.time() - disconnected_at) * SCALE < BUDGET + 60:
        time.sleep(0.2)

    status = cli(["status", run_id, "--json", "--state", journal_url], tmp_path)

    assert status.returncode == 130, status.stdout + status.stderr
    shown = last_json(status.stdout)
    assert shown["outcome"] == "running" and f"xksmigrate resume {run_id}" in shown["warning"]
    store = shown["keystores"][0]
    assert store["over_budget_seconds"] > 0 and store["over_budget_reason"].startswith("runner down from ")
    text = cli(["status", run_id, "--state", journal_url], tmp_path)
    assert text.returncode == 130 and "over budget by" in text.stdout and "runner down from" in text.stdout
