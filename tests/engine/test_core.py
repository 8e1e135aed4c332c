"""The engine core as pure logic: the machine table, the driver's loop over it, the poll schedule and
the UpdateCustomKeyStore parameters. A manual clock and a recording applier stand in at the edges
(core_fakes.py), so these run in milliseconds; the AWS conversation itself is tested against the
rehearsal world elsewhere.
"""

from __future__ import annotations

import dataclasses

import pytest
from core_fakes import (
    CREDENTIAL_SECRETS,
    ORIGINAL,
    STORE_ID,
    ManualClock,
    MemoryServices,
    RecordingApplier,
    core_plan,
    credential_only_plan,
    migration,
    snapshot_of,
)
from tenacity import RetryCallState

from migrator.aws.kms import AwsCallError, needs_disconnect, update_parameters
from migrator.aws.store_config import StoreConfig
from migrator.engine import machine
from migrator.engine.driver import Driver
from migrator.engine.errors import Blocked
from migrator.engine.hooks import HookFailed
from migrator.engine.machine import Budget, Expect, OnFailure
from migrator.engine.waits import MIN_POLL, poll_schedule
from migrator.preflight.base import Finding

VPC_TARGET = StoreConfig("VPC_ENDPOINT_SERVICE", "https://private.xks.example.com", "/kms/xks/v1",
                         "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0", "", ORIGINAL.access_key_id)


# -- the table -----------------------------------------------------------------------------------------

# The transitions as they stood before the table drove the run: the table may only grow on purpose.
EXPECTED_TRANSITIONS = {
    ("take_snapshot", "pending", "snapshotted"), ("pass_preflight", "snapshotted", "preflighted"),
    ("approve", "preflighted", "approved"), ("start_disconnect", "approved", "disconnecting"),
    ("observe_disconnected", "disconnecting", "disconnected"), ("start_update", "disconnected", "updating"),
    ("observe_updated", "updating", "updated"), ("start_connect", "updated", "connecting"),
    ("observe_connected", "connecting", "connected"), ("start_verify", "connected", "verifying"),
    ("verify_ok", "verifying", "completed"), ("operator_rollback", "completed", "rolling_back"),
    ("rollback_ok", "rolling_back", "rolled_back"), ("rollback_failed", "rolling_back", "stuck"),
    ("retry_rollback", "stuck", "rolling_back"),
    *(("block", s, "blocked") for s in ("pending", "snapshotted", "preflighted", "approved")),
    *(("fail", s, "rolling_back") for s in ("disconnecting", "disconnected", "updating", "updated", "connecting",
                                            "connected", "verifying")),
    # Issue 10 #11: a change that needs no disconnect (credential, URI path) is updated while CONNECTED.
    ("update_in_place", "approved", "updating"),
    # Issue 10 #8: in connected/verifying a store that is not CONNECTED goes back to connecting.
    ("reconnect", "connected", "connecting"), ("reconnect", "verifying", "connecting"),
    # Issue 10 #2: the live store contradicts the journal: neither forward nor back, the operator decides
    # (in rolling_back drift takes the rollback's own way to stuck, rollback_failed).
    *(("drift", s, "stuck") for s in ("disconnecting", "disconnected", "updating", "updated", "connecting",
                                      "connected", "verifying")),
}


def test_the_table_holds_exactly_the_procedures_transitions() -> None:
    assert set(machine.TABLE) == EXPECTED_TRANSITIONS
    assert len(machine.TABLE) == len(EXPECTED_TRANSITIONS)


def test_every_step_a_row_names_is_a_driver_method() -> None:
    for row in machine.ROWS:
        for name in row.step_names:
            assert callable(getattr(Driver, f"step_{name}", None)), f"{row.state}: no Driver.step_{name}"
        if row.detour:
            assert callable(getattr(Driver, f"when_{row.detour.when}", None)), f"{row.state}: no when_{row.detour.when}"


def test_the_forward_path_is_the_advance_chain() -> None:
    assert machine.FORWARD == ("pending", "snapshotted", "preflighted", "approved", "disconnecting", "disconnected",
                               "updating", "updated", "connecting", "connected", "verifying", "completed")


