"""`xksmigrate fleet run --dry-run` (issue 16): waves on DBOS over a world derived from the fleet file.

Every fleet runs as a subprocess, as an operator would run it, and every assertion about AWS reads the world's own
log (`--world-log`): which store was disconnected when, in which account-Region, at what rate. The fleet's
summary is read from its `--json` output, and each store's run from the journal (`xksmigrate status`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from crash_helpers import CLI, tool_env
from fleet_report_checks import check_fleet_report

from migrator.rehearsal.world.log_analysis import (
    calls_per_cell,
    first_disconnects,
    most_disconnected_at_once,
    peak_rate,
    throttled,
)

pytestmark = pytest.mark.slow  # whole fleets in subprocesses

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plans" / "fleet-example.toml"
MUTATING = ("DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore")
BUDGETED = ("DescribeCustomKeyStores", *MUTATING)


def fleet(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "fleet", *args], cwd=cwd, env=tool_env(XDG_STATE_HOME=str(cwd / "state")),
                          text=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_fleet(path: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any],
                                                               list[dict[str, Any]]]:
    """`fleet run PATH --dry-run --yes --json`: the process, its fleet summary and the world's log."""
    log = tmp_path / "world-log.jsonl"
    done = fleet("run", str(path), "--dry-run", "--yes", "--json", "--state", f"sqlite:///{tmp_path}/journal.db",
                 "--world-log", str(log), *extra, cwd=tmp_path)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    summaries = [line for line in lines if line.get("type") == "fleet_summary"]
    assert summaries, done.stdout[-2000:] + done.stderr[-2000:]
    world_log = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return done, summaries[-1], world_log


def store_table(ref: str, n: int, account: str, region: str) -> dict[str, Any]:
    short = {"us-east-1": "use1", "eu-west-1": "euw1"}[region]
    return {"id": ref, "target": {"connectivity": "VPC_ENDPOINT_SERVICE",
                                  "uri_endpoint": f"https://store-{n}-private.{short}.xks.example.com",
                                  "vpc_endpoint_service_name": f"com.amazonaws.vpce.{region}.vpce-svc-{ref[4:]}"},
            "original_credential": {"secret": f"secretsmanager:arn:aws:secretsmanager:{region}:{account}:secret:"
                                              f"store-{n}-xks-proxy-credential"}}


STORES = {"a": "cks-1111220a100000000", "b": "cks-1111220a200000000", "c": "cks-4444551a100000000",
          "d": "cks-4444551a200000000"}


def small_fleet(tmp_path: Path, **rollout: Any) -> Path:
    """Four stores in two accounts of us-east-1: a (the canary) and b in one, c and d in the other; the ramp
    makes waves [a], [b, c], [d]."""
    groups = [("payments", "111122223333", ["a", "b"]), ("ledger", "444455556666", ["c", "d"])]
    data = {"fleet": {"name": "small", "account_id": "111122223333"},
            # 25m: a roomy budget over the floor of 10m, so a loaded CI machine never exhausts it
            "defaults": {"max_disconnected": "25m", "poll_interval": "5s"},
            "access": {"role_name": "xks-migrator", "external_id": "xksmigrate-rehearsal", "session_duration": "1h"},
            "accounts": {label: {"account_id": account} for label, account, _ in groups},
            "rollout": {"canary": [STORES["a"]], "max_in_flight": 2, "failure_tolerance": 0, "bake": "1m",
                        **rollout},
            "targets": [{"account": label, "region": "us-east-1",
                         "stores": [store_table(STORES[k], "abcd".index(k), account, "us-east-1") for k in keys]}
                        for label, account, keys in groups]}
    path = tmp_path / "fleet.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def faults_file(tmp_path: Path, *faults: dict[str, Any]) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text(tomli_w.dumps({"faults": list(faults)}))
    return path


def disconnected_at(log: list[dict[str, Any]], ref: str) -> float:
    return min(e["t"] for e in log if e.get("kind") == "call" and e.get("operation") == "DisconnectCustomKeyStore"
               and e.get("keystore") == ref and not e.get("error"))


