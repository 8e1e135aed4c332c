"""Journal on SQLite and (with XKSMIGRATE_TEST_PG_URL) PostgreSQL: runs, events, transitions, locks, schema."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from migrator.aws.secret_refs import SecretValue
from migrator.journal.repository import HolderAlive, Journal, JournalError, LockHeld, LockLost

REPO = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("XKSMIGRATE_TEST_PG_URL")
CANARY = "CANARYcanary0123456789/+=CANARYcanary0123456789"


def _admin_engine():
    return create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT",
                         poolclass=NullPool)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    """A fresh journal URL: a file under tmp_path, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state/journal.db"
        return
    if not PG_URL:
        pytest.skip("XKSMIGRATE_TEST_PG_URL is not set")
    name = f"xkstest_{secrets.token_hex(5)}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def journal(url):
    j = Journal.open(url)
    yield j
    j.close()


def new_run(j: Journal, **kw) -> str:
    args = dict(plan_name="p", plan_path="plans/p.toml", plan_text="[plan]\n", plan_fingerprint="ab" * 32,
                region="us-east-1")
    return j.create_run(**{**args, **kw})


def sql(url: str, statement: str, **params):
    u = make_url(url)
    engine = create_engine(u.set(drivername="postgresql+psycopg") if u.drivername == "postgresql" else u,
                           poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else result.rowcount
    finally:
        engine.dispose()


def python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# --- runs, migrations, events -----------------------------------------------------------------


def test_run_lifecycle(journal):
    run_id = new_run(journal, account_id="111122223333", dry_run=True, options={"yes": True}, who="alice")
    assert run_id.startswith("run-") and len(run_id) == len("run-20261128-160501-3fa2")
    m1 = journal.add_migration(run_id, "cks-1234567890abcdef0", {"connectivity": "VPC_ENDPOINT_SERVICE"})
    m2 = journal.add_migration(run_id, "ledger", {"connectivity": "PUBLIC_ENDPOINT"})
    run = journal.get_run(run_id)
    assert (run.outcome, run.dry_run, run.who, run.account_id, run.options) == ("running", True, "alice",
                                                                                  "111122223333", {"yes": True})
    assert [m.id for m in run.migrations] == [m1, m2] and run.migrations[0].state == "pending"
    assert run.migrations[1].target == {"connectivity": "PUBLIC_ENDPOINT"} and run.migrations[1].api_calls == {}
    journal.finish_run(run_id, "interrupted", 130)
    run = journal.get_run(run_id)
    assert (run.outcome, run.exit_code) == ("interrupted", 130) and run.finished_at >= run.started_at
    journal.reopen_run(run_id)
    run = journal.get_run(run_id)
    assert (run.outcome, run.exit_code, run.finished_at) == ("running", None, None)
    with pytest.raises(ValueError, match="unknown run outcome"):
        journal.finish_run(run_id, "great", 0)
    with pytest.raises(JournalError, match=r"^no run run-x in "):
        journal.get_run("run-x")


def test_events_seq_and_paging(journal):
    run_id = new_run(journal)
    other = new_run(journal)
    mid = journal.add_migration(run_id, "cks-1", {})
    seqs = [journal.record(run_id, kind="call", migration_id=mid, operation="DescribeCustomKeyStores",
                           request_id=f"req-{i}", outcome="ok", detail={"i": i, "when": [1, 2]}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5] and journal.record(other, kind="note") == 1
    evs = journal.events(run_id)
    assert [e.seq for e in evs] == seqs and evs[2].request_id == "req-2" and evs[2].detail == {"i": 2, "when": [1, 2]}
    assert all(a.at <= b.at for a, b in itertools.pairwise(evs))
    assert [e.seq for e in journal.events(run_id, after_seq=3)] == [4, 5]
    assert [e.seq for e in journal.events(run_id, after_seq=1, limit=2)] == [2, 3]
    with pytest.raises(ValueError, match="unknown event kind"):
        journal.record(run_id, kind="gossip")
    with pytest.raises(JournalError, match="no run"):
        journal.record("run-nope", kind="note")
    assert not hasattr(journal, "delete_event") and not hasattr(journal, "update_event")


def test_transition_is_one_transaction(journal, monkeypatch):
    run_id = new_run(journal)
    mid = journal.add_migration(run_id, "cks-1", {})
    seq = journal.transition(mid, "snapshotted", snapshot={"Connectivity": "PUBLIC_ENDPOINT"}, keystore_id="cks-1",
                             operation="DescribeCustomKeyStores", request_id="r1", detail={"why": "start"})
    ev = journal.events(run_id)[-1]
    assert (seq, ev.kind, ev.from_state, ev.to_state, ev.request_id, ev.migration_id) == (
        1, "transition", "pending", "snapshotted", "r1", mid)
    m = journal.get_run(run_id).migrations[0]
    assert (m.state, m.snapshot, m.keystore_id) == ("snapshotted", {"Connectivity": "PUBLIC_ENDPOINT"}, "cks-1")

    def broken_append(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Journal, "_append", broken_append)
    with pytest.raises(RuntimeError):
        journal.transition(mid, "preflighted", error="half-written?")
    monkeypatch.undo()
    m = journal.get_run(run_id).migrations[0]
    assert (m.state, m.error) == ("snapshotted", None) and len(journal.events(run_id)) == 1
    with pytest.raises(TypeError, match="not a migration field"):
        journal.transition(mid, "preflighted", colour="red")
    assert journal.transition(mid, "preflighted") == 2


def test_update_and_bump(journal):
    run_id = new_run(journal)
    mid = journal.add_migration(run_id, "cks-1", {"a": 1})
    journal.update_migration(mid, disconnected_at=123.5, target={"b": 2}, attempts={"connect": 1})
    for _ in range(3):
        journal.bump(mid, "DescribeCustomKeyStores")
    journal.bump(mid, "connect", field="attempts", by=2)
    m = journal.get_run(run_id).migrations[0]
    assert m.target == {"b": 2} and m.disconnected_at == 123.5
    assert m.api_calls == {"DescribeCustomKeyStores": 3} and m.attempts == {"connect": 3}
    with pytest.raises(TypeError):
        journal.update_migration(mid, id=5)
    with pytest.raises(ValueError):
        journal.bump(mid, "x", field="state")
    with pytest.raises(JournalError):
        journal.update_migration(9999, state="x")


def test_json_accepts_boto3_datetimes(journal):
    import datetime as dt

    run_id = new_run(journal)
    mid = journal.add_migration(run_id, "cks-1", {})
    journal.update_migration(mid, snapshot={"CreationDate": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)})
    assert journal.get_run(run_id).migrations[0].snapshot == {"CreationDate": "2026-01-02T00:00:00+00:00"}


def test_list_latest_unfinished(journal):
    assert journal.latest_unfinished_run() is None and journal.list_runs() == []
    a = new_run(journal, account_id="111122223333")
    time.sleep(0.01)
    b = new_run(journal, region="eu-west-1")
    time.sleep(0.01)
    c = new_run(journal)
    journal.finish_run(c, "completed", 0)
    journal.finish_run(a, "interrupted", 130)
    assert [r.id for r in journal.list_runs()] == [c, b, a] and [r.id for r in journal.list_runs(limit=1)] == [c]
    assert journal.latest_unfinished_run().id == b
    assert [r.id for r in journal.unfinished_runs("us-east-1")] == [a]
    assert [r.id for r in journal.unfinished_runs("us-east-1", "111122223333")] == [a]
    assert journal.unfinished_runs("us-east-1", "999988887777") == []
    assert [r.id for r in journal.unfinished_runs("eu-west-1", "999988887777")] == [b]  # no account recorded


def test_secret_values_are_refused(journal, url):
    secret = SecretValue(CANARY, "env:X")
    run_id = new_run(journal)
    mid = journal.add_migration(run_id, "cks-1", {})
    attempts = [
        lambda: journal.record(run_id, kind="note", detail={"deep": [{"x": secret}]}),
        lambda: journal.update_migration(mid, target={"credential": secret}),
        lambda: journal.transition(mid, "updating", detail={"s": (secret,)}),
        lambda: journal.add_migration(run_id, "cks-2", {"s": secret}),
        lambda: new_run(journal, options={"secret": secret}),
    ]
    for attempt in attempts:
        with pytest.raises(TypeError, match="SecretValue"):
            attempt()
    assert journal.events(run_id) == [] and journal.get_run(run_id).migrations[0].state == "pending"
    if url.startswith("sqlite"):
        db = Path(make_url(url).database)
        assert all(CANARY.encode() not in p.read_bytes() for p in db.parent.iterdir())


# --- concurrency --------------------------------------------------------------------------------


def _record_many(url: str, run_id: str, count: int, start: float) -> None:
    j = Journal.open(url)
    while time.time() < start:
        time.sleep(0.005)
    for i in range(count):
        j.record(run_id, kind="note", detail={"pid": os.getpid(), "i": i})
    j.close()


@pytest.mark.slow
def test_concurrent_record_keeps_seq_unique_and_gap_free(journal, url):
    run_id = new_run(journal)
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 2.0
    procs = [ctx.Process(target=_record_many, args=(url, run_id, 40, start)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    evs = journal.events(run_id)
    assert [e.seq for e in evs] == list(range(1, 81))
    assert len({e.detail["pid"] for e in evs}) == 2


def _open_only(url: str, start: float) -> None:
    while time.time() < start:
        time.sleep(0.005)
    Journal.open(url).close()


@pytest.mark.slow
def test_concurrent_first_open_migrates_once(url):
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 2.0
    procs = [ctx.Process(target=_open_only, args=(url, start)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Journal.open(url) as j:
        assert j.schema_revision() == "0002"


# --- schema -------------------------------------------------------------------------------------


def test_schema_applied_once_and_reopen_is_a_no_op(url, monkeypatch):
    with Journal.open(url) as j:
        assert j.schema_revision() == "0002"
        new_run(j)
    import alembic.command

    def no_upgrade(*_a, **_k):
        raise AssertionError("re-open must not run migrations")

    monkeypatch.setattr(alembic.command, "upgrade", no_upgrade)
    with Journal.open(url) as j:
        assert len(j.list_runs()) == 1
    sql(url, "UPDATE xksmigrate_schema_version SET version_num = '9999'")
    monkeypatch.undo()
    with pytest.raises(JournalError, match=r"schema \(9999\) is newer than this xksmigrate"):
        Journal.open(url)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [("state/xksmigrate.db", "bad journal URL 'state/xksmigrate.db'.*did you mean sqlite:///state/xksmigrate.db"),
     ("mysql://u@h/db", "unsupported journal driver 'mysql'"),
     ("postgresql+psycopg2://u:hunter2@h/db", r"unsupported journal driver 'postgresql\+psycopg2'"),
     ("postgresql://u:hunter2@127.0.0.1:1/db", "cannot open the journal postgresql\\+psycopg://u:\\*\\*\\*@127.0.0.1:1/db"),
     ("://", "bad journal URL")],
)
def test_bad_urls(bad, reason):
    with pytest.raises(JournalError, match=reason) as info:
        Journal.open(bad)
    assert "\n" not in str(info.value) and "hunter2" not in str(info.value)


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="cannot create the journal directory") as info:
        Journal.open(f"sqlite:///{blocker}/state/j.db")
    assert "\n" not in str(info.value)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(JournalError, match="is not writable"):
            Journal.open(f"sqlite:///{ro}/j.db")


def test_url_for_display_masks_password(tmp_path):
    with Journal.open(f"sqlite:///{tmp_path}/j.db") as j:
        assert j.url_for_display == f"sqlite:///{tmp_path}/j.db"
    if PG_URL:
        u = make_url(PG_URL).set(password="hunter2")
        try:
            with Journal.open(u.render_as_string(hide_password=False)) as j:  # trust auth takes any password
                shown = j.url_for_display
        except JournalError as exc:
            shown = str(exc)
        assert "hunter2" not in shown and "***" in shown


# --- locks --------------------------------------------------------------------------------------

HOLD = """
import sys, time
from migrator.journal.repository import Journal, LockHeld
j = Journal.open(sys.argv[1])
try:
    lock = j.acquire_lock(sys.argv[2], run_id="run-child", owner="child")
    print("won", lock.id, flush=True)
except LockHeld as exc:
    print("held", str(exc), flush=True)
sys.stdin.read()
"""


def test_lock_held_heartbeat_release(journal, url):
    run_id = new_run(journal)
    lock = journal.acquire_lock("cks-1234567890abcdef0", run_id=run_id, owner="alice")
    assert lock.id.startswith("lock-") and lock.reclaimed_from is None and lock.owner == "alice"
    assert journal.list_locks() == [lock]
    with Journal.open(url) as other, pytest.raises(LockHeld) as info:
        other.acquire_lock("cks-1234567890abcdef0", run_id="run-2")
    message = str(info.value)
    assert info.value.holder.id == lock.id and not info.value.stale
    assert message.startswith(f"key store cks-1234567890abcdef0 is locked by {lock.id} (owner alice, host "
                              f"{lock.host}, pid {os.getpid()}, run {run_id}, heartbeat ")
    assert message.endswith(f"s ago); if that runner is gone: xksmigrate unlock {lock.id}")
    time.sleep(0.01)
    journal.heartbeat(lock)
    assert journal.list_locks()[0].heartbeat_at > lock.heartbeat_at
    other_lock = journal.acquire_lock("cks-other", run_id=run_id)
    journal.release_lock(lock)
    assert journal.list_locks() == [other_lock]
    with Journal.open(url) as other:
        again = other.acquire_lock("cks-1234567890abcdef0", run_id="run-2")
        other.release_lock(again)


def test_force_unlock_and_lock_lost(journal):
    lock = journal.acquire_lock("cks-1", run_id="run-1")
    assert journal.force_unlock("lock-nope") is None
    with pytest.raises(HolderAlive, match=f"{lock.id} is held by a runner that is still alive"):
        journal.force_unlock(lock.id)  # its holder (this process) is running
    assert journal.list_locks() == [lock]
    assert journal.force_unlock(lock.id, force=True).id == lock.id and journal.list_locks() == []
    with pytest.raises(LockLost, match="is gone"):
        journal.heartbeat(lock)
    journal.release_lock(lock)  # idempotent


def test_unlock_is_refused_while_the_holder_lives_and_allowed_once_it_is_gone(journal, url):
    """SQLite sees the holder's pid on this host; PostgreSQL sees its session's advisory lock."""
    proc = python(HOLD, url, "cks-alive")
    try:
        first = proc.stdout.readline().split()
        assert first[0] == "won", proc.stderr.read() if first[:1] != ["won"] else ""
        lock_id = first[1]
        with pytest.raises(HolderAlive) as alive:
            journal.force_unlock(lock_id)
        assert f"pid {proc.pid}" in str(alive.value) and f"unlock --force {lock_id}" in str(alive.value)
        assert [lk.id for lk in journal.list_locks()] == [lock_id]
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10  # PostgreSQL ends the dead client's session as soon as it sees the EOF
    while True:
        try:
            removed = journal.force_unlock(lock_id)
            break
        except HolderAlive:
            assert time.monotonic() < deadline, "the killed holder still counts as alive"
            time.sleep(0.05)
    assert removed.id == lock_id and journal.list_locks() == []


def test_stale_heartbeat_is_reported_not_taken(journal, url):
    proc = python(HOLD, url, "cks-stale")
    try:
        first = proc.stdout.readline().split()
        assert first[0] == "won", proc.stderr.read() if first[:1] != ["won"] else ""
        sql(url, "UPDATE locks SET heartbeat_at = heartbeat_at - 300")
        with pytest.raises(LockHeld) as info:
            journal.acquire_lock("cks-stale", run_id="run-2")
        assert info.value.stale and "stale" in str(info.value) and info.value.holder.id == first[1]
        assert [lk.id for lk in journal.list_locks()] == [first[1]]
    finally:
        proc.stdin.close()
        proc.wait(30)


@pytest.mark.slow
def test_killed_holder_lock_is_taken_over(journal, url):
    """SQLite: the dead pid on this host is reclaimed. PostgreSQL: the advisory lock died with the session."""
    proc = python(HOLD, url, "cks-kill")
    first = proc.stdout.readline().split()
    assert first[0] == "won"
    with pytest.raises(LockHeld):
        journal.acquire_lock("cks-kill", run_id="run-2")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    deadline = time.time() + 15
    while True:  # PostgreSQL notices the closed socket within moments
        try:
            lock = journal.acquire_lock("cks-kill", run_id="run-2")
            break
        except LockHeld:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    assert lock.reclaimed_from == first[1] and [lk.id for lk in journal.list_locks()] == [lock.id]


def test_sqlite_live_pid_on_other_host_is_not_reclaimed(tmp_path):
    url = f"sqlite:///{tmp_path}/j.db"
    with Journal.open(url) as j:
        j.acquire_lock("cks-1", run_id="r")
        sql(url, "UPDATE locks SET host = 'elsewhere', pid = 999999")
        with pytest.raises(LockHeld) as info:
            j.acquire_lock("cks-1", run_id="r2")
        assert "host elsewhere, pid 999999" in str(info.value)


@pytest.mark.slow
def test_ten_concurrent_runners_one_winner(url):
    Journal.open(url).close()  # schema first, so the race is about the lock
    procs = [python(HOLD, url, "cks-race") for _ in range(10)]
    try:
        lines = [p.stdout.readline() for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(60)
    results = [line.split(" ", 1) for line in lines]
    assert all(r[0] in ("won", "held") for r in results), lines
    winners = [r[1].strip() for r in results if r[0] == "won"]
    assert len(winners) == 1, lines
    assert all(winners[0] in r[1] for r in results if r[0] == "held")


def test_new_journals_opened_from_several_threads_at_once_all_reach_the_schema(tmp_path):
    """Alembic's migration context is process-global; upgrades in one process take turns (it crashed the
    interpreter before they did). Run in a child so a crash fails this test, not the test worker."""
    script = textwrap.dedent(f"""
        from concurrent.futures import ThreadPoolExecutor
        from migrator.journal.repository import Journal

        def open_one(i):
            journal = Journal.open("sqlite:///{tmp_path}/j%d.db" % i)
            try:
                return journal.create_run(plan_name="p", plan_path="p.toml", plan_text="", plan_fingerprint="f",
                                          region="us-east-1", who="t")
            finally:
                journal.close()

        with ThreadPoolExecutor(8) as pool:
            print(len(set(pool.map(open_one, range(16)))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "16"), done.stderr[-2000:]