@pytest.mark.parametrize("row", machine.ROWS, ids=lambda r: r.state)
def test_each_row_is_consistent(row: machine.Row) -> None:
    """One row says everything: terminal rows do nothing; the rest advance and know what a failure means."""
    if row.terminal:
        assert row.advance is None and row.on_failure is None and row.budget is Budget.NONE
        return
    assert row.advance is not None and row.advance[1] in machine.STATES and row.on_failure is not None
    assert row.doc
    if row.state in ("pending", "snapshotted", "preflighted", "approved"):
        # Nothing changed yet: a failure blocks, transient AWS errors are retried, no budget runs.
        assert (row.on_failure, row.budget, row.retry_transient) == (OnFailure.BLOCK, Budget.NONE, True)
        assert row.expects is Expect.UNCHECKED  # approved compares with the snapshot itself (and blocks)
    elif row.state in ("disconnecting", "disconnected", "updating", "updated"):
        # Past the budget no forward call may start from here: straight back.
        assert (row.on_failure, row.budget, row.retry_transient) == (OnFailure.ROLL_BACK, Budget.REFUSE_PAST, False)
    elif row.state in ("connecting", "connected", "verifying"):
        assert (row.on_failure, row.budget, row.retry_transient) == (OnFailure.ROLL_BACK, Budget.BOUNDS, False)
        assert row.expects is Expect.TARGET
    else:
        assert row.state == "rolling_back"
        assert (row.on_failure, row.budget, row.expects) == (OnFailure.STUCK, Budget.ROLLBACK, Expect.EITHER)
        assert row.steps == ("rollback_begin", "rollback_disconnect", "rollback_restore", "rollback_connect",
                             "rollback_verify")


def test_destination_answers_from_the_table() -> None:
    assert machine.destination("approved", "block") == "blocked"
    assert machine.destination("disconnecting", "block") is None
    assert machine.destination("completed", "operator_rollback") == "rolling_back"
    assert machine.destination("rolled_back", "operator_rollback") is None


def test_the_graph_is_drawn_from_the_table() -> None:
    text = machine.mermaid()
    for trigger, source, dest in machine.TABLE:
        assert f"{source} --> {dest}: {trigger}" in text


# -- the driver's loop ---------------------------------------------------------------------------------

def _driver(state: str = "pending", *, applier: RecordingApplier | None = None, **fields: object
            ) -> tuple[Driver, MemoryServices, RecordingApplier]:
    clock = ManualClock()
    kms = applier or RecordingApplier(clock)
    kms.clock = clock
    services = MemoryServices(core_plan(), clock, kms)
    return Driver(services, migration(state, **fields), services.plan.keystores[0]), services, kms


def test_a_clean_run_walks_the_forward_path_and_calls_each_mutation_once() -> None:
    driver, services, kms = _driver()
    assert driver.run() == "completed"
    assert services.states() == list(machine.FORWARD[1:])
    assert kms.mutating() == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"]
    assert kms.config == VPC_TARGET and kms.state == "CONNECTED"
    done = services.transitions[-1][2]
    # The window: two 300 s changes, polled with a floor of one second around the expected end.
    assert done["outcome"] == "completed" and 600 <= done["window_seconds"] <= 600 + 2 * 5
    assert services.hooks_fired == ["before-disconnect", "after-disconnect", "after-connect", "verified", "completed"]


def test_a_blocking_finding_stops_before_anything_changes() -> None:
    driver, services, kms = _driver()
    services.findings = [Finding("vpc.private_dns_verified", "block", "not verified")]
    assert driver.run() == "blocked"
    assert services.states() == ["snapshotted", "blocked"] and kms.mutating() == []
    assert "vpc.private_dns_verified: not verified" in services.transitions[-1][2]["error"]


def test_a_declined_approval_blocks() -> None:
    driver, services, kms = _driver()
    services.approve_answer = False
    assert driver.run() == "blocked" and kms.mutating() == []
    assert "declined" in services.transitions[-1][2]["error"]


def test_a_failing_before_disconnect_hook_blocks() -> None:
    driver, services, kms = _driver()
    services.hook_failures["before-disconnect"] = HookFailed("hook x exited 1")
    assert driver.run() == "blocked" and kms.mutating() == []


