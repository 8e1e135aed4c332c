"""Every outcome of a run, in-process against the rehearsal world over HTTP, on both journals.

Each test checks three witnesses that must agree: what the engine returned (outcome, exit code,
summary), what the journal recorded (state, configuration, events), and what the world itself saw
(its call log, and the live store read back through boto3).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import ROOMY_BUDGET, example_plan, load_world, make_env, mutating_calls, read_world_log

from migrator.aws.kms import KmsApplier
from migrator.aws.store_config import Observation
from migrator.engine import runner as engine
from migrator.rehearsal.world import model
from migrator.rehearsal.world.log_analysis import poll_lag

pytestmark = pytest.mark.slow  # CLI processes or whole rehearsed migrations per case: the full tier

DATA = Path(__file__).parent / "data"
# Outcomes do not depend on the magnitudes. With 120 s changes at 300x a run needs 240 simulated s; the tests
# that use FAST give the budget ROOMY_BUDGET so a loaded machine (real work x 300) cannot exhaust it.
FAST = {"time_scale": 300.0, "connect": 120, "disconnect": 120}
TLS_FAIL = "XKS_PROXY_INVALID_TLS_CONFIGURATION"


def data_world(name: str, **overrides: Any) -> model.World:
    """tests/engine/data/<name>.toml; keyword overrides go to [world] (time_scale) or [latencies]."""
    data = tomllib.loads((DATA / f"{name}.toml").read_text())
    for key, value in overrides.items():
        data.setdefault("world" if key == "time_scale" else "latencies", {})[key] = value
    return model.world_from_dict(data, f"{name}.toml")


def connect_fails(count: int) -> list[model.Fault]:
    return [model.Fault(operation="ConnectCustomKeyStore", connection_error_code=TLS_FAIL, count=count)]


def live_store(env: Any, store_id: str) -> Observation:
    """What AWS (the world) says now, through boto3: never what the engine remembers."""
    return KmsApplier(env.clients.client("kms")).describe(store_id)


def config(obs: Observation) -> dict[str, str]:
    return {k: getattr(obs.config, k) for k in engine.CONFIG_KEYS}


def transitions(journal: Any, run_id: str) -> list[str]:
    return [e.to_state for e in journal.events(run_id) if e.kind == "transition"]


def last_observed(journal: Any, run_id: str) -> dict[str, Any]:
    notes = [e.detail for e in journal.events(run_id)
             if e.kind == "note" and e.operation == "DescribeCustomKeyStores"]
    return notes[-1]


def assert_journal_matches_live(journal: Any, result: Any, live: Observation, expected: dict[str, str]) -> None:
    """The journal's state, last observation and configuration agree with the live store."""
    run = journal.get_run(result.run_id)
    m = run.migrations[0]
    assert (run.outcome, run.exit_code) == (result.outcome, result.exit_code)
    assert m.state == result.stores[0].state
    seen = last_observed(journal, result.run_id)
    assert (seen["connection_state"], seen["connection_error_code"] or "") == (live.state, live.error_code)
    assert config(live) == expected
    assert result.stores[0].final == expected
    seqs = [e.seq for e in journal.events(result.run_id)]
    assert seqs == list(range(1, len(seqs) + 1))  # no journal event lost


def original_of(journal: Any, run_id: str) -> dict[str, str]:
    snap = journal.get_run(run_id).migrations[0].snapshot
    return {k: snap[k] for k in engine.CONFIG_KEYS}


def crypto_after(journal: Any, run_id: str, state: str) -> set[str]:
    """Key ids whose Encrypt+Decrypt round trip the journal recorded after the transition into `state`."""
    events = journal.events(run_id)
    start = next(i for i, e in enumerate(events) if e.kind == "transition" and e.to_state == state)
    return {e.detail["key_id"] for e in events[start:]
            if e.kind == "result" and e.operation == "Encrypt+Decrypt" and e.outcome == "ok"}


def world_crypto_after_last_connect(log: list[dict[str, Any]]) -> list[str]:
    """Encrypt/Decrypt calls the world answered without error after the last ConnectCustomKeyStore."""
    last = max(i for i, e in enumerate(log) if e["kind"] == "call" and e["operation"] == "ConnectCustomKeyStore")
    return [e["operation"] for e in log[last:] if e["kind"] == "call" and e["operation"] in ("Encrypt", "Decrypt")
            and not e["error"]]


