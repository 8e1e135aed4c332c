"""Issue 10, what one store's driver does: the live store is the witness, the journal the truth.

Every case runs the tool as a subprocess against `xksmigrate sim serve` in another process (crash_helpers),
stages what an operator or AWS did with boto3 or the world's control paths while the tool was dead, and
reads the world's own log to see what the tool called. Journal cases run on SQLite and PostgreSQL.

- #2  a resume after someone changed the store back by hand: drift, `stuck` (exit 5), nothing changed;
- #8  a resume in `connected` on a store that is DISCONNECTED: it connects again, without waiting out the budget;
- #7  a verify key that fails for its own reason: left out at snapshot time, or a warning while others verify;
- #11 a credential-only change: updated while CONNECTED, never disconnected;
- #10 a budget below the floor (AWS's disconnect + connect plus one poll): `plan` and `run` block it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import CLI, PLAN, SPAWNED, WORLD, Proc, Sim, kill_leftovers, read_journal, spawn, tool_env

pytestmark = pytest.mark.slow  # every case drives the CLI against sim serve in subprocesses: the full tier

STORE = "cks-1234567890abcdef0"
KEY_1, KEY_2, KEY_3 = (f"{n}234abcd-12ab-34cd-56ef-1234567890ab" for n in (1, 2, 3))  # key 3: PendingDeletion
MUTATING = ("DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore")
PUBLIC_ENDPOINT = "https://myproxy.xks.example.com"
NEW_SECRET = "bmV3LXNlY3JldC1mb3ItdGhlLXJlaGVhcnNhbC1wcm94eTE="  # the simulated proxy's second credential
OLD_SECRET = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="  # crash-world.toml's (simulated, not real)


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    kill_leftovers()


def tool(args: list[str], workdir: Path, name: str, **env: object) -> Proc:
    """The tool as a subprocess (stdout/stderr to files), with extra environment variables."""
    out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen([*CLI, *args], stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=workdir,
                                 env=tool_env(**env))
    SPAWNED.append(popen)
    return Proc(popen, out, err, time.monotonic())


def start_run(sim: Sim, url: str, workdir: Path, name: str = "run", *, plan: Path, **env: object) -> Proc:
    return tool(["run", str(plan), *sim.run_args(url)], workdir, name, **env)


def start_resume(sim: Sim, url: str, run_id: str, workdir: Path) -> Proc:
    return tool(["resume", run_id, *sim.run_args(url)], workdir, "resume")


def plan_file(tmp_path: Path, budget: str = "1h", verify: str = "[]", target: str | None = None) -> Path:
    """crash-plan.toml with another budget (1h = 6 real seconds at 600x), verify keys or target."""
    text = PLAN.read_text().replace('max_disconnected = "4h"', f'max_disconnected = "{budget}"')
    text = text.replace("key_ids = []", f"key_ids = {verify}")
    if target is not None:
        start, end = text.index("[keystores.target]"), text.index("[keystores.verify]")
        text = text[:start] + target + "\n" + text[end:]
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def kms(sim: Sim) -> Any:
    import boto3

    return boto3.client("kms", region_name=sim.region, endpoint_url=sim.endpoint_url,
                        aws_access_key_id="AKIDSTORETRUTH000000", aws_secret_access_key="store-truth-dummy")


def wait_state(sim: Sim, state: str) -> None:
    for _ in range(400):
        if sim.describe(STORE)["ConnectionState"] == state:
            return
        time.sleep(0.01)
    raise AssertionError(f"the store never became {state}: {sim.describe(STORE)['ConnectionState']}")


def mutate(sim: Sim, request: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{sim.endpoint_url}/_rehearsal/mutate", data=json.dumps(request).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        assert response.status == 200


def tool_calls(log: list[dict[str, Any]]) -> list[str]:
    return [e["operation"] for e in log if e.get("kind") == "call" and e.get("operation") in MUTATING]


def seq_of_transition(journal_url: str, to_state: str) -> int:
    view = read_journal(journal_url)
    assert view is not None
    return next(e.seq for e in view.events if e.kind == "transition" and e.to_state == to_state)


def killed_in(sim: Sim, url: str, tmp_path: Path, plan: Path, state: str) -> str:
    """Run the plan once to learn the seq of the move to `state` (a throwaway SQLite journal, same world
    shape), then run it again and SIGKILL it right after that move; returns the killed run's id."""
    scout_dir = tmp_path / "scout"
    scout_dir.mkdir()
    scout = f"sqlite:///{scout_dir}/scout.db"
    with Sim(scout_dir) as other:
        assert start_run(other, scout, scout_dir, "scout", plan=plan).wait() == 0
        point = seq_of_transition(scout, state)
    proc = start_run(sim, url, tmp_path, plan=plan, XKSMIGRATE_TEST_KILL_AFTER_SEQ=point)
    assert proc.wait() < 0, proc.err.read_text()[-2000:]
    view = read_journal(url)
    assert view is not None and view.migration.state == state, view.migration.state
    return str(view.run.id)