def test_a_before_disconnect_hook_that_changes_the_store_is_seen_before_the_disconnect() -> None:
    """A step may act on the last look, but not across a hook: a hook may change the store by hand."""
    driver, services, kms = _driver()
    fire = services.hook

    def hand_edit(mid: int, event: str, facts: object) -> bool:
        fire(mid, event, facts)
        if event == "before-disconnect":
            kms.config = dataclasses.replace(kms.config, uri_path="/edited/kms/xks/v1")
        return True

    services.hook = hand_edit  # type: ignore[method-assign]
    assert driver.run() == "stuck"
    assert kms.mutating() == [] and services.transitions[-1][2]["error"].startswith("drift: in disconnecting")


def test_a_store_waits_its_cells_turn_connected_and_its_window_starts_after() -> None:
    driver, services, kms = _driver()
    kms.admission_wait = 12.0
    assert driver.run() == "completed"
    [waited] = [e for e in _events(services, "note") if "cell's request budget" in str(e["detail"])]
    assert waited["detail"]["waited_seconds"] == 12.0
    start = next(t for t in services.transitions if t[1] == "disconnecting")[2]
    assert start["disconnected_at"] >= 1_000_000.0 + 12.0  # the turn's wait is not in the window
    assert services.events.index(waited) < services.events.index(
        next(e for e in services.events if e["kind"] == "call" and e["operation"] == "DisconnectCustomKeyStore"))


def test_transient_errors_before_the_disconnect_are_retried() -> None:
    driver, services, kms = _driver()
    original_find = kms.find_store
    failures = {"left": 2}

    def flaky(*args: object, **kwargs: object) -> object:
        if failures["left"]:
            failures["left"] -= 1
            raise AwsCallError("DescribeCustomKeyStores", "ThrottlingException", "slow down")
        return original_find(*args, **kwargs)

    kms.find_store = flaky  # type: ignore[method-assign]
    assert driver.run() == "completed"
    assert [e["outcome"] for e in services.events if e["outcome"] == "retry"] == ["retry", "retry"]


def test_a_bug_before_the_disconnect_is_not_a_block() -> None:
    """An unexpected exception where nothing changed is an internal error, not 'blocked'."""
    driver, services, kms = _driver()
    kms.find_store = lambda **kw: (_ for _ in ()).throw(ZeroDivisionError("bug"))  # type: ignore[method-assign]
    with pytest.raises(ZeroDivisionError):
        driver.run()
    assert services.states() == []


def test_a_failed_connect_rolls_back_to_the_snapshot_and_verifies_it() -> None:
    kms = RecordingApplier(ManualClock(), connect_outcomes=["XKS_PROXY_INVALID_TLS_CONFIGURATION"])
    driver, services, kms = _driver(applier=kms)
    assert driver.run() == "rolled_back"
    assert services.states()[-2:] == ["rolling_back", "rolled_back"]
    assert kms.mutating() == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore",
                              "DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"]
    assert kms.config == ORIGINAL and kms.state == "CONNECTED"
    assert "rolling-back" in services.hooks_fired and "rolled-back" in services.hooks_fired


def test_a_transient_failed_connect_gets_one_more_disconnect_and_connect() -> None:
    kms = RecordingApplier(ManualClock(), connect_outcomes=["NETWORK_ERRORS"])
    driver, services, kms = _driver(applier=kms)
    services.plan = dataclasses.replace(services.plan, max_disconnected=3600.0)
    driver.plan = services.plan
    assert driver.run() == "completed"
    assert kms.mutating() == ["DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore",
                              "DisconnectCustomKeyStore", "ConnectCustomKeyStore"]


def test_a_resume_past_the_budget_makes_no_forward_call() -> None:
    """Resumed in `updated` after the budget is gone: straight back, no Connect to the target first."""
    clock = ManualClock()
    kms = RecordingApplier(clock, config=VPC_TARGET, state="DISCONNECTED")
    driver, services, kms = _driver("updated", applier=kms, keystore_id=STORE_ID, snapshot=snapshot_of(),
                                    disconnected_at=clock.now() - 901)
    assert driver.run() == "rolled_back"
    assert "budget exhausted" in services.transitions[0][2]["error"]
    assert kms.mutating() == ["UpdateCustomKeyStore", "ConnectCustomKeyStore"] and kms.config == ORIGINAL