# -- 1. the forward path: completed, and each change seen within one poll ---------------------------------
@pytest.mark.slow
def test_example_plans_complete_and_see_each_change_within_one_poll(tmp_path, start_world):
    """The example worlds as they are (disconnect 300 s + connect 300 s, AWS's typical figures).

    The promise is that polling never stretches the window by more than one poll interval. What the poll
    schedule governs is measured on the world's clock (KMS finishing a change -> the engine's next look)
    and asserted; the rest of the window is real work times the scale, which depends on how loaded the
    machine is, so bench/bench_window.py measures it instead of a test asserting it. Scale 5 keeps even
    the poll lag's real part (each HTTPS call's latency, times the scale) small on a busy CI machine; the
    journal lives on a RAM disk when there is one (still SQLite, same code, no disk fsync multiplied by
    the scale). Both plans run at once (they mostly wait), so the pair takes the real time of one (~2 min).
    """
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from migrator.journal.repository import Journal

    scale = 5.0
    ram = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else tmp_path
    runs = []
    for name in ("public-to-vpc", "vpc-to-public"):  # set up in this thread (Alembic's context is global)
        world = load_world(name, time_scale=scale)
        server = start_world(world)
        journal = Journal.open(f"sqlite:///{ram}/{name}.db")
        runs.append((name, example_plan(name), world, server, journal, make_env(server, journal)))
    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            results = list(pool.map(lambda r: engine.start(r[1], r[5]), runs))
        for (name, plan, world, server, journal, env), result in zip(runs, results, strict=True):
            _check_example(name, plan, world, server, journal, env, result, scale)
    finally:
        for run in runs:
            run[4].close()
        if ram != tmp_path:
            shutil.rmtree(ram, ignore_errors=True)


def _check_example(name, plan, world, server, journal, env, result, scale) -> None:
    assert (result.outcome, result.exit_code) == ("completed", 0), (name, result.message)
    summary = result.summary()
    store = summary["keystores"][0]
    live = live_store(env, store["id"])
    target = plan.keystores[0].target
    assert live.state == "CONNECTED"
    assert (live.config.connectivity, live.config.uri_endpoint, live.config.vpc_endpoint_service_name) == (
        target.connectivity, target.uri_endpoint, target.vpc_endpoint_service_name or "")
    assert_journal_matches_live(journal, result, live, store["final"])

    floor = world.latencies.disconnect + world.latencies.connect
    m = journal.get_run(result.run_id).migrations[0]
    events = journal.events(result.run_id)
    verifying_at = next(e.at for e in events if e.kind == "transition" and e.to_state == "verifying")
    completed_at = next(e.at for e in events if e.kind == "transition" and e.to_state == "completed")
    until_verify = (verifying_at - m.disconnected_at) * scale
    assert summary["simulated"] is True and store["simulated"] is True
    window = store["disconnected_seconds"]
    log = read_world_log(server)
    # What the poll schedule governs, on the world's own clock: from KMS finishing the disconnect and the
    # connect to the engine's next look. Within one poll interval in all, however loaded the machine.
    lag = poll_lag(log)
    assert 0 <= lag <= plan.poll_interval, (name, lag, until_verify)
    # The rest of the window up to verification is the update, the connect call and journal writes: real
    # work, multiplied by the scale, so its size depends on the machine's load and is measured (not
    # asserted) by bench/bench_window.py. It cannot be negative: nothing beats the floor.
    assert until_verify >= floor + lag - 0.5, (name, until_verify, lag)
    # The reported window adds only the verification: one round of round trips (a verification poll
    # would show up as extra Encrypt calls below).
    assert window == m.window_seconds
    assert window == pytest.approx((completed_at - m.disconnected_at) * scale, abs=0.5)
    assert until_verify <= window, (name, until_verify, window)
    keys = len(m.snapshot["verify_keys"])
    crypto = [e["operation"] for e in log if e["kind"] == "call" and e["operation"] in ("Encrypt", "Decrypt")]
    assert sorted(crypto) == ["Decrypt"] * keys + ["Encrypt"] * keys
    assert mutating_calls(log) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"]