# -- #2: drift is never success ----------------------------------------------------------------------

def test_a_resume_after_the_store_was_changed_back_by_hand_is_drift_not_success(journal_url: str,
                                                                                tmp_path: Path) -> None:
    plan = plan_file(tmp_path)
    with Sim(tmp_path) as sim:
        run_id = killed_in(sim, journal_url, tmp_path, plan, "verifying")
        client = kms(sim)  # the operator puts the public endpoint back while the tool is dead
        client.disconnect_custom_key_store(CustomKeyStoreId=STORE)
        wait_state(sim, "DISCONNECTED")
        client.update_custom_key_store(CustomKeyStoreId=STORE, XksProxyConnectivity="PUBLIC_ENDPOINT",
                                       XksProxyUriEndpoint=PUBLIC_ENDPOINT)
        client.connect_custom_key_store(CustomKeyStoreId=STORE)
        wait_state(sim, "CONNECTED")
        before = len(sim.log())

        resumed = start_resume(sim, journal_url, run_id, tmp_path)
        code = resumed.wait()
        after = sim.log()[before:]
        live = sim.describe(STORE)

    assert code == 5, resumed.err.read_text()[-2000:]
    assert tool_calls(after) == []  # neither forward nor back: what the operator put there stays
    assert live["XksProxyConfiguration"]["Connectivity"] == "PUBLIC_ENDPOINT"
    view = read_journal(journal_url)
    assert view is not None
    assert (view.migration.state, view.migration.outcome) == ("stuck", "stuck")
    assert view.migration.error.startswith("drift: in verifying"), view.migration.error
    [drift] = [e for e in view.events if e.kind == "note" and e.outcome == "drift"]
    assert drift.detail["expected"][0]["connectivity"] == "VPC_ENDPOINT_SERVICE"
    assert drift.detail["live"]["connectivity"] == "PUBLIC_ENDPOINT"
    stuck = view.events[-1] if view.events[-1].kind == "transition" else next(
        e for e in reversed(view.events) if e.kind == "transition")
    assert stuck.to_state == "stuck" and stuck.detail["commands"]
    summary = resumed.summary()
    assert summary is not None and summary["outcome"] != "completed"


# -- #8: a connect that did not hold ---------------------------------------------------------------

def test_a_resume_in_connected_on_a_disconnected_store_connects_again(journal_url: str, tmp_path: Path) -> None:
    """The crash plan's 4 hours (24 real seconds): a kill, a hand disconnect and a resume fit in with a connect."""
    plan = plan_file(tmp_path, budget="4h")
    with Sim(tmp_path) as sim:
        run_id = killed_in(sim, journal_url, tmp_path, plan, "connected")
        kms(sim).disconnect_custom_key_store(CustomKeyStoreId=STORE)  # someone disconnects it meanwhile
        wait_state(sim, "DISCONNECTED")
        before = len(sim.log())

        resumed = start_resume(sim, journal_url, run_id, tmp_path)
        code = resumed.wait()
        after = sim.log()[before:]
        live = sim.describe(STORE)

    assert code == 0, (resumed.summary(), resumed.err.read_text()[-2000:])
    assert tool_calls(after) == ["ConnectCustomKeyStore"]
    assert live["ConnectionState"] == "CONNECTED"
    assert live["XksProxyConfiguration"]["Connectivity"] == "VPC_ENDPOINT_SERVICE"
    view = read_journal(journal_url)
    assert view is not None
    moves = [(e.from_state, e.to_state) for e in view.events if e.kind == "transition"]
    assert ("connected", "connecting") in moves and moves[-1] == ("verifying", "completed")