def test_a_rollback_that_fails_ends_stuck_with_the_manual_commands() -> None:
    kms = RecordingApplier(ManualClock(), connect_outcomes=["XKS_PROXY_NOT_REACHABLE", "XKS_PROXY_NOT_REACHABLE"])
    driver, services, kms = _driver(applier=kms)
    assert driver.run() == "stuck"
    stuck = services.transitions[-1][2]
    assert stuck["outcome"] == "stuck" and "connect FAILED" in stuck["error"]
    assert services.hooks_fired[-1] == "stuck"


def test_operator_rollback_and_retry_stuck_enter_through_the_table() -> None:
    clock = ManualClock()
    kms = RecordingApplier(clock, config=VPC_TARGET)
    driver, services, kms = _driver("completed", applier=kms, keystore_id=STORE_ID, snapshot=snapshot_of())
    driver.enter_operator_rollback()
    assert driver.run() == "rolled_back" and kms.config == ORIGINAL
    assert services.states() == ["rolling_back", "rolled_back"]

    driver, services, kms = _driver("stuck", keystore_id=STORE_ID, snapshot=snapshot_of(),
                                    disconnected_at=1.0, attempts={"rollback_started_at": 1.0})
    services.retry_stuck = True
    assert driver.run() == "rolled_back"
    assert services.states()[0] == "rolling_back"


def test_an_operator_who_declines_the_rollback_changes_nothing() -> None:
    driver, services, kms = _driver("completed", keystore_id=STORE_ID, snapshot=snapshot_of())
    services.approve_answer = False
    with pytest.raises(Blocked):
        driver.enter_operator_rollback()
    assert services.states() == [] and kms.mutating() == []


# -- the poll schedule -----------------------------------------------------------------------------------

def _wait(schedule: object, attempt: int) -> float:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return schedule(state)  # type: ignore[operator]


def test_poll_schedule_first_poll_is_short_then_the_interval() -> None:
    schedule = poll_schedule(10.0)
    assert _wait(schedule, 1) == 2.0  # a fifth of the interval, at least the floor
    assert _wait(schedule, 2) == 10.0


def test_poll_schedule_lands_on_the_expected_end_then_polls_at_the_floor() -> None:
    elapsed = {"now": 0.0}
    schedule = poll_schedule(5.0, expected=300.0, elapsed=lambda: elapsed["now"])
    elapsed["now"] = 100.0
    assert _wait(schedule, 2) == 5.0  # far from the end: the plan's interval
    elapsed["now"] = 296.0
    assert _wait(schedule, 2) == pytest.approx(3.0)  # one floor-poll before the expected end
    elapsed["now"] = 300.0
    assert _wait(schedule, 2) == MIN_POLL  # around the end: once a second
    elapsed["now"] = 311.0
    assert _wait(schedule, 2) == 5.0  # long past it: back to the interval


def test_poll_schedule_never_polls_faster_than_the_floor() -> None:
    schedule = poll_schedule(0.1)
    assert _wait(schedule, 1) == MIN_POLL and _wait(schedule, 2) == MIN_POLL


# -- UpdateCustomKeyStore parameters ------------------------------------------------------------------

def test_update_parameters_public_to_vpc_carry_endpoint_and_service() -> None:
    params = update_parameters(STORE_ID, VPC_TARGET, ORIGINAL)
    assert params == {"CustomKeyStoreId": STORE_ID, "XksProxyConnectivity": "VPC_ENDPOINT_SERVICE",
                      "XksProxyUriEndpoint": VPC_TARGET.uri_endpoint,
                      "XksProxyVpcEndpointServiceName": VPC_TARGET.vpc_endpoint_service_name}
    assert needs_disconnect(params)


def test_update_parameters_vpc_to_public_omit_the_service_name() -> None:
    params = update_parameters(STORE_ID, ORIGINAL, VPC_TARGET)
    assert params == {"CustomKeyStoreId": STORE_ID, "XksProxyConnectivity": "PUBLIC_ENDPOINT",
                      "XksProxyUriEndpoint": ORIGINAL.uri_endpoint}