# -- 2. faults after the disconnect: rolled back, or stuck -------------------------------------------------
def test_connect_failed_rolls_back_to_the_verified_original(journal, start_world):
    server = start_world(load_world("public-to-vpc", **FAST), connect_fails(1))
    env = make_env(server, journal)

    result = engine.start(example_plan("public-to-vpc", max_disconnected=ROOMY_BUDGET), env)

    assert (result.outcome, result.exit_code) == ("rolled_back", 4), result.message
    assert TLS_FAIL in result.stores[0].error
    live = live_store(env, result.stores[0].id)
    original = original_of(journal, result.run_id)
    assert live.state == "CONNECTED" and original["connectivity"] == "PUBLIC_ENDPOINT"
    assert_journal_matches_live(journal, result, live, original)
    assert result.stores[0].original == original
    assert transitions(journal, result.run_id)[-3:] == ["connecting", "rolling_back", "rolled_back"]
    verify_keys = {k["key_id"] for k in journal.get_run(result.run_id).migrations[0].snapshot["verify_keys"]}
    assert verify_keys and crypto_after(journal, result.run_id, "rolling_back") == verify_keys
    log = read_world_log(server)
    assert mutating_calls(log) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore",
                                   "DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"]
    failed = [e for e in log if e["kind"] == "state" and e["to"] == "FAILED"]
    assert len(failed) == 1
    assert sorted(world_crypto_after_last_connect(log)) == ["Decrypt"] * len(verify_keys) + ["Encrypt"] * len(
        verify_keys)


def test_update_rejected_by_kms_for_a_certificate_preflight_cannot_see_rolls_back(journal, start_world):
    """The certificate lacks the private DNS name; that name does not resolve from the tool (a world seen from
    outside the VPC), so preflight cannot check it: the operator accepts those two checks by name, and KMS
    rejects the update when it reaches the proxy through PrivateLink. The rollback is what saves the store."""
    server = start_world(data_world("cert-misses-private-name", **FAST))
    env = make_env(server, journal)
    plan = example_plan("public-to-vpc", max_disconnected=ROOMY_BUDGET,
                        accept_unverified=("tls.reachable", "proxy.reachable"))

    result = engine.start(plan, env)

    assert (result.outcome, result.exit_code) == ("rolled_back", 4), result.message
    assert "XksProxyUriUnreachableException" in result.stores[0].error
    findings = [e for e in journal.events(result.run_id) if e.kind == "finding"]
    assert not [f for f in findings if f.outcome in ("block", "unverified")]
    assert {f.detail["check"] for f in findings if f.outcome == "accepted"} == {"tls.reachable", "proxy.reachable"}
    accepted = [e for e in journal.events(result.run_id) if e.kind == "acceptance"]
    assert sorted(e.detail["check"] for e in accepted) == ["proxy.reachable", "tls.reachable"]
    assert all(e.detail["accepted_by"] == "pytest" for e in accepted)
    live = live_store(env, result.stores[0].id)
    original = original_of(journal, result.run_id)
    assert live.state == "CONNECTED"
    assert_journal_matches_live(journal, result, live, original)
    assert transitions(journal, result.run_id)[-3:] == ["updating", "rolling_back", "rolled_back"]
    assert crypto_after(journal, result.run_id, "rolling_back")
    log = read_world_log(server)
    updates = [e for e in log if e["kind"] == "call" and e["operation"] == "UpdateCustomKeyStore"]
    assert [u["error"] for u in updates] == ["XksProxyUriUnreachableException"]  # the config never changed
    assert mutating_calls(log) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"]


def test_budget_exhausted_while_connecting_rolls_back_within_the_rollback_budget(journal, start_world):
    """Connect (680 s) cannot finish inside a 610 s budget (just above the floor: AWS slower than usual); the
    rollback disconnects the CONNECTING store and reconnects the original within max(max_disconnected, 900 s)
    (690 s needed: room for a loaded machine).

    Scale 60, not higher: the last DescribeCustomKeyStores before the engine gives up is real latency times
    the scale, and at 60 even an 80 ms call on a busy machine stays inside the one-poll bound below."""
    server = start_world(load_world("public-to-vpc", time_scale=60.0, disconnect=10, connect=680))
    plan = example_plan("public-to-vpc", max_disconnected=610.0)
    env = make_env(server, journal)

    result = engine.start(plan, env)

    assert (result.outcome, result.exit_code) == ("rolled_back", 4), result.message
    events = journal.events(result.run_id)
    failing = next(e for e in events if e.kind == "transition" and e.to_state == "rolling_back")
    assert failing.from_state == "connecting"
    assert "budget exhausted" in failing.detail["reason"] and "CONNECTED" in failing.detail["reason"]
    assert "budget exhausted" in journal.get_run(result.run_id).migrations[0].error
    live = live_store(env, result.stores[0].id)
    assert live.state == "CONNECTED"
    assert_journal_matches_live(journal, result, live, original_of(journal, result.run_id))
    assert crypto_after(journal, result.run_id, "rolling_back")
    log = read_world_log(server)
    # The world saw the rollback disconnect a store that was still CONNECTING.
    rollback_disconnect = [e for e in log if e["kind"] == "state" and e["operation"] == "DisconnectCustomKeyStore"]
    assert [e["from"] for e in rollback_disconnect] == ["CONNECTED", "CONNECTING"]
    assert mutating_calls(log) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore",
                                   "DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"]
    # The engine stops waiting at the budget; journaling the failure takes a moment more (real work x scale).
    assert plan.max_disconnected - plan.poll_interval <= failing.detail["window_seconds"] <= (
        plan.max_disconnected + plan.poll_interval)
    assert result.stores[0].disconnected_seconds <= failing.detail["window_seconds"] + max(plan.max_disconnected,
                                                                                            900.0)