# -- #7: a key's own failure is not the store's --------------------------------------------------------

def hooks_dir(tmp_path: Path, sim: Sim, event: str, request: dict[str, Any]) -> Path:
    """A hook that changes the world (the way an operator's other tool might) when `event` fires."""
    directory = tmp_path / "hooks"
    directory.mkdir(mode=0o700)
    hook = directory / event
    hook.write_text("#!/usr/bin/env python3\nimport json, urllib.request\n"
                    f"urllib.request.urlopen(urllib.request.Request({sim.endpoint_url + '/_rehearsal/mutate'!r}, "
                    f"data=json.dumps({request!r}).encode(), method='POST'), timeout=10).read()\n")
    hook.chmod(0o700)
    return directory


def test_a_verify_key_disabled_during_the_window_is_a_warning_not_a_rollback(journal_url: str,
                                                                             tmp_path: Path) -> None:
    plan = plan_file(tmp_path)
    with Sim(tmp_path) as sim:
        hooks = hooks_dir(tmp_path, sim, "after-disconnect", {"kind": "key", "id": KEY_2, "set": {"state": "Disabled"}})
        proc = tool(["run", str(plan), *sim.run_args(journal_url), "--hooks", str(hooks)], tmp_path, "run")
        code = proc.wait()
        log = sim.log()

    assert code == 0, proc.err.read_text()[-2000:]
    assert tool_calls(log) == list(MUTATING)  # one disconnect, update, connect: no rollback
    view = read_journal(journal_url)
    assert view is not None and view.migration.state == "completed"
    [warning] = [e for e in view.events if e.kind == "note" and e.outcome == "warn"]
    assert warning.detail["key_id"] == KEY_2 and "Disabled" in warning.detail["reason"]
    assert any(e.operation == "Encrypt+Decrypt" and e.outcome == "ok" and e.detail["key_id"] == KEY_1
               for e in view.events)


def test_a_pending_deletion_verify_key_is_left_out_at_snapshot_time(journal_url: str, tmp_path: Path) -> None:
    plan = plan_file(tmp_path, verify=f'["{KEY_1}", "{KEY_3}"]')
    with Sim(tmp_path) as sim:
        proc = start_run(sim, journal_url, tmp_path, plan=plan)
        code = proc.wait()
        log = sim.log()

    assert code == 0, proc.err.read_text()[-2000:]
    assert tool_calls(log) == list(MUTATING)
    view = read_journal(journal_url)
    assert view is not None
    assert [k["key_id"] for k in view.migration.snapshot["verify_keys"]] == [KEY_1]
    assert any(e.kind == "note" and KEY_3 in str(e.detail) and "PendingDeletion" in str(e.detail)
               for e in view.events)


def test_plan_agrees_with_the_run_on_a_verify_key_left_out(journal_url: str, tmp_path: Path) -> None:
    """`plan` judges a pending-deletion verify key beside a good one as the run does: left out (a warning), ready."""
    plan = plan_file(tmp_path, verify=f'["{KEY_1}", "{KEY_3}"]')
    with Sim(tmp_path) as sim:
        proc = spawn(["plan", str(plan), "--json", "--endpoint-url", sim.endpoint_url, "--state", journal_url],
                     tmp_path, "plan")
        code = proc.wait()
        log = sim.log()
    lines = proc.lines()
    assert code == 0, proc.err.read_text()[-2000:]
    assert tool_calls(log) == []
    verdicts = {(f["status"], f["detail"].get("key_id")) for f in lines
                if f.get("type") == "finding" and f.get("check") == "keys.verify_keys"}
    assert verdicts == {("pass", KEY_1), ("warn", KEY_3)}, verdicts


