"""An operator rollback is a run of its own, linked to the run it undoes (issue 11: "rollback keeps history").

Through the CLI against `sim serve` (crash_helpers.Sim), on SQLite and PostgreSQL (`journal_url`):
- `rollback RUN_ID` starts a new run (exit 4, rolled_back); `history` lists both, the forward one still
  `completed` with its own window and `rolled_back_by`, the new one with its own window and `rolls_back`;
  `status RUN_ID` still exits 0 and names the rollback run; a second rollback and `resume RUN_ID` are refused;
- a rollback killed mid-way is continued by `resume NEW`; meanwhile another `rollback RUN_ID` is refused, naming
  NEW and its resume command;
- a later run that was itself rolled back no longer stands in the way of rolling back the earlier run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import PLAN, WORLD, Proc, Sim, kill_leftovers, spawn
from test_whole_runs import PAYMENTS, back_to_public_plan, failure, journal_of, live, mutations, tool

pytestmark = pytest.mark.slow  # every case drives the CLI against sim serve in subprocesses: the full tier

PUBLIC, PRIVATE = "https://myproxy.xks.example.com", "https://myproxy-private.xks.example.com"


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    kill_leftovers()


def read_only(sim: Sim, url: str, workdir: Path, name: str, *args: str) -> Proc:
    """`status`/`history`, which take neither --yes nor an endpoint."""
    proc = spawn([*args, "--state", url], workdir, name)
    proc.wait()
    return proc


def ndjson(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.out.read_text().splitlines() if line.strip()]


def forward_run(sim: Sim, url: str, workdir: Path, name: str = "run", plan: Path = PLAN) -> dict[str, Any]:
    run = tool(sim, url, workdir, name, "run", str(plan))
    assert run.popen.returncode == 0, failure(run)
    return run.summary() or {}


def test_a_rollback_is_its_own_run_and_both_stay_in_history_with_their_windows(journal_url: str,
                                                                               tmp_path: Path) -> None:
    with Sim(tmp_path, world=WORLD) as sim:
        forward = forward_run(sim, journal_url, tmp_path)
        run_id, window = forward["run_id"], forward["keystores"][0]["window_seconds"]
        assert (forward["rolls_back"], forward["rolled_back_by"]) == (None, None)

        back = tool(sim, journal_url, tmp_path, "rollback", "rollback", run_id)
        assert back.popen.returncode == 4, failure(back)
        summary = back.summary() or {}
        back_id = summary["run_id"]
        assert back_id != run_id
        assert (summary["outcome"], summary["exit_code"], summary["rolls_back"]) == ("rolled_back", 4, run_id)
        assert live(sim, PAYMENTS) == ("CONNECTED", PUBLIC)

        history = ndjson(read_only(sim, journal_url, tmp_path, "history", "history", "--json"))
        runs = {r["run_id"]: r for r in history if r.get("type") == "run"}
        assert set(runs) == {run_id, back_id}
        before, after = runs[run_id], runs[back_id]
        assert (before["outcome"], before["exit_code"], before["rolled_back_by"]) == ("completed", 0, back_id)
        assert before["keystores"][0]["window_seconds"] == window  # the forward outage is still on record
        assert before["keystores"][0]["state"] == "completed"
        assert (after["outcome"], after["exit_code"], after["rolls_back"]) == ("rolled_back", 4, run_id)
        assert after["keystores"][0]["window_seconds"] == summary["keystores"][0]["window_seconds"] > 0
        assert after["keystores"][0]["budget_seconds"] == before["keystores"][0]["budget_seconds"]
        text = read_only(sim, journal_url, tmp_path, "history-text", "history").out.read_text()
        assert f"rolled back by {back_id}" in next(line for line in text.splitlines() if line.startswith(run_id))
        assert f"rolls back {run_id}" in next(line for line in text.splitlines() if line.startswith(back_id))

        status = read_only(sim, journal_url, tmp_path, "status", "status", run_id)
        assert status.popen.returncode == 0, status.err.read_text()
        assert f"rolled back by {back_id}" in status.out.read_text()
        shown = ndjson(read_only(sim, journal_url, tmp_path, "status-json", "status", run_id, "--json"))[-1]
        assert (shown["outcome"], shown["rolled_back_by"], shown["rolls_back"]) == ("completed", back_id, None)
        back_status = read_only(sim, journal_url, tmp_path, "status-back", "status", back_id)
        assert back_status.popen.returncode == 4 and f"rolls back {run_id}" in back_status.out.read_text()
        shown = ndjson(read_only(sim, journal_url, tmp_path, "status-back-json", "status", back_id, "--json"))[-1]
        assert {k: shown[k] for k in ("outcome", "rolls_back", "message")} == {
            k: summary[k] for k in ("outcome", "rolls_back", "message")}

        # Neither the forward run nor its rollback runs again.
        calls = mutations(sim)
        again = tool(sim, journal_url, tmp_path, "rollback-again", "rollback", run_id)
        assert again.popen.returncode == 2, failure(again)
        assert back_id in (again.summary() or {})["message"]
        resumed = tool(sim, journal_url, tmp_path, "resume-forward", "resume", run_id)
        assert resumed.popen.returncode == 2, failure(resumed)
        assert mutations(sim) == calls
        run, _ = journal_of(journal_url, run_id)
        assert (run.outcome, run.migrations[0].state, run.migrations[0].window_seconds) == ("completed", "completed",
                                                                                            window)


def test_a_rollback_killed_mid_way_is_continued_by_resuming_its_own_run(journal_url: str, tmp_path: Path) -> None:
    with Sim(tmp_path, world=WORLD) as sim:
        run_id = forward_run(sim, journal_url, tmp_path)["run_id"]
        killed = tool(sim, journal_url, tmp_path, "rollback", "rollback", run_id,
                      kill_after=after_the_update(tmp_path / "clean"))
        assert killed.popen.returncode == -9, failure(killed)
        back, events = journal_of(journal_url)
        assert back.options["rolls_back"] == run_id and back.outcome == "running"
        assert events[-1].kind == "result" and events[-1].operation == "UpdateCustomKeyStore"

        second = tool(sim, journal_url, tmp_path, "second", "rollback", run_id)
        assert second.popen.returncode == 2, failure(second)
        message = (second.summary() or {})["message"]
        assert back.id in message and f"xksmigrate resume {back.id}" in message, message

        resumed = tool(sim, journal_url, tmp_path, "resume", "resume", back.id)
        assert resumed.popen.returncode == 4, failure(resumed)
        summary = resumed.summary() or {}
        assert (summary["run_id"], summary["outcome"], summary["rolls_back"]) == (back.id, "rolled_back", run_id)
        assert live(sim, PAYMENTS) == ("CONNECTED", PUBLIC)
        back, _ = journal_of(journal_url, back.id)
        assert (back.outcome, back.migrations[0].state) == ("rolled_back", "rolled_back")
        forward, events = journal_of(journal_url, run_id)
        assert (forward.outcome, forward.migrations[0].state) == ("completed", "completed")
        assert [e.detail["run_id"] for e in events if e.outcome == "rolled_back_by"] == [back.id]


def after_the_update(workdir: Path) -> int:
    """The journal point of a rollback run just after its UpdateCustomKeyStore (the store is disconnected),
    read from an uninterrupted rollback in a world of its own."""
    workdir.mkdir()
    url = f"sqlite:///{workdir}/journal.db"
    with Sim(workdir, world=WORLD) as sim:
        back = tool(sim, url, workdir, "rollback", "rollback", forward_run(sim, url, workdir)["run_id"])
        assert back.popen.returncode == 4, failure(back)
    _, events = journal_of(url)
    return next(e.seq for e in events if e.kind == "result" and e.operation == "UpdateCustomKeyStore")


def test_a_later_run_that_was_rolled_back_does_not_refuse_the_earlier_runs_rollback(journal_url: str,
                                                                                    tmp_path: Path) -> None:
    with Sim(tmp_path, world=WORLD) as sim:
        first = forward_run(sim, journal_url, tmp_path, "first")["run_id"]
        later = forward_run(sim, journal_url, tmp_path, "later", back_to_public_plan(tmp_path))["run_id"]
        assert live(sim, PAYMENTS) == ("CONNECTED", PUBLIC)
        refused = tool(sim, journal_url, tmp_path, "refused", "rollback", first)
        assert refused.popen.returncode == 3, failure(refused)  # the later run stands in the way

        undo_later = tool(sim, journal_url, tmp_path, "undo-later", "rollback", later)
        assert undo_later.popen.returncode == 4, failure(undo_later)
        assert live(sim, PAYMENTS) == ("CONNECTED", PRIVATE)  # what the first run left

        undo_first = tool(sim, journal_url, tmp_path, "undo-first", "rollback", first)
        assert undo_first.popen.returncode == 4, failure(undo_first)
        assert live(sim, PAYMENTS) == ("CONNECTED", PUBLIC)
        assert (undo_first.summary() or {})["rolls_back"] == first
