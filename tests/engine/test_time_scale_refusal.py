"""A resume takes the run's time scale from the journal: a contradicting `--time-scale` is refused (exit 2).

The window and the budget of a rehearsed run are measured on its simulated clock; a resume on another scale
would measure the rest of the window in different seconds and could roll back (or not) for nothing. The
refusal happens before anything is called: the world's own log shows no new call that changes the store, and
the journal is as the killed runner left it. A resume without the option (or with the same scale) finishes.
"""

from __future__ import annotations

import json
import signal

import pytest
from engine_helpers import MUTATING, load_world, read_world_log
from test_lock_cli import LONG, SCALE, advance_world, in_window, run_args, run_cli, start_cli, wait_until

pytestmark = pytest.mark.slow


def mutating(log: list[dict[str, object]]) -> list[object]:
    return [e["operation"] for e in log if e.get("kind") == "call" and e.get("operation") in MUTATING]


@pytest.mark.parametrize("journal_url", ["sqlite"], indirect=True)
def test_a_resume_on_another_time_scale_is_refused_and_changes_nothing(journal_url, journal, start_world,
                                                                        tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, disconnect=LONG, connect=60))
    proc, _out, err = start_cli(run_args(server, journal_url, tmp_path), tmp_path, "run")
    try:
        run_id = wait_until("the runner is in the window", in_window(journal), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events_before = [e.seq for e in journal.events(run_id)]
    calls_before = len(read_world_log(server))

    common = ["--yes", "--json", "--endpoint-url", server.endpoint_url, "--state", journal_url]
    refused = run_cli(["resume", run_id, *common, "--time-scale", str(SCALE * 2)], tmp_path)

    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr
    assert f"--time-scale {SCALE * 2:g} contradicts the {SCALE:g} that {run_id} was run with" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert mutating(read_world_log(server)[calls_before:]) == []
    assert [e.seq for e in journal.events(run_id)] == events_before
    assert journal.get_run(run_id).migrations[0].state == "disconnecting"

    advance_world(server, LONG)  # the disconnect finishes; the same scale (or none) is taken from the journal
    resumed = run_cli(["resume", run_id, *common, "--time-scale", str(SCALE)], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr + err.read_text()[-1000:]
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert (summary["run_id"], summary["outcome"]) == (run_id, "completed")
