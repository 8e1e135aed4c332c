"""The journal fails in the middle of the window: the runner stops before its next AWS call, says where the run
stands and exits 130; `resume` then finishes the run with every side effect once.

Nothing is mocked. The tool runs as a subprocess against a rehearsal world whose disconnect takes (simulated)
days, so the runner sits in the window while the test breaks its journal for real:
- SQLite: the journal lives on a small tmpfs that the test fills up (ENOSPC, "database or disk is full");
- PostgreSQL: the test terminates the runner's backends (its advisory lock dies with its session), and blocks
  new connections to the runner's own database (ALLOW_CONNECTIONS false) to make it unreachable.
The test then moves the world's clock on, so the disconnect finishes and a runner that did not stop would go on
to UpdateCustomKeyStore: the world's own log is the witness of what reached AWS.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import pg_database
from engine_helpers import MUTATING, PG_URL, REPO, load_world, read_world_log
from test_lock_cli import LONG, SCALE, advance_world, in_window, live, run_cli, start_cli, summary_of, wait_until

from migrator.journal.repository import Journal

pytestmark = pytest.mark.slow
BUDGET = "6h"  # simulated (6 real minutes at SCALE): the window must not run out while the test breaks things


def plan_file(directory: Path) -> Path:
    text = (REPO / "plans" / "public-to-vpc.toml").read_text()
    path = directory / "plan.toml"
    path.write_text(text.replace('max_disconnected = "15m"', f'max_disconnected = "{BUDGET}"'))
    return path


def cli_args(command: str, target: str, server: Any, state_url: str) -> list[str]:
    return [command, target, "--yes", "--json", "--endpoint-url", server.endpoint_url, "--time-scale", str(SCALE),
            "--state", state_url]


def world_in_window() -> Any:
    return load_world("public-to-vpc", time_scale=SCALE, disconnect=LONG, connect=60)


def mutating(log: list[dict[str, Any]]) -> list[str]:
    return [e["operation"] + (f" ({e['error']})" if e.get("error") else "") for e in log
            if e.get("kind") == "call" and e.get("operation") in MUTATING]


def aws_calls(log: list[dict[str, Any]]) -> list[str]:
    return [e["operation"] for e in log if e.get("kind") == "call"]


def wait_exit(proc: subprocess.Popen, err: Path, timeout: float = 120.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the runner hung: {err.read_text()[-2000:]}") from None


def assert_stopped_in_window(code: int, out: Path, err: Path, run_id: str, *,
                             says: str | tuple[str, ...]) -> dict[str, Any]:
    """Exit 130 and a summary that says where the run stands, printed although the journal may be gone.

    `says`: the reason the message must give (one of them, when a race decides which failure is seen first)."""
    assert code == 130, f"exit {code}: {err.read_text()[-2000:]}"
    summary = summary_of(out)
    assert (summary["run_id"], summary["outcome"], summary["exit_code"]) == (run_id, "interrupted", 130)
    reasons = (says,) if isinstance(says, str) else says
    assert any(reason in summary["message"] for reason in reasons), summary["message"]
    assert f"xksmigrate resume {run_id}" in summary["message"], summary["message"]
    [store] = summary["keystores"]
    assert store["state"] == "disconnecting"  # the journal's last word: it never saw DISCONNECTED recorded
    assert store["outcome"] == "unfinished"
    assert "may still be disconnected" in store["error"], store["error"]
    assert store["disconnected_seconds"] is not None and store["disconnected_seconds"] > 0  # the window so far
    assert "Traceback" not in err.read_text()
    return summary


def assert_resume_finishes(server: Any, tmp_path: Path, state_url: str, run_id: str) -> None:
    resumed = run_cli(cli_args("resume", run_id, server, state_url), tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    lines = [json.loads(line) for line in resumed.stdout.splitlines() if line.strip()]
    assert (lines[-1]["run_id"], lines[-1]["outcome"]) == (run_id, "completed")
    store = live(server)
    assert (store.state, store.config.connectivity) == ("CONNECTED", "VPC_ENDPOINT_SERVICE")
    # Side effects once, across the stop and the resume: the world's own log.
    assert mutating(read_world_log(server)) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                                "ConnectCustomKeyStore"]
    with Journal.open(state_url) as journal:
        run = journal.get_run(run_id)
        assert (run.outcome, run.migrations[0].state) == ("completed", "completed")
        seqs = [e.seq for e in journal.events(run_id)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert journal.list_locks() == []


# -- SQLite: the journal's disk fills up ------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only), unmounted afterwards."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full (ENOSPC); returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
        with pytest.raises(OSError) as full:
            os.write(fd, b"\0")
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def sqlite_run_in_window(tmp_path: Path, server: Any, state_url: str) -> tuple[Any, Path, Path, str, Journal]:
    proc, out, err = start_cli(cli_args("run", str(plan_file(tmp_path)), server, state_url), tmp_path, "run")
    journal = Journal.open(state_url)
    run_id = wait_until("the runner is in the window", in_window(journal), proc)
    return proc, out, err, run_id, journal


def test_a_full_journal_disk_mid_window_stops_before_the_next_aws_call_exits_130_and_resume_finishes(
        start_world, tmp_path):
    server = start_world(world_in_window())
    with small_disk(tmp_path / "disk") as disk:
        state_url = f"sqlite:///{disk}/journal.db"
        proc, out, err, run_id, journal = sqlite_run_in_window(tmp_path, server, state_url)
        try:
            filler = fill(disk)
            seen = len(read_world_log(server))
            advance_world(server, LONG)  # the disconnect finishes: the runner must journal that before it updates

            code = wait_exit(proc, err)

            after = read_world_log(server)[seen:]
            assert mutating(after) == [], after  # nothing that changes the store, once the journal was full
            assert set(aws_calls(after)) <= {"DescribeCustomKeyStores"}
            summary = assert_stopped_in_window(code, out, err, run_id, says="database or disk is full")
            assert f"cannot write the journal sqlite:///{disk}/journal.db" in summary["message"]
            assert journal.get_run(run_id).migrations[0].state == "disconnecting"  # nothing was half-written
            filler.unlink()
            assert_resume_finishes(server, tmp_path, state_url, run_id)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            journal.close()


def test_a_full_journal_disk_for_a_moment_is_ridden_out_and_the_run_completes(start_world, tmp_path):
    """The write is retried briefly (journal before side effect still): a blip costs a moment, not a stop."""
    server = start_world(world_in_window())
    with small_disk(tmp_path / "disk") as disk:
        state_url = f"sqlite:///{disk}/journal.db"
        proc, out, err, run_id, journal = sqlite_run_in_window(tmp_path, server, state_url)
        try:
            filler = fill(disk)
            advance_world(server, LONG)
            time.sleep(0.5)  # the runner's write of DISCONNECTED fails and is retried meanwhile
            filler.unlink()

            code = wait_exit(proc, err)

            assert code == 0, err.read_text()[-2000:]
            assert summary_of(out)["outcome"] == "completed"
            assert mutating(read_world_log(server)) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                                        "ConnectCustomKeyStore"]
            events = journal.events(run_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            disconnected = [e for e in events if (e.detail or {}).get("connection_state") == "DISCONNECTED"]
            assert len(disconnected) == 1  # the retried write landed once
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            journal.close()


# -- PostgreSQL: the runner's sessions die, the database becomes unreachable --------------------------------
@pytest.fixture
def pg_url() -> Iterator[str]:
    """A dedicated database, so killing its backends and closing it cannot disturb any other test."""
    if not PG_URL:
        pytest.skip("XKSMIGRATE_TEST_PG_URL is not set")
    with pg_database(PG_URL) as url:
        yield url


@contextlib.contextmanager
def pg_admin() -> Iterator[Any]:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    assert PG_URL
    engine = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT",
                           poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def terminate_backends(admin: Any, database: str) -> int:
    """pg_terminate_backend every session on `database`, waiting until each is gone; how many there were."""
    from sqlalchemy import text

    rows = admin.execute(text("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                              "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).all()
    return len(rows)


def pg_run_in_window(tmp_path: Path, server: Any, state_url: str) -> tuple[Any, Path, Path, str]:
    proc, out, err = start_cli(cli_args("run", str(plan_file(tmp_path)), server, state_url), tmp_path, "run")
    with Journal.open(state_url) as journal:
        run_id = wait_until("the runner is in the window", in_window(journal), proc)
    return proc, out, err, run_id


@pytest.mark.postgres
def test_a_runner_whose_postgresql_session_dies_makes_no_further_aws_call_and_exits_130(pg_url, start_world,
                                                                                        tmp_path):
    """The database stays up (the pool reconnects at once), but the advisory lock died with the session."""
    from sqlalchemy.engine import make_url

    server = start_world(world_in_window())
    proc, out, err, run_id = pg_run_in_window(tmp_path, server, pg_url)
    try:
        with pg_admin() as admin:
            assert terminate_backends(admin, str(make_url(pg_url).database)) >= 1
        seen = len(read_world_log(server))
        advance_world(server, LONG)  # a runner that went on would now UpdateCustomKeyStore

        code = wait_exit(proc, err)

        after = read_world_log(server)[seen:]
        assert mutating(after) == [], after
        assert aws_calls(after).count("DescribeCustomKeyStores") <= 1 and set(aws_calls(after)) <= {
            "DescribeCustomKeyStores"}  # at most the one already past its lock check
        # Which failure the runner meets first is a race: its lock check finding the advisory lock gone, or
        # the read of the lock row on the killed connection failing (the journal stop); both stop it here.
        summary = assert_stopped_in_window(code, out, err, run_id,
                                           says=("lost the PostgreSQL session", "terminating connection"))
        with Journal.open(pg_url) as journal:
            notes = [e for e in journal.events(run_id) if e.outcome == "lock_lost"]
            if "lost the PostgreSQL session" in summary["message"]:
                assert len(notes) == 1 and "xksmigrate resume" in notes[0].detail["message"]
                assert journal.get_run(run_id).outcome == "interrupted"
            else:  # the journal stop writes nothing more: the run is left as the journal last said
                assert notes == [] and journal.get_run(run_id).outcome in ("running", "interrupted")
        assert_resume_finishes(server, tmp_path, pg_url, run_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.postgres
def test_postgresql_unreachable_mid_window_exits_130_with_a_summary_and_resume_finishes(pg_url, start_world,
                                                                                       tmp_path):
    from sqlalchemy.engine import make_url

    server = start_world(world_in_window())
    database = str(make_url(pg_url).database)
    proc, out, err, run_id = pg_run_in_window(tmp_path, server, pg_url)
    try:
        with pg_admin() as admin:
            admin.exec_driver_sql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
            try:
                assert terminate_backends(admin, database) >= 1
                seen = len(read_world_log(server))
                advance_world(server, LONG)

                code = wait_exit(proc, err)  # the database stays unreachable until the runner has exited

                after = read_world_log(server)[seen:]
            finally:
                admin.exec_driver_sql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        assert mutating(after) == [], after
        assert set(aws_calls(after)) <= {"DescribeCustomKeyStores"} and len(aws_calls(after)) <= 1, after
        # Whichever noticed first, the reason is the database's: a journal write or a reconnect is refused
        # ("not currently accepting connections"), or the lock check before a call finds its session terminated
        # by the administrator (the lock is gone with it). Both are true; which comes first is a race.
        assert_stopped_in_window(code, out, err, run_id, says=("is not currently accepting connections",
                                                               "lost the PostgreSQL session holding"))
        assert_resume_finishes(server, tmp_path, pg_url, run_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
