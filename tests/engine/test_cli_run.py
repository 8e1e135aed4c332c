"""`xksmigrate run`, `status` and `history` as an operator runs them: real subprocesses, exit codes, output.

A preflight block exits 3 and changes nothing; `--json` is NDJSON (a version line first, a summary
line last); `status RUN_ID` and `history` show the outcome and the disconnected window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import MUTATING, REPO, mutating_calls, read_world_log, roomy_plan_file

from migrator.aws.kms import KmsApplier

pytestmark = pytest.mark.slow  # CLI processes or whole rehearsed migrations per case: the full tier

DATA = Path(__file__).parent / "data"
PLAN = REPO / "plans" / "public-to-vpc.toml"
BAD_WORLD = DATA / "service-without-kms-principal.toml"
STORE = "cks-1234567890abcdef0"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAREHEARSAL0000000", "AWS_SECRET_ACCESS_KEY": "rehearsal",
                **(env or {})}
    full_env.pop("AWS_ENDPOINT_URL", None)
    full_env.pop("XKSMIGRATE_STATE", None)
    return subprocess.run([sys.executable, "-m", "migrator.cli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ndjson(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line parses
    assert lines and lines[0]["type"] == "version", text[:300]
    assert lines[-1]["type"] == "summary", text[-300:]
    return lines


def test_dry_run_blocked_by_preflight_exits_3_and_calls_nothing_that_changes(tmp_path):
    state = f"sqlite:///{tmp_path}/rehearsal.db"
    done = cli("run", str(PLAN), "--dry-run", "--yes", "--json", "--world", str(BAD_WORLD), "--time-scale", "600",
               "--state", state, cwd=tmp_path)

    assert done.returncode == 3, done.stderr
    lines = ndjson(done.stdout)
    summary = lines[-1]
    assert (summary["outcome"], summary["exit_code"]) == ("blocked", 3)
    store = summary["keystores"][0]
    assert "vpc.allowed_principal" in store["error"]
    assert store["disconnected_seconds"] is None
    assert store["final"] == store["original"]  # the last look at the store: unchanged
    # Every HTTP request the tool sent is counted: none of them could change anything.
    sent = {op.split(":", 1)[1] for op in summary["api_calls"]}
    assert "DescribeCustomKeyStores" in sent and not sent & MUTATING
    assert not [e for e in lines if e["type"] == "event" and e["kind"] == "call"]
    blocks = [e["detail"]["check"] for e in lines if e.get("kind") == "finding" and e["outcome"] == "block"]
    assert blocks == ["vpc.allowed_principal"]


def test_real_run_blocked_by_preflight_leaves_the_world_untouched(tmp_path, start_world):
    """The same misconfiguration with the world outside the tool: its own log shows no mutating call."""
    from migrator.aws.clients import ClientFactory
    from migrator.dryrun import DUMMY_CREDENTIALS
    from migrator.rehearsal.world import model

    world = model.load_world_file(BAD_WORLD)
    world.time_scale = 600.0
    server = start_world(world)
    kms = ClientFactory(region=world.region, endpoint_url=server.endpoint_url,
                        credentials=dict(DUMMY_CREDENTIALS)).client("kms")
    before = KmsApplier(kms).describe(STORE)

    done = cli("run", str(PLAN), "--yes", "--endpoint-url", server.endpoint_url, "--time-scale", "600",
               "--state", f"sqlite:///{tmp_path}/journal.db", cwd=tmp_path)

    assert done.returncode == 3, done.stdout + done.stderr
    assert "blocked" in done.stdout and "vpc.allowed_principal" in done.stdout
    log = read_world_log(server)
    assert [e for e in log if e["kind"] == "call" and e["operation"] == "DescribeCustomKeyStores"]
    assert mutating_calls(log) == []
    assert not [e for e in log if e["kind"] == "state"]  # no state change at all
    assert KmsApplier(kms).describe(STORE) == before


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory) -> dict[str, Any]:
    """One completed and one rolled-back rehearsal in one journal, through the CLI."""
    tmp = tmp_path_factory.mktemp("cli")
    state = f"sqlite:///{tmp}/rehearsal.db"
    faults = tmp / "connect-fails.toml"
    faults.write_text('[[faults]]\noperation = "ConnectCustomKeyStore"\n'
                      'connection_error_code = "XKS_PROXY_INVALID_TLS_CONFIGURATION"\ncount = 1\n')
    common = ["--dry-run", "--yes", "--json", "--time-scale", "600", "--state", state]
    plan = roomy_plan_file(tmp)  # at scale 600 the 15-minute budget is half a real second of slack
    completed = cli("run", str(plan), *common, cwd=tmp)
    rolled = cli("run", str(plan), *common, "--faults", str(faults), cwd=tmp)
    return {"state": state, "tmp": tmp, "completed": completed, "rolled_back": rolled}


def test_run_json_is_ndjson_with_the_window_and_the_final_configuration(rehearsed):
    done = rehearsed["completed"]
    assert done.returncode == 0, done.stderr
    lines = ndjson(done.stdout)
    assert lines[0]["command"] == "run"
    assert {e["type"] for e in lines[1:-1]} <= {"event", "progress"}
    summary = lines[-1]
    assert (summary["outcome"], summary["exit_code"]) == ("completed", 0)
    store = summary["keystores"][0]
    assert store["id"] == STORE and store["outcome"] == "completed" and store["simulated"] is True
    assert store["original"]["connectivity"] == "PUBLIC_ENDPOINT"
    assert store["final"]["connectivity"] == "VPC_ENDPOINT_SERVICE"
    assert store["disconnected_seconds"] > 0
    calls = summary["api_calls"]
    assert [calls.get(f"kms:{op}") for op in ("DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                              "ConnectCustomKeyStore")] == [1, 1, 1]

    rolled = rehearsed["rolled_back"]
    assert rolled.returncode == 4, rolled.stderr
    summary = ndjson(rolled.stdout)[-1]
    assert (summary["outcome"], summary["exit_code"]) == ("rolled_back", 4)
    store = summary["keystores"][0]
    assert store["final"] == {k: store["original"][k] for k in store["final"]}
    assert "XKS_PROXY_INVALID_TLS_CONFIGURATION" in store["error"]


@pytest.mark.parametrize("which", ["completed", "rolled_back"])
def test_status_shows_the_outcome_and_the_window(rehearsed, which):
    summary = ndjson(rehearsed[which].stdout)[-1]
    run_id, window = summary["run_id"], summary["keystores"][0]["disconnected_seconds"]

    plain = cli("status", run_id, "--state", rehearsed["state"], cwd=rehearsed["tmp"])
    assert plain.returncode == summary["exit_code"], plain.stderr  # a rollout status: the run's exit code
    first = plain.stdout.splitlines()[0]
    assert run_id in first and which in first
    minutes, seconds = divmod(round(window), 60)
    assert f"{STORE}: {which}  disconnected {minutes}m{seconds:02d}s" in plain.stdout

    as_json = cli("status", run_id, "--json", "--state", rehearsed["state"], cwd=rehearsed["tmp"])
    assert as_json.returncode == summary["exit_code"], as_json.stderr
    lines = ndjson(as_json.stdout)
    assert lines[0]["command"] == "status"
    last = lines[-1]
    assert (last["run_id"], last["outcome"]) == (run_id, which)
    assert last["keystores"][0]["disconnected_seconds"] == window
    assert last["keystores"][0]["outcome"] == which


def test_history_lists_every_run_with_outcome_and_window(rehearsed):
    ids = {which: ndjson(rehearsed[which].stdout)[-1]["run_id"] for which in ("completed", "rolled_back")}

    as_json = cli("history", "--json", "--state", rehearsed["state"], cwd=rehearsed["tmp"])
    assert as_json.returncode == 0, as_json.stderr
    lines = ndjson(as_json.stdout)
    assert lines[0]["command"] == "history"
    runs = {r["run_id"]: r for r in lines[1:-1]}
    assert lines[-1]["runs"] == len(runs) == 2
    for which, run_id in ids.items():
        assert runs[run_id]["outcome"] == which
        assert runs[run_id]["keystores"][0]["disconnected_seconds"] > 0

    plain = cli("history", "--state", rehearsed["state"], cwd=rehearsed["tmp"])
    assert plain.returncode == 0, plain.stderr
    for which, run_id in ids.items():
        row = next(line for line in plain.stdout.splitlines() if line.startswith(run_id))
        assert which in row and "window " in row
