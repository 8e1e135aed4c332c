"""Many accounts and Regions (issue 13): a plan reaching stores through roles, against `sim serve`.

The world is plans/worlds/multi-account.toml (three accounts, two Regions, a role `xks-migrator` in each that
trusts the default account and wants an external id); the plan is plans/multi-account.toml. The tool runs as a
subprocess with the dummy credentials of the default account (crash_helpers.tool_env), exactly as an operator
would run it, and every assertion about AWS reads the world's own log: which account each call was made in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import CLI, Sim, kill_leftovers, tool_env
from engine_helpers import mutating_calls

from migrator.rehearsal.world.log_analysis import calls, peak_rate, throttled

pytestmark = pytest.mark.slow  # sim serve and CLI processes

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "plans" / "multi-account.toml"
WORLD = ROOT / "plans" / "worlds" / "multi-account.toml"
CELLS = {"cks-1111111111111111a": ("111122223333", "us-east-1"), "cks-4444444444444444a": ("444455556666", "us-east-1"),
         "cks-4444444444444444b": ("444455556666", "eu-west-1"), "cks-7777777777777777a": ("777788889999", "eu-west-1")}


@pytest.fixture(autouse=True)
def _no_leftovers() -> Any:
    yield
    kill_leftovers()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = tool_env(XDG_STATE_HOME=os.environ["XDG_STATE_HOME"])
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, text=True, capture_output=True, timeout=600,
                          stdin=subprocess.DEVNULL)


def sim_args(sim: Sim, tmp_path: Path, *, plan: bool = False) -> list[str]:
    """`plan` takes no --time-scale (it does not wait)."""
    scale = [] if plan else ["--time-scale", f"{sim.time_scale:g}"]
    return ["--endpoint-url", sim.endpoint_url, *scale, "--state", f"sqlite:///{tmp_path}/journal.db"]


def findings(stdout: str) -> dict[tuple[str, str], str]:
    """(keystore, check) -> status, from `plan --json`."""
    return {(e["keystore"], e["check"]): e["status"] for e in map(json.loads, stdout.splitlines())
            if e.get("type") == "finding"}


def test_a_plan_over_three_accounts_and_two_regions_runs_each_store_in_its_own_account(tmp_path: Path) -> None:
    with Sim(tmp_path, world=WORLD) as sim:
        planned = cli("plan", str(PLAN), "--json", *sim_args(sim, tmp_path, plan=True), cwd=tmp_path)
        done = cli("run", str(PLAN), "--yes", "--json", *sim_args(sim, tmp_path), cwd=tmp_path)
        log = sim.log()

    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr
    shown = findings(planned.stdout)
    assert {shown[(store, "account.role")] for store in CELLS} == {"pass"}
    assert {shown[(store, "target.endpoint_unique_accounts")] for store in CELLS} == {"pass"}
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["outcome"] == "completed"
    assert {ks["id"]: (ks["account_id"], ks["region"]) for ks in summary["keystores"]} == CELLS
    assert all(ks["outcome"] == "completed" for ks in summary["keystores"])
    # each store's requests are its own (the stores take turns): one connect each, not a running total
    assert [ks["api_calls"].get("kms:ConnectCustomKeyStore") for ks in summary["keystores"]] == [1] * len(CELLS)

    # every mutating call landed in the account and Region of the store it names, signed by the role's session
    for entry in calls(log):
        if entry.get("operation") in ("DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"):
            assert (entry["account"], entry["region"]) == CELLS[entry["keystore"]], entry
    assert sorted(mutating_calls(log)).count("ConnectCustomKeyStore") == len(CELLS)
    assert not [e for e in calls(log) if e.get("error") and e.get("operation") != "AssumeRole"], "a call failed"
    # no cell above its budget: 1 request per simulated second, a burst of 5 (aws/rate_budget.py)
    for cell in set(CELLS.values()):
        assert peak_rate(log, "DescribeCustomKeyStores", cell, window=60.0) <= 60 + 5, cell
    assert throttled(log) == []


def test_sessions_that_expire_mid_window_are_renewed_without_a_failed_call(tmp_path: Path) -> None:
    """The roles' sessions last 30 simulated minutes (budget + rollback); a 25-minute postponed cut-over
    before the disconnect makes every session of the first store end inside its window."""
    plan = tmp_path / "one-store.toml"
    text = PLAN.read_text()
    plan.write_text(text[:text.index("[[keystores]]\nid = \"cks-4444444444444444a\"")])
    with Sim(tmp_path, world=WORLD) as sim:
        import time

        cutover = time.time() + 25 * 60 / sim.time_scale
        done = cli("run", str(plan), "--yes", "--json", "--cutover-at",
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutover)), *sim_args(sim, tmp_path), cwd=tmp_path)
        log = sim.log()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    sessions = [e for e in log if e.get("kind") == "session" and e.get("operation") == "AssumeRole"]
    assert len(sessions) >= 2, sessions  # renewed at least once
    disconnected = min(e["t"] for e in calls(log, "DisconnectCustomKeyStore"))
    connected = max(e["t"] for e in log if e.get("kind") == "state" and e.get("operation") == "ConnectCompleted")
    first_expiry = float(re.search(r"until t=([0-9.]+)", sessions[0]["detail"]).group(1))  # type: ignore[union-attr]
    assert disconnected < first_expiry < connected, (disconnected, first_expiry, connected)  # it ended mid-window
    assert not [e for e in calls(log) if e.get("error")], [e for e in calls(log) if e.get("error")]


def _world_with(tmp_path: Path, old: str, new: str) -> Path:
    text = WORLD.read_text()
    assert old in text
    path = tmp_path / "world.toml"
    path.write_text(text.replace(old, new))
    return path


PAYMENTS_TARGET = """[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://payments-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
"""
LEDGER_TARGET = """[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://ledger-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-04444555566660001"
"""
PAYMENTS_ON_LEDGERS_NAME = """[keystores.target]
connectivity = "PUBLIC_ENDPOINT"
uri_endpoint = "https://ledger-private.xks.example.com"
"""
LEDGER_BACK_TO_PUBLIC = """[keystores.target]
connectivity = "PUBLIC_ENDPOINT"
uri_endpoint = "https://ledger.xks.example.com"
"""


@pytest.mark.parametrize("case", ["untrusted role", "session too short", "endpoint clash across accounts"])
def test_plan_blocks_what_no_single_account_can_see(case: str, tmp_path: Path) -> None:
    plan, world = tmp_path / "plan.toml", WORLD
    text = PLAN.read_text()
    if case == "untrusted role":
        world = _world_with(tmp_path, 'id = "777788889999"\nregions = ["eu-west-1"]\n[[accounts.roles]]\n'
                            'name = "xks-migrator"\ntrusted = ["111122223333"]',
                            'id = "777788889999"\nregions = ["eu-west-1"]\n[[accounts.roles]]\n'
                            'name = "xks-migrator"\ntrusted = ["999999999999"]')
        store, check = "cks-7777777777777777a", "account.role"
    elif case == "session too short":  # 1h budget + 1h rollback: 7200 s; the default account's role gives 3600
        text = text.replace('max_disconnected = "15m"', 'max_disconnected = "1h"')
        store, check = "cks-1111111111111111a", "account.role_session"
    else:  # ledger (444455556666) is VPC-connected on ledger-private today; payments would go public on that name
        world = _world_with(tmp_path, '''connectivity = "PUBLIC_ENDPOINT"
uri_endpoint = "https://ledger.xks.example.com"
''', '''connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://ledger-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-04444555566660001"
''')
        assert PAYMENTS_TARGET in text and LEDGER_TARGET in text
        text = text.replace(PAYMENTS_TARGET, PAYMENTS_ON_LEDGERS_NAME).replace(LEDGER_TARGET, LEDGER_BACK_TO_PUBLIC)
        store, check = "cks-1111111111111111a", "target.endpoint_unique_accounts"
    plan.write_text(text)
    with Sim(tmp_path, world=world) as sim:
        planned = cli("plan", str(plan), "--json", *sim_args(sim, tmp_path, plan=True), cwd=tmp_path)
        ran = cli("run", str(plan), "--yes", "--json", *sim_args(sim, tmp_path), cwd=tmp_path)
        log = sim.log()
    assert planned.returncode == 3, planned.stdout[-3000:] + planned.stderr
    assert findings(planned.stdout).get((store, check)) == "block", planned.stdout[-3000:]
    assert ran.returncode == 3, ran.stdout[-3000:] + ran.stderr
    assert check in json.loads(ran.stdout.splitlines()[-1])["message"] or check in ran.stdout
    assert mutating_calls(log) == []
