"""Schema evolution: a journal written at an older Alembic revision is upgraded on first open and stays resumable.

Revision 0002 (an index on runs(started_at, id)) is the first upgrade real journals meet. The old journal
is made the way an older xksmigrate made it: the schema migrated only up to 0001, then a runner that opens
it WITHOUT upgrading (0002 changes no table shape, so today's writer is exactly the 0001-era writer) starts
the migration in a separate process and is SIGKILLed while the key store is CONNECTING, in the middle of the
disconnected window. `xksmigrate resume` (the real script) must then upgrade the schema under the lock and
complete the run against the same rehearsal world, with every event written before the upgrade intact.
Runs on SQLite and PostgreSQL (the `journal_url` fixture).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import REPO, example_plan, load_world, mutating_calls, read_world_log
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from migrator.journal.db import MIGRATIONS_DIR, dumps, parse_url, sqlite_engine
from migrator.journal.repository import Journal

_SCRIPT = Path(sys.executable).with_name("xksmigrate")
XKSMIGRATE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "migrator.cli"]
HEAD = "0002"
TIME_SCALE = 20.0
STORE = "cks-1234567890abcdef0"


def _engines(url: str) -> tuple[Any, Any, Any, str]:
    """(engine, lock engine, parsed URL, backend) exactly as Journal.open builds them, but no migration."""
    parsed, backend = parse_url(url)
    if backend == "sqlite":
        return sqlite_engine(parsed), None, parsed, backend
    engine = create_engine(parsed, pool_pre_ping=True, json_serializer=dumps)
    lock_engine = create_engine(parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    return engine, lock_engine, parsed, backend


def migrate_to(url: str, revision: str, direction: str = "upgrade") -> None:
    from alembic import command
    from alembic.config import Config

    engine, lock_engine, _, _ = _engines(url)
    with engine.connect() as conn, conn.begin():
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        getattr(command, direction)(config, revision)
    engine.dispose()
    if lock_engine is not None:
        lock_engine.dispose()


def sql(url: str, statement: str) -> list[Any]:
    engine, _, _, _ = _engines(url)
    with engine.connect().execution_options(journal_read=True) as conn:
        rows = conn.execute(text(statement)).all()
    engine.dispose()
    return rows


def revision(url: str) -> str:
    return sql(url, "SELECT version_num FROM xksmigrate_schema_version")[0][0]


def run_indexes(url: str) -> set[str]:
    engine, _, _, _ = _engines(url)
    try:
        return {ix["name"] for ix in inspect(engine).get_indexes("runs")}
    finally:
        engine.dispose()


def _old_runner(url: str, endpoint_url: str, ca_bundle: str, region: str) -> None:
    """A runner on the 0001 schema: the journal opened without upgrading, then the whole forward path."""
    sys.path.insert(0, str(Path(__file__).parent))
    from types import SimpleNamespace

    from engine_helpers import example_plan, vantage_resolver

    from migrator.aws.clients import ClientFactory
    from migrator.aws.secret_refs import resolve_secret
    from migrator.dryrun import DUMMY_CREDENTIALS
    from migrator.engine import runner as engine
    from migrator.engine.clock import Clock
    from migrator.engine.environment import Environment

    journal = Journal(*_engines(url))
    assert journal.schema_revision() == "0001"
    clients = ClientFactory(region=region, endpoint_url=endpoint_url, credentials=dict(DUMMY_CREDENTIALS))
    env = Environment(journal=journal, clients=clients, clock=Clock(TIME_SCALE), approve=lambda question: True,
                      secret_resolver=lambda ref: resolve_secret(ref, client_factory=clients), who="old-runner",
                      extra_roots_pem=[Path(ca_bundle).read_bytes()],
                      resolve=vantage_resolver(SimpleNamespace(endpoint_url=endpoint_url)))
    engine.start(example_plan("public-to-vpc"), env)


def _store_state(server: Any) -> str:
    with urllib.request.urlopen(f"{server.endpoint_url}/_rehearsal/state", timeout=10) as response:
        state = json.loads(response.read())
    return next(s["state"] for s in state["keystores"] if s["id"] == STORE)


def _advance_world(server: Any, seconds: float) -> None:
    request = urllib.request.Request(f"{server.endpoint_url}/_rehearsal/clock", method="POST",
                                     data=json.dumps({"advance": seconds}).encode())
    urllib.request.urlopen(request, timeout=10).read()


def _events(url: str, run_id: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in sql(url, "SELECT seq, kind, from_state, to_state, operation, outcome FROM events "
                                       f"WHERE run_id = '{run_id}' ORDER BY seq")]


@pytest.mark.slow
def test_a_journal_left_mid_window_by_schema_0001_is_upgraded_and_resumed(journal_url, start_world, tmp_path):
    # Connecting takes 6000 simulated seconds (5 real minutes): the runner is surely killed while CONNECTING.
    server = start_world(load_world("public-to-vpc", time_scale=TIME_SCALE, disconnect=10.0, connect=6000.0))
    migrate_to(journal_url, "0001")
    assert revision(journal_url) == "0001" and "ix_runs_started" not in run_indexes(journal_url)

    runner = multiprocessing.get_context("spawn").Process(
        target=_old_runner, args=(journal_url, server.endpoint_url, server.ca_bundle_path, server.world.region))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while _store_state(server) != "CONNECTING":
            assert runner.is_alive() and time.monotonic() < deadline, "the old runner never reached CONNECTING"
            time.sleep(0.05)
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.join(30)

    # What the 0001-era runner left: a running run, one migration mid-window, schema still 0001.
    assert revision(journal_url) == "0001"
    (run_id, outcome), = sql(journal_url, "SELECT id, outcome FROM runs")
    (state, disconnected_at), = sql(journal_url, "SELECT state, disconnected_at FROM migrations")
    assert outcome == "running" and state == "connecting" and disconnected_at is not None
    before = _events(journal_url, run_id)
    assert [e[3] for e in before if e[1] == "transition"][-1] == "connecting"

    _advance_world(server, 6000.0)  # the connect KMS started before the crash finishes meanwhile
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAREHEARSAL0000000", "AWS_SECRET_ACCESS_KEY": "rehearsal",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env.pop("XKSMIGRATE_DEBUG", None)
    proc = subprocess.run([*XKSMIGRATE, "resume", run_id, "--yes", "--json", "--state", journal_url,
                           "--endpoint-url", server.endpoint_url], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr)
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["outcome"] == "completed", summary

    # Upgraded by that first open, and the run completed on top of the old rows.
    assert revision(journal_url) == HEAD and "ix_runs_started" in run_indexes(journal_url)
    with Journal.open(journal_url) as journal:
        run = journal.get_run(run_id)
        assert run.outcome == "completed" and run.migrations[0].state == "completed"
        assert run.migrations[0].disconnected_at == disconnected_at
    after = _events(journal_url, run_id)
    assert after[:len(before)] == before
    assert [e[0] for e in after] == list(range(1, len(after) + 1))
    assert [e[3] for e in after[len(before):] if e[1] == "transition"] == ["connected", "verifying", "completed"]
    # AWS agrees: one disconnect, one update, one connect in all (resume re-observed, did not redo).
    assert mutating_calls(read_world_log(server)) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                                      "ConnectCustomKeyStore"]
    live = server.world_state.snapshot()["keystores"][0]
    target = example_plan("public-to-vpc").keystores[0].target
    assert (live["state"], live["connectivity"], live["uri_endpoint"]) == (
        "CONNECTED", target.connectivity, target.uri_endpoint)


def _open(url: str, start: float) -> None:
    while time.time() < start:
        time.sleep(0.005)
    Journal.open(url).close()


@pytest.mark.slow
def test_concurrent_first_opens_of_an_old_journal_upgrade_it_once(journal_url):
    migrate_to(journal_url, "0001")
    old = Journal(*_engines(journal_url))
    run_id = old.create_run(plan_name="p", plan_path="p.toml", plan_text="x", plan_fingerprint="f" * 64,
                            region="us-east-1")
    mid = old.add_migration(run_id, STORE, {"connectivity": "VPC_ENDPOINT_SERVICE"})
    old.transition(mid, "snapshotted")
    old.close()

    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 2.0
    openers = [ctx.Process(target=_open, args=(journal_url, start)) for _ in range(3)]
    for p in openers:
        p.start()
    for p in openers:
        p.join(120)
    assert [p.exitcode for p in openers] == [0, 0, 0]
    assert revision(journal_url) == HEAD and "ix_runs_started" in run_indexes(journal_url)
    with Journal.open(journal_url) as journal:
        assert [r.id for r in journal.list_runs()] == [run_id]
        assert [e.to_state for e in journal.events(run_id)] == ["snapshotted"]


def test_models_match_the_migrations_and_0002_downgrades_cleanly(journal_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from migrator.journal.models import VERSION_TABLE, metadata

    Journal.open(journal_url).close()
    engine, _, _, _ = _engines(journal_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)] == []

    migrate_to(journal_url, "0001", direction="downgrade")
    assert revision(journal_url) == "0001" and "ix_runs_started" not in run_indexes(journal_url)
    with Journal.open(journal_url) as journal:
        assert journal.schema_revision() == HEAD
    assert "ix_runs_started" in run_indexes(journal_url)


def test_head_is_what_the_tests_expect():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == HEAD
    assert (REPO / "migrator" / "journal" / "migrations" / "versions" / "0002_runs_started_index.py").exists()