def test_update_parameters_send_only_what_changes() -> None:
    moved = dataclasses.replace(VPC_TARGET, uri_path="/tenant/kms/xks/v1", vpc_endpoint_service_owner="444455556666")
    params = update_parameters(STORE_ID, moved, VPC_TARGET)
    assert params == {"CustomKeyStoreId": STORE_ID, "XksProxyUriPath": "/tenant/kms/xks/v1",
                      "XksProxyVpcEndpointServiceOwner": "444455556666"}
    assert update_parameters(STORE_ID, VPC_TARGET, VPC_TARGET) == {"CustomKeyStoreId": STORE_ID}
    assert not needs_disconnect({"CustomKeyStoreId": STORE_ID, "XksProxyUriPath": "/x/kms/xks/v1"})


def test_store_config_diff_ignores_an_unconstrained_owner() -> None:
    owned = dataclasses.replace(VPC_TARGET, vpc_endpoint_service_owner="444455556666")
    assert VPC_TARGET.matches(owned) and owned.diff(VPC_TARGET) == []
    other = dataclasses.replace(owned, vpc_endpoint_service_owner="777788889999")
    assert [c.field for c in owned.diff(other)] == ["vpc_endpoint_service_owner"]
    assert "uri_endpoint: https://public.xks.example.com -> https://private" in ORIGINAL.describe_diff(VPC_TARGET)


# -- issue 10: store truth (drift, a connect that did not hold, verify keys, updates in place) ------------

def _events(services: MemoryServices, kind: str, outcome: str | None = None) -> list[dict[str, object]]:
    return [e for e in services.events if e["kind"] == kind and (outcome is None or e["outcome"] == outcome)]


def test_a_resume_on_a_store_changed_back_by_hand_ends_stuck_with_the_drift() -> None:
    """Resumed in `verifying`, the store is CONNECTED with the original: its keys work, but that is not the run's
    target. Drift is never success: stuck, both configurations journaled, nothing changed."""
    kms = RecordingApplier(ManualClock(), config=ORIGINAL)
    driver, services, kms = _driver("verifying", applier=kms, keystore_id=STORE_ID, snapshot=snapshot_of(),
                                    disconnected_at=kms.clock.now() - 100)
    assert driver.run() == "stuck"
    assert kms.mutating() == [] and "Encrypt+Decrypt" not in kms.calls
    stuck = services.transitions[-1]
    assert stuck[:2] == ("verifying", "stuck") and stuck[2]["outcome"] == "stuck"
    assert stuck[2]["error"].startswith("drift: in verifying")
    [drift] = _events(services, "note", "drift")
    assert drift["detail"]["expected"] == [VPC_TARGET.to_dict()]
    assert drift["detail"]["live"]["uri_endpoint"] == ORIGINAL.uri_endpoint
    assert services.hooks_fired[-1] == "stuck"


def test_drift_in_the_rollback_is_not_overwritten() -> None:
    """A third configuration (neither the snapshot nor the target) during a rollback: stuck, not restored."""
    third = dataclasses.replace(ORIGINAL, uri_endpoint="https://someone-else.example.com")
    kms = RecordingApplier(ManualClock(), config=third, state="DISCONNECTED")
    driver, services, kms = _driver("rolling_back", applier=kms, keystore_id=STORE_ID, snapshot=snapshot_of(),
                                    disconnected_at=kms.clock.now() - 100)
    assert driver.run() == "stuck"
    assert kms.mutating() == [] and kms.config == third
    assert services.transitions[-1][:2] == ("rolling_back", "stuck")


def test_a_resume_in_connected_on_a_disconnected_store_connects_again() -> None:
    clock = ManualClock()
    kms = RecordingApplier(clock, config=VPC_TARGET, state="DISCONNECTED")
    driver, services, kms = _driver("connected", applier=kms, keystore_id=STORE_ID, snapshot=snapshot_of(),
                                    disconnected_at=clock.now() - 100)
    assert driver.run() == "completed"
    assert services.states()[:2] == ["connecting", "connected"]
    assert kms.mutating() == ["ConnectCustomKeyStore"]