def test_only_unusable_verify_keys_block_before_the_disconnect(journal_url: str, tmp_path: Path) -> None:
    plan = plan_file(tmp_path, verify=f'["{KEY_3}"]')
    with Sim(tmp_path) as sim:
        proc = start_run(sim, journal_url, tmp_path, plan=plan)
        code = proc.wait()
        log = sim.log()

    assert code == 3, proc.err.read_text()[-2000:]
    assert tool_calls(log) == []
    view = read_journal(journal_url)
    assert view is not None and view.migration.state == "blocked"
    assert "no verify key can prove the store" in view.migration.error


# -- #11: a credential-only change -------------------------------------------------------------------

CREDENTIAL_TARGET = f'''[keystores.target]
connectivity = "PUBLIC_ENDPOINT"
uri_endpoint = "{PUBLIC_ENDPOINT}"

[keystores.target.credential]
access_key_id = "XKSPROXYNEWACCESSKEY7"
secret = "env:NEW_XKS_SECRET"

[keystores.original_credential]
secret = "env:OLD_XKS_SECRET"
'''


def world_with_second_credential(tmp_path: Path, accepted: bool = True) -> Path:
    """crash-world.toml whose proxy also accepts the new credential (or does not: `accepted=False`)."""
    text = WORLD.read_text()
    old = f'  {{ access_key_id = "XKSPROXYACCESSKEY2345", secret = "{OLD_SECRET}" }},\n'
    assert old in text
    if accepted:
        text = text.replace(old, old + f'  {{ access_key_id = "XKSPROXYNEWACCESSKEY7", secret = "{NEW_SECRET}" }},\n')
    path = tmp_path / "world.toml"
    path.write_text(text)
    return path


# The XKS proxy requests preflight makes on this world: five signed GetHealthStatus and GetKeyMetadata of the
# verify keys on the target, five GetHealthStatus on the rollback target (the same proxy, the old credential).
PREFLIGHT_PROXY_REQUESTS = 12


def rejected_after_preflight(tmp_path: Path) -> Path:
    """The proxy rejects the next request after preflight's (KMS's check of the update), then recovers."""
    path = tmp_path / "faults.toml"
    path.write_text(f'[[faults]]\nproxy = "payments-proxy"\nproxy_fault = "reject_credentials"\ncount = 1\n'
                    f'after = {PREFLIGHT_PROXY_REQUESTS}\n')
    return path


def credential_run(tmp_path: Path, journal_url: str, *, accepted: bool, budget: str = "1h",
                   faults: Path | None = None) -> tuple[int, list[dict[str, Any]], dict[str, Any], Any]:
    plan = plan_file(tmp_path, budget=budget, target=CREDENTIAL_TARGET)
    with Sim(tmp_path, world=world_with_second_credential(tmp_path, accepted), faults=faults) as sim:
        proc = start_run(sim, journal_url, tmp_path, plan=plan, NEW_XKS_SECRET=NEW_SECRET, OLD_XKS_SECRET=OLD_SECRET)
        code = proc.wait()
        return code, sim.log(), sim.describe(STORE), proc


def test_a_credential_only_change_is_made_while_connected(journal_url: str, tmp_path: Path) -> None:
    code, log, live, proc = credential_run(tmp_path, journal_url, accepted=True)

    assert code == 0, proc.err.read_text()[-2000:]
    assert tool_calls(log) == ["UpdateCustomKeyStore"]  # no disconnect, no connect
    assert not [e for e in log if e.get("kind") == "state" and e.get("to") in ("DISCONNECTING", "DISCONNECTED")]
    assert live["ConnectionState"] == "CONNECTED"
    assert live["XksProxyConfiguration"]["AccessKeyId"] == "XKSPROXYNEWACCESSKEY7"
    view = read_journal(journal_url)
    assert view is not None and view.migration.state == "completed"
    assert view.migration.disconnected_at is None and not view.migration.window_seconds
    assert any(e.operation == "Encrypt+Decrypt" and e.outcome == "ok" for e in view.events)
    assert NEW_SECRET not in proc.out.read_text() + proc.err.read_text()