def test_a_rollback_that_fails_too_ends_stuck_with_the_manual_commands(journal, start_world):
    server = start_world(load_world("public-to-vpc", **FAST), connect_fails(2))
    env = make_env(server, journal)

    result = engine.start(example_plan("public-to-vpc", max_disconnected=ROOMY_BUDGET), env)

    assert (result.outcome, result.exit_code) == ("stuck", 5), result.message
    live = live_store(env, result.stores[0].id)
    original = original_of(journal, result.run_id)
    # Stuck, but honestly so: the original configuration is back, and KMS says the connect FAILED.
    assert (live.state, live.error_code) == ("FAILED", TLS_FAIL)
    assert_journal_matches_live(journal, result, live, original)
    assert transitions(journal, result.run_id)[-2:] == ["rolling_back", "stuck"]
    store = result.summary()["keystores"][0]
    manual = store["manual"]
    commands = "\n".join(manual["commands"])
    assert "connect-custom-key-store" in commands and result.stores[0].id in commands
    assert "describe-custom-key-stores" in commands
    assert store["disconnected_seconds"] is not None
    assert mutating_calls(read_world_log(server)).count("ConnectCustomKeyStore") == 2


def test_throttling_on_half_the_describe_calls_still_completes(journal, start_world, mocker):
    """50% ThrottlingException on DescribeCustomKeyStores: botocore retries each call, and a poll whose
    retries all failed is just a missed poll.

    Narrow clock seam: botocore sleeps its backoff in real seconds, which a time-scaled rehearsal would
    amplify into simulated minutes; scale it like every other sleep of the rehearsal.
    """
    from botocore.retries.standard import ExponentialBackoff

    world = load_world("public-to-vpc", seed=1, **FAST)
    real_delay = ExponentialBackoff.delay_amount
    mocker.patch.object(ExponentialBackoff, "delay_amount",
                        lambda self, context: real_delay(self, context) / world.time_scale)
    throttle = model.Fault(operation="DescribeCustomKeyStores", error_code="ThrottlingException", probability=0.5)
    server = start_world(world, [throttle])
    env = make_env(server, journal)

    result = engine.start(example_plan("public-to-vpc", max_disconnected=ROOMY_BUDGET), env)

    assert (result.outcome, result.exit_code) == ("completed", 0), result.message
    log = read_world_log(server)
    throttled = [e for e in log if e["kind"] == "call" and e["error"] == "ThrottlingException"]
    assert len(throttled) >= 5  # the fault really fired
    live = live_store(env, result.stores[0].id)
    assert live.state == "CONNECTED" and live.config.connectivity == "VPC_ENDPOINT_SERVICE"
    assert_journal_matches_live(journal, result, live, result.stores[0].final)
    assert mutating_calls(log) == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"]


# -- 3. preflight blocks: nothing changed ------------------------------------------------------------------
def test_preflight_block_makes_no_mutating_call(journal, start_world):
    server = start_world(data_world("service-without-kms-principal", time_scale=600.0))
    env = make_env(server, journal)
    before = live_store(env, "cks-1234567890abcdef0")

    result = engine.start(example_plan("public-to-vpc"), env)

    assert (result.outcome, result.exit_code) == ("blocked", 3), result.message
    assert "vpc.allowed_principal" in result.message
    assert mutating_calls(read_world_log(server)) == []
    after = live_store(env, before.id)
    assert after == before  # untouched: still CONNECTED on the public endpoint
    m = journal.get_run(result.run_id).migrations[0]
    assert (m.state, m.disconnected_at, m.window_seconds) == ("blocked", None, None)
    assert transitions(journal, result.run_id) == ["snapshotted", "blocked"]
    blocks = [e.detail["check"] for e in journal.events(result.run_id) if e.kind == "finding" and e.outcome == "block"]
    assert blocks == ["vpc.allowed_principal"]
