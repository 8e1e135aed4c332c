"""`fleet plan`'s own checks (fleet/checks.py) and its verdict (fleet/plan_report.py): pure, no world, no AWS.

Check by hand with:  pytest -n 0 -p no:cacheprovider tests/test_fleet_checks.py
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from migrator.fleet.checks import SESSION_CHECK, SHARED_PROXY_CHECK, fleet_findings, waves_for
from migrator.fleet.plan_report import BLOCKED, NO_CHANGES, NOT_READY, READY, current_endpoints, fleet_report, seen_as
from migrator.fleet.rollout import Wave
from migrator.fleet.spec import FleetSpec, parse_fleet
from migrator.preflight.base import Finding, block, ok, unverified
from migrator.preflight.planner import PlanReport, StorePlan

A, B, C = "cks-1111111111111111a", "cks-1111111111111111b", "cks-4444444444444444c"

FLEET = """
[fleet]
name = "checks"
account_id = "111122223333"

[defaults]
max_disconnected = "15m"

[access]
role_name = "xks-migrator"
session_duration = "1h"

[accounts]
home = { account_id = "111122223333" }
other = { account_id = "444455556666" }

[rollout]
max_in_flight = 2

[[targets]]
account = "home"
region = "us-east-1"
[[targets.stores]]
id = "cks-1111111111111111a"
[targets.stores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://a-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0aaaaaaaaaaaaaaa1"
[[targets.stores]]
id = "cks-1111111111111111b"
[targets.stores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://b-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0bbbbbbbbbbbbbbb1"

[[targets]]
account = "other"
region = "eu-west-1"
[[targets.stores]]
id = "cks-4444444444444444c"
[targets.stores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://c-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.eu-west-1.vpce-svc-0ccccccccccccccc1"
"""

TODAY = {A: "https://a-public.xks.example.com", B: "https://b-public.xks.example.com",
         C: "https://c-public.xks.example.com"}
SHARED_TODAY = {**TODAY, B: "https://a-public.xks.example.com:443"}  # B uses A's proxy today (port: same host)


def fleet(*edits: tuple[str, str]) -> FleetSpec:
    text = FLEET
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return parse_fleet(text, "checks.toml")


def by_check(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


HAND_WAVE = ("max_in_flight = 2", f'max_in_flight = 2\nwaves = [["{A}", "{B}"]]')


# -- fleet.shared_proxy -------------------------------------------------------------------------
def test_a_hand_written_wave_holding_two_stores_of_todays_proxy_blocks_naming_both():
    spec = fleet(HAND_WAVE)
    waves = waves_for(spec, SHARED_TODAY)
    assert waves[0] == Wave(1, (A, B))
    [found] = by_check(fleet_findings(spec, waves, SHARED_TODAY), SHARED_PROXY_CHECK)
    assert found.status == "block"
    assert found.detail == {"wave": 1, "proxy": "a-public.xks.example.com", "stores": [A, B]}
    assert "wave 1" in found.message and A in found.message and B in found.message
    assert "rollout.waves" in found.remedy


def test_a_shared_target_host_blocks_too():
    """Endpoints are unique per Region within a fleet, not across Regions: A's target host for C in eu-west-1."""
    spec = fleet(HAND_WAVE, ("https://c-private", "https://a-private"), (f'["{A}", "{B}"]', f'["{A}", "{C}"]'))
    waves = waves_for(spec, TODAY)
    [found] = by_check(fleet_findings(spec, waves, TODAY), SHARED_PROXY_CHECK)
    assert found.status == "block" and found.detail["proxy"] == "a-private.xks.example.com"


def test_stores_of_different_proxies_in_one_wave_pass():
    spec = fleet(HAND_WAVE)
    [found] = by_check(fleet_findings(spec, waves_for(spec, TODAY), TODAY), SHARED_PROXY_CHECK)
    assert found.status == "pass"


def test_the_ramp_keeps_stores_of_todays_proxy_apart_so_the_check_passes():
    spec = fleet(("max_in_flight = 2", 'max_in_flight = 2\nramp = "one_wave"'))
    waves = waves_for(spec, SHARED_TODAY)
    assert [w.refs for w in waves] == [(A, C), (B,)]
    [found] = by_check(fleet_findings(spec, waves, SHARED_TODAY), SHARED_PROXY_CHECK)
    assert found.status == "pass" and "2 waves" in found.message


def test_a_store_whose_snapshot_was_not_read_counts_its_target_only():
    spec = fleet(HAND_WAVE)
    unread = {**SHARED_TODAY, B: None}
    [found] = by_check(fleet_findings(spec, waves_for(spec, unread), unread), SHARED_PROXY_CHECK)
    assert found.status == "pass"


# -- fleet.role_session -------------------------------------------------------------------------
@pytest.mark.parametrize(("budget", "session", "status", "needed"), [
    ("15m", "15m", "block", 1800),  # the budget alone: the rollback's 15 minutes are missing
    ("15m", "29m", "block", 1800),
    ("15m", "30m", "pass", 1800),   # exactly the budget plus the rollback's
    ("15m", "1h", "pass", 1800),
    ("30m", "45m", "block", 3600),  # a longer budget, a longer rollback
])
def test_a_role_session_shorter_than_a_budget_plus_its_rollback_blocks(budget, session, status, needed):
    spec = fleet(('max_disconnected = "15m"', f'max_disconnected = "{budget}"'),
                 ('session_duration = "1h"', f'session_duration = "{session}"'))
    [found] = by_check(fleet_findings(spec, waves_for(spec, TODAY), TODAY), SESSION_CHECK)
    assert found.status == status, found.message
    assert f"({needed}s)" in found.message
    if status == "block":
        assert found.detail["needed_seconds"] == needed
        assert f"--max-session-duration {needed}" in found.remedy


def test_without_a_session_duration_there_is_no_session_finding():
    spec = fleet(('session_duration = "1h"\n', ""))
    assert spec.session_duration is None
    assert by_check(fleet_findings(spec, waves_for(spec, TODAY), TODAY), SESSION_CHECK) == []


# -- the verdict --------------------------------------------------------------------------------
TARGET_DIFFERS = block("keystore.target_differs", "the key store already has the target configuration")


def report(spec: FleetSpec, *findings: list[Finding], current: dict[str, str] = TODAY) -> PlanReport:
    """A plan report of `spec.whole` with each store's findings and its snapshot's URI endpoint."""
    stores = [StorePlan(ks.ref, ks.id, {"id": ks.id or "", "uri_endpoint": current[ks.ref]}, list(f), ["call"],
                        ["rollback"], account_id=ks.account_id, region=ks.region)
              for ks, f in zip(spec.whole.keystores, findings, strict=True)]
    return PlanReport(spec.whole, stores)


PASSING = [ok("keystore.exists", "found")]


@pytest.mark.parametrize(("stores", "edits", "verdict", "code"), [
    ([PASSING, PASSING, PASSING], (), READY, 0),
    ([PASSING, [TARGET_DIFFERS], PASSING], (), READY, 0),  # a store already moved is done, not a block
    ([[TARGET_DIFFERS]] * 3, (), NO_CHANGES, 0),
    ([PASSING, [unverified("proxy.credential", "not checked")], PASSING], (), NOT_READY, 3),
    ([PASSING, [TARGET_DIFFERS, unverified("proxy.credential", "x")], PASSING], (), READY, 0),
    ([PASSING, [block("vpc.service_state", "Pending")], PASSING], (), BLOCKED, 3),
    ([PASSING, PASSING, PASSING], (('session_duration = "1h"', 'session_duration = "15m"'),), BLOCKED, 3),
    ([[TARGET_DIFFERS]] * 3, (('session_duration = "1h"', 'session_duration = "15m"'),), BLOCKED, 3),  # fail closed
])
def test_the_verdict_counts_a_block_anywhere_and_each_store_as_its_own_run(stores, edits, verdict, code):
    spec = fleet(*edits)
    result = fleet_report(spec, report(spec, *stores))
    assert (result.verdict, result.exit_code) == (verdict, code)


def test_the_waves_and_the_shared_proxy_come_from_the_snapshots_in_the_report():
    spec = fleet(HAND_WAVE)
    result = fleet_report(spec, report(spec, PASSING, PASSING, PASSING, current=SHARED_TODAY))
    assert current_endpoints(spec, result.report.stores) == SHARED_TODAY
    assert [f.status for f in result.findings if f.check == SHARED_PROXY_CHECK] == ["block"]
    assert (result.verdict, result.wave_of(B), result.wave_of(C)) == (BLOCKED, 1, 2)


def test_a_translated_plan_is_read_store_by_store_in_the_fleets_order():
    """A scrubbed twin renames the stores and hosts of the whole plan; the fleet's refs and waves stay."""
    spec = fleet()
    twin = [replace(ks, id=f"cks-9{ks.ref[5:]}", target=replace(ks.target, uri_endpoint=f"https://p{i}.example.net"))
            for i, ks in enumerate(spec.whole.keystores)]
    seen = seen_as(spec, replace(spec.whole, keystores=tuple(twin)))
    assert [s.ref for s in seen.stores] == [A, B, C]
    assert [s.keystore.target.uri_endpoint for s in seen.stores] == [f"https://p{i}.example.net" for i in range(3)]
    assert seen_as(spec, spec.whole) is spec