def test_a_credential_the_proxy_rejects_is_blocked_before_any_change(journal_url: str, tmp_path: Path) -> None:
    """Preflight signs a probe with the new credential (the vantage point and the secret): caught, nothing called."""
    code, log, live, proc = credential_run(tmp_path, journal_url, accepted=False)

    assert code == 3, proc.err.read_text()[-2000:]
    assert tool_calls(log) == []
    view = read_journal(journal_url)
    assert view is not None and view.migration.state == "blocked" and "proxy.auth" in view.migration.error
    assert live["XksProxyConfiguration"]["AccessKeyId"] == "XKSPROXYACCESSKEY2345"


def test_a_credential_rejected_after_preflight_rolls_back_without_a_disconnect(journal_url: str,
                                                                               tmp_path: Path) -> None:
    """The proxy accepted preflight's probes, then rejects KMS's check of the update: the in-place rollback."""
    code, log, live, proc = credential_run(tmp_path, journal_url, accepted=True,
                                           faults=rejected_after_preflight(tmp_path))

    assert code == 4, proc.err.read_text()[-2000:]
    updates = [e for e in log if e.get("kind") == "call" and e.get("operation") == "UpdateCustomKeyStore"]
    assert [u["error"] for u in updates][:1] == ["XksProxyIncorrectAuthenticationCredentialException"]
    assert "DisconnectCustomKeyStore" not in tool_calls(log)
    assert live["ConnectionState"] == "CONNECTED"
    assert live["XksProxyConfiguration"]["AccessKeyId"] == "XKSPROXYACCESSKEY2345"


def test_a_credential_only_change_has_no_budget_floor(journal_url: str, tmp_path: Path) -> None:
    code, log, _, proc = credential_run(tmp_path, journal_url, accepted=True, budget="5m")
    assert code == 0, proc.err.read_text()[-2000:]
    assert tool_calls(log) == ["UpdateCustomKeyStore"]


# -- #10: the budget floor ---------------------------------------------------------------------------

def test_plan_and_run_block_a_budget_below_the_floor(journal_url: str, tmp_path: Path) -> None:
    plan = plan_file(tmp_path, budget="30s")
    with Sim(tmp_path) as sim:
        planned = tool(["plan", str(plan), "--json", "--endpoint-url", sim.endpoint_url], tmp_path, "plan")
        plan_code = planned.wait()
        ran = start_run(sim, journal_url, tmp_path, plan=plan)
        run_code = ran.wait()
        log = sim.log()

    assert plan_code == 3, planned.err.read_text()[-2000:]
    floor = [d for d in planned.lines() if d.get("check") == "engine.budget_floor"]
    assert floor and floor[0]["status"] == "block", planned.out.read_text()[-3000:]
    assert "605" in floor[0]["message"]  # AWS's 300 s disconnect + 300 s connect + one 5 s poll
    assert run_code == 3, ran.err.read_text()[-2000:]
    assert tool_calls(log) == []
    view = read_journal(journal_url)
    assert view is not None and view.migration.state == "blocked"
    assert "engine.budget_floor" in view.migration.error and "605" in view.migration.error


def test_a_rehearsal_that_says_it_is_faster_lowers_the_floor(tmp_path: Path) -> None:
    """Only on a loopback rehearsal endpoint, and only down: the world's 120 s changes make 245 s."""
    plan = plan_file(tmp_path, budget="4m")
    with Sim(tmp_path) as sim:
        told = tool(["plan", str(plan), "--json", "--endpoint-url", sim.endpoint_url], tmp_path, "told",
                    XKSMIGRATE_REHEARSAL_CHANGE_SECONDS=120)
        told.wait()
        plain = tool(["plan", str(plan), "--json", "--endpoint-url", sim.endpoint_url], tmp_path, "plain")
        plain.wait()

    def floor_finding(proc: Any) -> dict[str, Any]:
        return next(d for d in proc.lines() if d.get("check") == "engine.budget_floor")

    assert floor_finding(told)["status"] == "block" and "245" in floor_finding(told)["message"]
    assert floor_finding(plain)["status"] == "block" and "605" in floor_finding(plain)["message"]