def reconnected_at(log: list[dict[str, Any]], ref: str, *, last: bool = False) -> float:
    """When the store was CONNECTED again after its first disconnect (the first time, or the last)."""
    down = disconnected_at(log, ref)
    back = [e["t"] for e in log if e.get("kind") == "state" and e.get("keystore") == ref
            and e.get("to") == "CONNECTED" and e["t"] > down]
    return max(back) if last else min(back)


def outcomes(summary: dict[str, Any]) -> dict[str, str]:
    return {ks["ref"]: ks["outcome"] for ks in summary["keystores"]}


def test_the_example_fleet_completes_canary_first_within_max_in_flight_and_each_cells_budget(tmp_path: Path) -> None:
    done, summary, log = run_fleet(EXAMPLE, tmp_path, "--report", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (summary["outcome"], summary["exit_code"]) == ("completed", 0)
    assert len(summary["keystores"]) == 20 and set(outcomes(summary).values()) == {"completed"}
    accounts = {ks["account_id"] for ks in summary["keystores"]}
    assert len(accounts) == 5 and {ks["region"] for ks in summary["keystores"]} == {"us-east-1", "eu-west-1"}
    # From the world's own log: the canary first and alone, at most max_in_flight stores out at once
    order = first_disconnects(log)
    canary = "cks-1111220a100000000"
    assert order[0] == canary and len(order) == 20
    others = [disconnected_at(log, ref) for ref in order[1:]]
    assert min(others) > reconnected_at(log, canary)
    peak, _ = most_disconnected_at_once(log)
    assert 2 <= peak <= 4  # max_in_flight = 4, and the waves of 4 and 8 did overlap stores
    # one request budget per account-Region cell, shared by all four budgeted calls of every store there: 1
    # request/s with a burst of 5 (aws/rate_budget.py), so never throttled by the world's quota of 5/s
    cells = calls_per_cell(log)
    assert len(cells) == 10
    for cell in cells:
        assert not throttled(log, cell)
        assert peak_rate(log, BUDGETED, cell, window=1.0) <= 5, cell
        assert peak_rate(log, BUDGETED, cell, window=60.0) <= 60 + 5, cell
    # every store's run is an ordinary journal run
    first = summary["keystores"][0]
    status = subprocess.run([*CLI, "status", first["run_id"], "--json", "--state", f"sqlite:///{tmp_path}/journal.db"],
                            env=tool_env(), text=True, capture_output=True, timeout=120)
    assert '"outcome": "completed"' in status.stdout, status.stdout[-1000:] + status.stderr
    check_fleet_report(tmp_path / "report", summary, tmp_path, {ks["ref"]: "successful" for ks in summary["keystores"]})


def test_a_canary_that_fails_stops_the_fleet_with_no_other_store_touched(tmp_path: Path) -> None:
    # the canary's first connect fails; its run rolls back (its own second connect succeeds)
    faults = faults_file(tmp_path, {"operation": "ConnectCustomKeyStore", "account": "111122223333",
                                    "region": "us-east-1", "connection_error_code": "XKS_PROXY_TIMED_OUT",
                                    "count": 1})
    done, summary, log = run_fleet(small_fleet(tmp_path), tmp_path, "--faults", str(faults))
    assert (summary["outcome"], done.returncode) == ("rolled_back", 4), done.stdout[-2000:]
    assert summary["stopped_by"] == STORES["a"]
    assert outcomes(summary) == {STORES["a"]: "rolled_back", STORES["b"]: "not_started",
                                 STORES["c"]: "not_started", STORES["d"]: "not_started"}
    touched = {e.get("keystore") for e in log if e.get("kind") == "call" and e.get("operation") in MUTATING}
    assert touched == {STORES["a"]}


def test_failures_beyond_the_tolerance_stop_new_starts_while_stores_in_flight_finish(tmp_path: Path) -> None:
    # wave 2 is [b, c], both in flight at once (max_in_flight 2); b's connect fails (the first connect in its
    # account after the canary's), c finishes; d, in wave 3, never starts
    faults = faults_file(tmp_path, {"operation": "ConnectCustomKeyStore", "account": "111122223333",
                                    "region": "us-east-1", "connection_error_code": "XKS_PROXY_TIMED_OUT",
                                    "after": 1, "count": 1})
    report = tmp_path / "report"
    done, summary, log = run_fleet(small_fleet(tmp_path), tmp_path, "--faults", str(faults), "--report", str(report))
    assert (summary["outcome"], done.returncode) == ("stopped", 5), done.stdout[-2000:]
    assert summary["stopped_by"] == STORES["b"]
    assert outcomes(summary) == {STORES["a"]: "completed", STORES["b"]: "rolled_back",
                                 STORES["c"]: "completed", STORES["d"]: "not_started"}
    assert STORES["d"] not in first_disconnects(log)
    b_back = reconnected_at(log, STORES["b"], last=True)
    assert disconnected_at(log, STORES["c"]) < b_back  # c was in flight while b failed, and was let finish
    # its change record (`--report`), as `fleet report` writes it: one row per store, one timeline
    check_fleet_report(report, summary, tmp_path, {STORES["a"]: "successful", STORES["b"]: "unsuccessful",
                                                   STORES["c"]: "successful", STORES["d"]: None})


def test_a_gate_that_fails_stops_before_the_next_wave(tmp_path: Path) -> None:
    # the fleet names an alarm; the rehearsal world has no CloudWatch, so the gate cannot read it: a check that
    # could not be made is not a pass, and no store after the canary starts
    done, summary, log = run_fleet(small_fleet(tmp_path, alarms=["xks-proxy-errors"]), tmp_path)
    assert (summary["outcome"], done.returncode) == ("stopped", 5), done.stdout[-2000:]
    assert summary["stopped_by"] == "the gate after canary 1"
    assert "alarms in 111122223333 us-east-1: cannot be read" in summary["stop_reason"]
    assert outcomes(summary)[STORES["a"]] == "completed"
    assert first_disconnects(log) == [STORES["a"]]
    assert summary["gates"][0]["proved"] == {STORES["a"]: 3}  # the round trips ran and passed


def test_a_bad_fleet_file_is_one_line_and_no_aws_call(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('account = "ledger"', 'account = "ledgers"', 1))
    done = fleet("run", str(bad), "--dry-run", "--yes", "--state", f"sqlite:///{tmp_path}/journal.db", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "targets[" in lines[0] and "Traceback" not in done.stderr


def test_a_fleet_check_that_blocks_stops_the_run_before_any_store_moves(tmp_path: Path) -> None:
    # a role session as short as the budget: a store's window plus its rollback's could outlive it
    path = small_fleet(tmp_path)
    path.write_text(path.read_text().replace('session_duration = "1h"', 'session_duration = "15m"'))
    done, summary, log = run_fleet(path, tmp_path)
    assert (summary["outcome"], done.returncode) == ("blocked", 3), done.stdout[-2000:]
    blocks = [json.loads(line) for line in done.stdout.splitlines() if '"fleet_finding"' in line]
    assert [f["check"] for f in blocks if f["status"] == "block"] == ["fleet.role_session"]
    assert not [e for e in log if e.get("kind") == "call" and e.get("operation") in MUTATING]


def test_a_fleet_that_asks_for_approval_waits_for_fleet_proceed_before_each_wave(tmp_path: Path) -> None:
    from crash_helpers import kill_leftovers, spawn

    state = f"sqlite:///{tmp_path}/journal.db"
    log = tmp_path / "world-log.jsonl"
    runner = spawn(["fleet", "run", str(small_fleet(tmp_path, approval=True, bake="0s")), "--dry-run", "--yes",
                    "--json", "--state", state, "--world-log", str(log)], tmp_path, "run")
    try:
        for wave in (2, 3):
            waiting = runner.wait_for_line(lambda line, n=wave: line.get("type") == "fleet_waiting"
                                           and line.get("wave") == n, timeout=300)
            assert waiting is not None, runner.err.read_text()[-2000:]
            world = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            assert len(first_disconnects(world)) == {2: 1, 3: 3}[wave]  # nothing of wave N before the go
            told = fleet("proceed", waiting["fleet_id"], "--wave", str(wave), "--state", state, cwd=tmp_path)
            assert told.returncode == 0, told.stderr
        assert runner.wait(timeout=300) == 0
        assert runner.lines()[-1]["outcome"] == "completed"
    finally:
        kill_leftovers()
