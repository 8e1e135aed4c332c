"""Takeover (issue 16): a fleet process SIGKILLed in the middle of a store's window, and another one goes on.

The world is derived from the fleet file and served on loopback by this test process, so it outlives every tool
process; `fleet run` and `fleet worker` are real processes sharing a PostgreSQL journal (and DBOS state in it).
Whichever of them drives the canary is SIGKILLed right after the world saw its disconnect; the other notices
the death (its liveness lock is free: fleet/workers.py), requeues the dead one's work, and continues the
canary's run from its journal. The world's log says every side effect happened once; the journal's window
counts from the first disconnect, across the takeover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import CLI, MUTATING, kill_leftovers, pg_database, spawn, tool_env
from engine_helpers import PG_URL, read_world_log
from test_fleet_run import STORES, small_fleet

from migrator.fleet.spec import load_fleet
from migrator.fleet.stores import store_run_id
from migrator.journal.repository import Journal
from migrator.rehearsal.world.derive import world_for_plan

pytestmark = pytest.mark.slow
CANARY = STORES["a"]
SCALE = 60.0


@pytest.fixture(autouse=True)
def _no_leftovers() -> Any:
    yield
    kill_leftovers()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/journal.db"
        return
    if not PG_URL:
        pytest.skip("XKSMIGRATE_TEST_PG_URL is not set")
    with pg_database(PG_URL) as url:
        yield url


def wait_until(what: str, check: Callable[[], Any], timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def canary_disconnected(server: Any) -> bool:
    return any(e.get("kind") == "call" and e.get("operation") == "DisconnectCustomKeyStore" and not e.get("error")
               and e.get("keystore") == CANARY for e in read_world_log(server))


def fleet_status(state: str, fleet_id: str) -> dict[str, Any]:
    done = subprocess.run([*CLI, "fleet", "status", fleet_id, "--json", "--state", state], env=tool_env(),
                          text=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return next((line for line in lines if line.get("type") == "fleet_summary"), {})


def serve_fleet_world(start_world: Callable[..., Any], fleet_file: Path) -> Any:
    return start_world(world_for_plan(tomllib.loads(load_fleet(fleet_file).whole.text), {}, time_scale=SCALE))


def run_until_the_canary_is_out(tmp_path: Path, start_world: Callable[..., Any],
                                state: str) -> tuple[Any, Any, dict[str, Any]]:
    """A small fleet's world served here, `fleet run` against it as a process, returned once the world saw the
    canary's disconnect: (the world's server, the process, its fleet_start line)."""
    fleet_file = small_fleet(tmp_path, bake="0s")
    server = serve_fleet_world(start_world, fleet_file)
    runner = spawn(["fleet", "run", str(fleet_file), "--yes", "--json", "--endpoint-url", server.endpoint_url,
                    "--time-scale", f"{SCALE:g}", "--state", state], tmp_path, "run")
    start = runner.wait_for_line(lambda line: line.get("type") == "fleet_start")
    assert start is not None, runner.err.read_text()[-2000:]
    wait_until("the canary's disconnect", lambda: canary_disconnected(server))
    return server, runner, start


def assert_taken_over_once(server: Any, state: str, fleet_id: str) -> None:
    """The fleet completed; the canary's disconnect, update and connect each happened once; its journal run was
    resumed and its window spans the world's own, from the first disconnect to CONNECTED again."""
    summary = wait_until("the fleet ends", lambda: (s := fleet_status(state, fleet_id)).get("dbos_status") == "SUCCESS"
                         and s)
    assert (summary["outcome"], summary["exit_code"]) == ("completed", 0), summary["message"]
    log = read_world_log(server)
    changes = [e["operation"] for e in log if e.get("kind") == "call" and e.get("operation") in MUTATING
               and e.get("keystore") == CANARY and not e.get("error")]
    assert changes == list(MUTATING)  # disconnect, update, connect: once each, in order
    journal = Journal.open(state)
    try:
        run_id = store_run_id(fleet_id, CANARY)
        notes = [e.detail.get("message") for e in journal.events(run_id) if e.kind == "note"]
        assert "resumed" in notes
        canary = next(ks for ks in summary["keystores"] if ks["ref"] == CANARY)
        down = min(e["t"] for e in log if e.get("operation") == "DisconnectCustomKeyStore"
                   and e.get("keystore") == CANARY and e.get("kind") == "call")
        up = min(e["t"] for e in log if e.get("kind") == "state" and e.get("keystore") == CANARY
                 and e.get("to") == "CONNECTED" and e["t"] > down)
        assert canary["window_seconds"] >= (up - down) - 10.0  # one poll interval of slack, never a fresh start
    finally:
        journal.close()


@pytest.mark.postgres
def test_a_worker_killed_mid_window_is_taken_over_by_the_other(tmp_path: Path, start_world: Callable[..., Any]) -> None:
    if not PG_URL:
        pytest.skip("XKSMIGRATE_TEST_PG_URL is not set")
    fleet_file = small_fleet(tmp_path, bake="0s")
    server = serve_fleet_world(start_world, fleet_file)
    with pg_database(PG_URL) as state:
        worker = spawn(["fleet", "worker", "--json", "--state", state], tmp_path, "worker")
        runner = spawn(["fleet", "run", str(fleet_file), "--yes", "--json", "--endpoint-url", server.endpoint_url,
                        "--time-scale", f"{SCALE:g}", "--state", state], tmp_path, "run")
        start = runner.wait_for_line(lambda line: line.get("type") == "fleet_start")
        assert start is not None, runner.err.read_text()[-2000:]
        fleet_id = start["fleet_id"]
        wait_until("the canary's disconnect", lambda: canary_disconnected(server))
        journal = Journal.open(state)
        victim_pid = journal.get_run(store_run_id(fleet_id, CANARY)).pid  # the process driving the canary
        journal.close()
        assert victim_pid in (worker.popen.pid, runner.popen.pid)
        os.kill(victim_pid, signal.SIGKILL)
        survivor = runner if victim_pid == worker.popen.pid else worker
        assert_taken_over_once(server, state, fleet_id)
        took = [line for line in survivor.lines() if line.get("type") == "fleet_takeover"]
        assert took and took[0]["dead"].endswith(f":{victim_pid}")
        if survivor is runner:
            assert runner.wait() == 0


def test_a_fleet_whose_every_process_died_resumes(tmp_path: Path, start_world: Callable[..., Any],
                                                  state_url: str) -> None:
    server, runner, start = run_until_the_canary_is_out(tmp_path, start_world, state_url)
    runner.popen.send_signal(signal.SIGKILL)
    runner.wait()
    resumed = subprocess.run([*CLI, "fleet", "resume", "--json", "--state", state_url], env=tool_env(), text=True,
                             capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert_taken_over_once(server, state_url, start["fleet_id"])


def test_a_fleet_run_stopped_by_sigterm_says_how_to_go_on_and_resumes(tmp_path: Path,
                                                                     start_world: Callable[..., Any]) -> None:
    state = f"sqlite:///{tmp_path}/journal.db"
    server, runner, start = run_until_the_canary_is_out(tmp_path, start_world, state)
    runner.popen.send_signal(signal.SIGTERM)
    assert runner.wait() == 130
    said = [line for line in runner.lines() if line.get("type") == "fleet_interrupted"]
    assert said and f"xksmigrate fleet resume {start['fleet_id']}" in said[0]["message"]
    resumed = subprocess.run([*CLI, "fleet", "resume", start["fleet_id"], "--json", "--state", state], env=tool_env(),
                             text=True, capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert_taken_over_once(server, state, start["fleet_id"])