def test_a_connect_that_did_not_hold_without_budget_rolls_back_at_once() -> None:
    """100 s of the 900 s budget left cannot hold another connect: straight back, without polling keys first."""
    clock = ManualClock()
    kms = RecordingApplier(clock, config=VPC_TARGET, state="DISCONNECTED")
    driver, services, kms = _driver("verifying", applier=kms, keystore_id=STORE_ID, snapshot=snapshot_of(),
                                    disconnected_at=clock.now() - 800)
    assert driver.run() == "rolled_back"
    first = services.transitions[0]
    assert first[:2] == ("verifying", "rolling_back") and "did not hold" in first[2]["error"]
    assert "Encrypt+Decrypt" not in kms.calls[:kms.calls.index("UpdateCustomKeyStore")]
    assert kms.mutating() == ["UpdateCustomKeyStore", "ConnectCustomKeyStore"] and kms.config == ORIGINAL


def test_a_key_that_fails_for_its_own_reason_is_a_warning_when_another_proves_the_store() -> None:
    kms = RecordingApplier(ManualClock(), config=VPC_TARGET, key_states={"key-2": "Disabled"})
    snapshot = {**snapshot_of(), "verify_keys": [{"key_id": "key-1", "arn": "a1", "state": "Enabled"},
                                                 {"key_id": "key-2", "arn": "a2", "state": "Enabled"}]}
    driver, services, kms = _driver("verifying", applier=kms, keystore_id=STORE_ID, snapshot=snapshot,
                                    disconnected_at=kms.clock.now() - 100)
    assert driver.run() == "completed"
    [warning] = _events(services, "note", "warn")
    assert warning["detail"]["key_id"] == "key-2" and "Disabled" in warning["detail"]["reason"]


KEY_A, KEY_B = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"


def _plan_naming(keys: list[str]) -> object:
    verify = "[keystores.verify]\nkey_ids = [" + ", ".join(f'"{k}"' for k in keys) + "]\n\n[keystores.target]"
    return core_plan(**{"[keystores.target]": verify})


def test_a_disabled_named_verify_key_is_left_out_at_snapshot_time() -> None:
    clock = ManualClock()
    kms = RecordingApplier(clock, key_states={KEY_B: "Disabled"})
    services = MemoryServices(_plan_naming([KEY_A, KEY_B]), clock, kms)
    ks = services.plan.keystores[0]
    assert ks.verify_key_ids == (KEY_A, KEY_B)
    assert Driver(services, migration(), ks).run() == "completed"
    snapshot = services.transitions[0][2]["snapshot"]
    assert [k["key_id"] for k in snapshot["verify_keys"]] == [KEY_A]
    assert any(f"{KEY_B} is Disabled" in str(e["detail"]) for e in _events(services, "note"))


def test_only_disabled_named_verify_keys_block_before_the_disconnect() -> None:
    clock = ManualClock()
    kms = RecordingApplier(clock, key_states={KEY_B: "PendingDeletion"})
    services = MemoryServices(_plan_naming([KEY_B]), clock, kms)
    assert Driver(services, migration(), services.plan.keystores[0]).run() == "blocked"
    assert kms.mutating() == [] and "no verify key can prove" in services.transitions[-1][2]["error"]


def _credential_driver(kms: RecordingApplier) -> tuple[Driver, MemoryServices]:
    services = MemoryServices(credential_only_plan(), kms.clock, kms, secrets=dict(CREDENTIAL_SECRETS))
    return Driver(services, migration(), services.plan.keystores[0]), services


def test_a_credential_only_change_is_made_while_connected() -> None:
    kms = RecordingApplier(ManualClock())
    driver, services = _credential_driver(kms)
    assert driver.run() == "completed"
    assert services.states() == ["snapshotted", "preflighted", "approved", "updating", "updated", "connecting",
                                 "connected", "verifying", "completed"]
    assert kms.mutating() == ["UpdateCustomKeyStore"] and kms.config.access_key_id == "BKIAYYYYYYYYYYYYYYYY"
    assert services.transitions[-1][2]["window_seconds"] is None
    assert "before-disconnect" not in services.hooks_fired


def test_a_credential_that_does_not_prove_itself_is_restored_while_connected() -> None:
    kms = RecordingApplier(ManualClock(), refuse_round_trips_for="BKIAYYYYYYYYYYYYYYYY")
    driver, services = _credential_driver(kms)
    assert driver.run() == "rolled_back"
    assert kms.mutating() == ["UpdateCustomKeyStore", "UpdateCustomKeyStore"]  # no disconnect, ever
    assert kms.config == ORIGINAL and kms.state == "CONNECTED"
    assert services.transitions[-1][2]["window_seconds"] is None
