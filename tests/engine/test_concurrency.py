"""Concurrent operators (issue 5): ten runners on one store from separate processes, and a run started on one
machine resumed from another that shares the journal. Real processes, real journal, the world over HTTP.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_helpers import REPO, load_world, mutating_calls, read_world_log, roomy_plan_file

from migrator.aws.kms import KmsApplier

pytestmark = pytest.mark.slow  # ten CLI processes at once: the full tier

STORE = "cks-1234567890abcdef0"
XKSMIGRATE = [sys.executable, "-m", "migrator.cli"]


def _env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env.update(AWS_ACCESS_KEY_ID="rehearsal", AWS_SECRET_ACCESS_KEY="rehearsal", AWS_DEFAULT_REGION="us-east-1",
               NO_COLOR="1")
    return env


def _run_args(server, state: str, plan: Path) -> list[str]:
    """The example plan with ROOMY_BUDGET: ten processes on two cores, or a resume from a second machine after
    an unlock, take real seconds that the scale turns into minutes of the 15-minute window."""
    return [*XKSMIGRATE, "run", str(plan), "--yes", "--endpoint-url",
            server.endpoint_url, "--time-scale", f"{server.world.time_scale:g}", "--state", state]


def test_ten_runners_on_one_store_exactly_one_proceeds(journal_url, start_world, journal, tmp_path):
    server = start_world(load_world(time_scale=60.0))  # ~10 s of real time for the winner: all ten overlap
    plan = roomy_plan_file(tmp_path)
    procs = [subprocess.Popen(_run_args(server, journal_url, plan), env=_env(server), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(10)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]

    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [6] * 9, [(c, e[-300:]) for c, _, e in results]
    winner_runs = [r for r in journal.list_runs(limit=20) if r.outcome == "completed"]
    assert len(winner_runs) == 1
    winner = winner_runs[0]
    for code, out, err in results:
        if code == 6:
            text = out + err
            assert "locked by lock-" in text and f"run {winner.id}" in text, text[-500:]
            assert "pid" in text and "host" in text
    assert mutating_calls(read_world_log(server)) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                                      "ConnectCustomKeyStore"]


def _wait_for_state(journal, state: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = journal.list_runs(limit=1)
        if runs and runs[0].migrations and runs[0].migrations[0].state == state:
            return runs[0].id
        time.sleep(0.02)
    raise AssertionError(f"the run never reached {state}")


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs root and unshare to give the second process another hostname")
def test_a_run_started_on_one_machine_is_resumed_from_another(journal_url, start_world, journal, tmp_path):
    server = start_world(load_world(time_scale=60.0))
    first = subprocess.Popen(_run_args(server, journal_url, roomy_plan_file(tmp_path)), env=_env(server), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = _wait_for_state(journal, "connecting")
    first.send_signal(signal.SIGKILL)  # the laptop dies in the middle of the window
    first.wait(timeout=30)
    disconnected_at = journal.get_run(run_id).migrations[0].disconnected_at

    resume = [*XKSMIGRATE, "resume", run_id, "--yes", "--endpoint-url", server.endpoint_url,
              "--time-scale", "60", "--state", journal_url]
    other_machine = ["unshare", "--uts", "sh", "-c", 'hostname other-machine && exec "$@"', "sh", *resume]
    done = subprocess.run(other_machine, env=_env(server), cwd=REPO, capture_output=True, text=True, timeout=300)

    if journal_url.startswith("sqlite"):
        # The dead runner's lock row names another host, so this machine cannot know it is dead: it says so.
        assert done.returncode == 6, done.stderr[-500:]
        import socket

        assert f"host {socket.gethostname()}" in done.stdout + done.stderr, done.stderr[-500:]
        lock_id = next(lk.id for lk in journal.list_locks() if lk.run_id == run_id)
        unlocked = subprocess.run([*XKSMIGRATE, "unlock", lock_id, "--state", journal_url], env=_env(server),
                                  cwd=REPO, capture_output=True, text=True, timeout=60)
        assert unlocked.returncode == 0, unlocked.stderr
        done = subprocess.run(other_machine, env=_env(server), cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    # PostgreSQL: the dead runner's advisory lock went with its session; the other machine just continues.
    assert done.returncode == 0, (done.stdout[-800:], done.stderr[-800:])
    run = journal.get_run(run_id)
    assert run.outcome == "completed" and run.migrations[0].disconnected_at == disconnected_at
    hosts = {e.detail.get("host") for e in journal.events(run_id) if e.kind == "note" and e.detail
             and e.detail.get("message") == "resumed"}
    assert "other-machine" in hosts
    live = KmsApplier(_client(server)).describe(STORE)
    assert (live.state, live.config.connectivity) == ("CONNECTED", "VPC_ENDPOINT_SERVICE")


def _client(server):
    from migrator.aws.clients import ClientFactory
    from migrator.dryrun import DUMMY_CREDENTIALS

    return ClientFactory(region="us-east-1", endpoint_url=server.endpoint_url,
                         credentials=dict(DUMMY_CREDENTIALS)).client("kms")
