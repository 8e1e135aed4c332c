"""One runner per key store, through the CLI: real processes on one journal, the world outside them.

The world's disconnect is made to take (simulated) days, so the first runner sits in the window for
as long as the test needs; the test then moves the world's clock on (a control path) to let it finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import load_world, roomy_plan_file

from migrator.aws.kms import KmsApplier

STORE = "cks-1234567890abcdef0"
SCALE = 60.0
LONG = 100_000.0  # simulated seconds the world's disconnect takes until the test advances its clock

pytestmark = pytest.mark.slow


def cli_env() -> dict[str, str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAREHEARSAL0000000", "AWS_SECRET_ACCESS_KEY": "rehearsal"}
    for name in ("AWS_ENDPOINT_URL", "XKSMIGRATE_STATE", "XKSMIGRATE_TEST_KILL_AFTER_SEQ", "XKSMIGRATE_TIME_SCALE"):
        env.pop(name, None)
    return env


def start_cli(args: list[str], tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "migrator.cli", *args], stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL, cwd=tmp_path, env=cli_env())
    return proc, out, err


def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrator.cli", *args], cwd=tmp_path, env=cli_env(), text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def wait_until(what: str, condition: Callable[[], Any], proc: subprocess.Popen, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the runner exited ({proc.returncode}) before {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def in_window(journal: Any) -> Callable[[], Any]:
    """The single run's id once the runner has seen its store DISCONNECTING and its lock row is written.

    The journal's `disconnecting` state is written before the DisconnectCustomKeyStore call (intent
    first); waiting for the observation makes sure the call reached the world, so a kill cannot land
    before it and leave the disconnect to a resume that starts after the test moved the world's clock.
    """
    def check() -> Any:
        runs = journal.list_runs(limit=5)
        if len(runs) == 1 and runs[0].migrations and runs[0].migrations[0].state == "disconnecting" \
                and journal.list_locks():  # migrations are added just after the run row: look again
            seen = [e for e in journal.events(runs[0].id)
                    if e.kind == "note" and (e.detail or {}).get("connection_state") == "DISCONNECTING"]
            return runs[0].id if seen else None
        return None
    return check


def advance_world(server: Any, seconds: float) -> None:
    request = urllib.request.Request(f"{server.endpoint_url}/_rehearsal/clock", method="POST",
                                     data=json.dumps({"advance": seconds}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def live(server: Any) -> Any:
    from migrator.aws.clients import ClientFactory
    from migrator.dryrun import DUMMY_CREDENTIALS

    clients = ClientFactory(region=server.world.region, endpoint_url=server.endpoint_url,
                            credentials=dict(DUMMY_CREDENTIALS))
    return KmsApplier(clients.client("kms")).describe(STORE)


def run_args(server: Any, journal_url: str, tmp_path: Path) -> list[str]:
    """The example plan with a roomy budget: a slow machine must not turn this test into a rollback."""
    plan = roomy_plan_file(tmp_path)
    return ["run", str(plan), "--yes", "--endpoint-url", server.endpoint_url, "--time-scale", str(SCALE),
            "--state", journal_url]


def summary_of(path: Path) -> dict[str, Any]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert lines[0]["type"] == "version" and lines[-1]["type"] == "summary"
    return lines[-1]


def test_a_second_run_on_the_same_store_exits_6_naming_the_lock_and_its_holder(journal_url, journal, start_world,
                                                                               tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, disconnect=LONG, connect=60))
    first, first_out, first_err = start_cli([*run_args(server, journal_url, tmp_path), "--json"], tmp_path, "first")
    try:
        run_id = wait_until("the first runner is in the window", in_window(journal), first)
        [lock] = journal.list_locks()
        assert (lock.run_id, lock.pid) == (run_id, first.pid)

        second = run_cli(run_args(server, journal_url, tmp_path), tmp_path)

        assert second.returncode == 6, second.stdout + second.stderr
        said = second.stdout + second.stderr
        for part in (lock.id, f"owner {lock.owner}", f"host {lock.host}", f"pid {first.pid}", f"run {run_id}",
                     f"xksmigrate unlock {lock.id}"):
            assert part in said, (part, said)
        assert first.poll() is None  # the holder was not disturbed
        assert [lk.id for lk in journal.list_locks()] == [lock.id]
        refused = run_cli(["unlock", lock.id, "--state", journal_url], tmp_path)  # it is alive: not removed
        assert refused.returncode == 6, refused.stdout + refused.stderr
        assert "still alive" in refused.stderr and f"pid {first.pid}" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert [lk.id for lk in journal.list_locks()] == [lock.id] and first.poll() is None
        assert live(server).state == "DISCONNECTING"

        advance_world(server, LONG)  # the world's disconnect finishes; the first runner carries on
        assert first.wait(timeout=120) == 0, first_err.read_text()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    summary = summary_of(first_out)
    assert (summary["run_id"], summary["outcome"]) == (run_id, "completed")
    store = live(server)
    assert (store.state, store.config.connectivity) == ("CONNECTED", "VPC_ENDPOINT_SERVICE")
    assert journal.list_locks() == []
    assert journal.get_run(run_id).outcome == "completed"
    locked = [r for r in journal.list_runs(limit=5) if r.id != run_id]
    assert [(r.outcome, r.exit_code) for r in locked] == [("locked", 6)]
    assert locked[0].migrations[0].state == "pending"  # the second runner never touched its store


def test_unlock_of_a_killed_runners_lock_then_resume_completes(journal_url, journal, start_world, tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE, disconnect=LONG, connect=60))
    first, _, _ = start_cli(run_args(server, journal_url, tmp_path), tmp_path, "first")
    try:
        run_id = wait_until("the first runner is in the window", in_window(journal), first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    [lock] = journal.list_locks()
    assert (lock.run_id, lock.pid) == (run_id, first.pid)

    unlocked = run_cli(["unlock", lock.id, "--state", journal_url], tmp_path)

    assert unlocked.returncode == 0, unlocked.stderr
    assert f"removed {lock.id}" in unlocked.stdout and f"pid {first.pid}" in unlocked.stdout
    assert journal.list_locks() == []
    again = run_cli(["unlock", lock.id, "--state", journal_url], tmp_path)
    assert again.returncode == 2 and lock.id in again.stderr

    advance_world(server, LONG)
    resumed = run_cli(["resume", run_id, "--yes", "--json", "--endpoint-url", server.endpoint_url,
                       "--state", journal_url], tmp_path)

    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    lines = [json.loads(line) for line in resumed.stdout.splitlines() if line.strip()]
    assert (lines[-1]["run_id"], lines[-1]["outcome"]) == (run_id, "completed")
    store = live(server)
    assert (store.state, store.config.connectivity) == ("CONNECTED", "VPC_ENDPOINT_SERVICE")
    run = journal.get_run(run_id)
    assert (run.outcome, run.migrations[0].state) == ("completed", "completed")
    # The window is counted across the crash: from the first runner's disconnect, not from the resume.
    assert run.migrations[0].window_seconds == pytest.approx(
        (run.migrations[0].verified_at - run.migrations[0].disconnected_at) * SCALE, abs=1.0)
    disconnects = [e for e in journal.events(run_id) if e.kind == "call" and e.operation == "DisconnectCustomKeyStore"]
    assert len(disconnects) == 1  # resume observed DISCONNECTING/DISCONNECTED and did not disconnect again
    assert journal.list_locks() == []
