"""Operator features against the rehearsal world: hooks, postponed cut-over, operator rollback (issue 6)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from engine_helpers import ROOMY_BUDGET, example_plan, load_world, make_env, mutating_calls, read_world_log

from migrator.aws.kms import KmsApplier
from migrator.engine import runner as engine
from migrator.engine.hooks import Hooks, facts_for

pytestmark = pytest.mark.slow  # CLI processes or whole rehearsed migrations per case: the full tier

EVENTS = ["before-disconnect", "after-disconnect", "after-connect", "verified", "completed"]


def _hook_dir(tmp_path: Path, events: list[str], failing: str | None = None) -> Path:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    log = tmp_path / "fired.jsonl"
    for event in events:
        script = hooks / event
        body = ("#!/bin/sh\n"
                "printf '{\"event\":\"%s\",\"state\":\"%s\",\"store\":\"%s\",\"run\":\"%s\",\"window\":\"%s\","
                "\"secret\":\"%s\"}\\n' \"$XKSMIGRATE_EVENT\" \"$XKSMIGRATE_KEYSTORE_STATE\" "
                "\"$XKSMIGRATE_KEYSTORE_ID\" "
                f"\"$XKSMIGRATE_RUN_ID\" \"$XKSMIGRATE_WINDOW_SECONDS\" \"$XKS_HOOK_CANARY\" >> {log}\n"
                "echo hook-said-hello\n")
        if event == failing:
            body += "echo 'change freeze in effect' >&2\nexit 7\n"
        script.write_text(body)
        script.chmod(0o755)
    return hooks


def _fired(tmp_path: Path) -> list[dict]:
    path = tmp_path / "fired.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_hooks_fire_in_order_with_their_variables(journal, start_world, tmp_path, monkeypatch):
    server = start_world(load_world(time_scale=600.0))
    monkeypatch.setenv("XKS_HOOK_CANARY", "not-a-plan-secret")  # ordinary variables do reach hooks
    env = make_env(server, journal, hooks=Hooks(str(_hook_dir(tmp_path, EVENTS))))

    result = engine.start(example_plan(max_disconnected=ROOMY_BUDGET), env)

    assert result.outcome == "completed"
    fired = _fired(tmp_path)
    assert [f["event"] for f in fired] == EVENTS
    assert {f["run"] for f in fired} == {result.run_id}
    assert {f["store"] for f in fired} == {"cks-1234567890abcdef0"}
    assert [f["state"] for f in fired] == ["approved", "disconnected", "connected", "verifying", "completed"]
    assert fired[0]["window"] == ""  # nothing is disconnected before the disconnect
    windows = [float(f["window"]) for f in fired[1:]]
    assert windows == sorted(windows) and windows[0] > 0
    hook_events = [e for e in journal.events(result.run_id) if e.kind == "hook"]
    assert [e.operation for e in hook_events] == EVENTS
    assert all("hook-said-hello" in e.detail["output"] for e in hook_events)


def test_a_failing_before_disconnect_hook_leaves_the_store_untouched(journal, start_world, tmp_path):
    server = start_world(load_world(time_scale=600.0))
    env = make_env(server, journal, hooks=Hooks(str(_hook_dir(tmp_path, EVENTS, failing="before-disconnect"))))

    result = engine.start(example_plan(max_disconnected=ROOMY_BUDGET), env)

    assert (result.outcome, result.exit_code) == ("blocked", 3)
    assert "change freeze in effect" in result.message
    assert mutating_calls(read_world_log(server)) == []
    live = KmsApplier(env.clients.client("kms")).describe("cks-1234567890abcdef0")
    assert (live.state, live.config.connectivity) == ("CONNECTED", "PUBLIC_ENDPOINT")
    assert [f["event"] for f in _fired(tmp_path)] == ["before-disconnect"]


def test_hooks_never_see_the_plans_secret_variables(tmp_path, monkeypatch):
    from migrator.plan import parse_plan

    text = (Path(__file__).resolve().parents[2] / "plans" / "public-to-vpc.toml").read_text()
    credential = ('[keystores.target.credential]\naccess_key_id = "NEWKEYNEWKEYNEWKEY23"\n'
                  'secret = "env:XKS_NEW_SECRET"')
    text = text.replace("# uri_path unchanged", credential)
    old_ref = re.search(r'\[keystores\.original_credential\]\nsecret = ("[^"]+")', text)
    assert old_ref, "the example plan names its current proxy secret"
    text = text.replace(old_ref.group(1), '"env:XKS_OLD"')
    plan = parse_plan(text, "p.toml")
    monkeypatch.setenv("XKS_NEW_SECRET", "s" * 44)
    monkeypatch.setenv("XKS_OLD", "o" * 44)

    facts = facts_for(plan, plan.keystores[0], run_id="run-x", store_id="cks-1", store_state="approved",
                      window_seconds=None, dry_run=True)
    variables = facts.environment("before-disconnect", dict(os.environ))
    assert "XKS_NEW_SECRET" not in variables and "XKS_OLD" not in variables
    assert variables["XKSMIGRATE_EVENT"] == "before-disconnect"


def _run_in_thread(env, plan) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        box["result"] = engine.start(plan, env)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _wait_for_note(journal, outcome: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = journal.list_runs(limit=1)
        if runs and any(e.outcome == outcome for e in journal.events(runs[0].id)):
            return runs[0].id
        time.sleep(0.05)
    raise AssertionError(f"no {outcome} event within {timeout} s")


def test_a_postponed_run_waits_and_proceed_releases_it(journal, start_world):
    server = start_world(load_world(time_scale=600.0))
    env = make_env(server, journal, postpone=True)
    thread, box = _run_in_thread(env, example_plan(max_disconnected=ROOMY_BUDGET))

    run_id = _wait_for_note(journal, "postponed")
    time.sleep(1.5)  # it keeps waiting: nothing reached AWS while postponed
    assert thread.is_alive()
    assert mutating_calls(read_world_log(server)) == []
    assert journal.get_run(run_id).migrations[0].state == "preflighted"

    journal.record(run_id, kind="note", outcome="proceed", detail={"message": "released by the test"})
    thread.join(120)

    assert box["result"].outcome == "completed"
    outcomes = [e.outcome for e in journal.events(run_id) if e.kind in ("note", "finding")]
    released = outcomes.index("released")
    assert "pass" in outcomes[released:], "preflight ran again after the release"
    assert mutating_calls(read_world_log(server)) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                                      "ConnectCustomKeyStore"]


def test_a_problem_appearing_while_postponed_blocks_the_disconnect(journal, start_world, tmp_path):
    server = start_world(load_world(time_scale=600.0))
    flag = tmp_path / "postpone.flag"
    env = make_env(server, journal, postpone_flag_file=str(flag))
    thread, box = _run_in_thread(env, example_plan(max_disconnected=ROOMY_BUDGET))
    _wait_for_note(journal, "postponed")
    assert flag.exists()  # created by the runner, as gh-ost does

    # While the operator waits for the change window, someone removes KMS from the allowed principals.
    body = json.dumps({"kind": "endpoint_service", "id": "vpce-svc-0123456789abcdef0",
                       "set": {"allowed_principals": []}}).encode()
    request = urllib.request.Request(f"{server.endpoint_url}/_rehearsal/mutate", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    os.unlink(flag)
    thread.join(120)

    result = box["result"]
    assert (result.outcome, result.exit_code) == ("blocked", 3)
    assert "vpc.allowed_principal" in result.message
    assert mutating_calls(read_world_log(server)) == []


def test_operator_rollback_returns_a_completed_run_to_its_original_configuration(journal, start_world):
    server = start_world(load_world(time_scale=600.0))
    plan = example_plan(max_disconnected=ROOMY_BUDGET)
    env = make_env(server, journal)
    done = engine.start(plan, env)
    assert done.outcome == "completed"

    started = env.clock.now()
    back = engine.rollback(plan, make_env(server, journal), done.run_id)
    rollback_took = env.clock.elapsed(started)

    assert (back.outcome, back.exit_code) == ("rolled_back", 4)
    live = KmsApplier(env.clients.client("kms")).describe("cks-1234567890abcdef0")
    assert live.state == "CONNECTED"
    assert (live.config.connectivity, live.config.uri_endpoint) == ("PUBLIC_ENDPOINT", "https://myproxy.xks.example.com")
    migration = journal.get_run(back.run_id).migrations[0]
    assert migration.state == "rolled_back"
    assert 0 < migration.window_seconds <= rollback_took  # a new window, not one since the first run
    states = [e.to_state for e in journal.events(back.run_id) if e.kind == "transition"]
    assert states[-2:] == ["rolling_back", "rolled_back"]
    assert journal.get_run(done.run_id).migrations[0].state == "completed"  # the forward run keeps its record
    assert mutating_calls(read_world_log(server))[3:] == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                                          "ConnectCustomKeyStore"]


def test_declining_the_operator_rollback_changes_nothing(journal, start_world):
    server = start_world(load_world(time_scale=600.0))
    plan = example_plan(max_disconnected=ROOMY_BUDGET)
    done = engine.start(plan, make_env(server, journal))
    calls_before = mutating_calls(read_world_log(server))

    back = engine.rollback(plan, make_env(server, journal, approve=False), done.run_id)

    assert back.outcome == "blocked"
    assert mutating_calls(read_world_log(server)) == calls_before
    assert journal.get_run(done.run_id).migrations[0].state == "completed"
