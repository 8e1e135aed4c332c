"""The fleet file and the rollout's order (issue 16): pure logic, no world, no AWS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migrator.fleet.rollout import StoreSlot, Tolerance, Wave, plan_waves, shared_proxies
from migrator.fleet.spec import Rollout, load_fleet, parse_fleet
from migrator.plan import parse_plan
from migrator.plan_toml import PlanError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "plans" / "fleet-example.toml"

SMALL = """
[fleet]
name = "small"
account_id = "111122223333"

[access]
role_name = "xks-migrator"

[accounts]
home = { account_id = "111122223333" }
other = { account_id = "444455556666", external_id = "ext-1" }

[rollout]
canary = ["cks-1111111111111111a"]
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

[[targets]]
account = "other"
region = "eu-west-1"
[[targets.stores]]
name = "ledger"
[targets.stores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://b-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.eu-west-1.vpce-svc-0bbbbbbbbbbbbbbb1"
"""


def test_the_example_is_a_fleet_of_twenty_stores_in_five_accounts_and_two_regions():
    fleet = load_fleet(EXAMPLE)
    assert len(fleet.stores) >= 20
    assert len({s.account.account_id for s in fleet.stores}) >= 5
    assert {s.keystore.region for s in fleet.stores} == {"us-east-1", "eu-west-1"}
    assert fleet.rollout.canary and fleet.rollout.max_in_flight >= 2


def test_each_store_has_a_plan_of_its_own_that_the_plan_parser_accepts():
    fleet = parse_fleet(SMALL, "small.toml")
    home, other = fleet.stores
    assert other.ref == "ledger" and other.where == "targets[1].stores[0]"
    reread = parse_plan(other.plan.text, "again")
    ks = reread.keystores[0]
    assert (ks.region, ks.account_id, ks.external_id) == ("eu-west-1", "444455556666", "ext-1")
    assert ks.role_arn == "arn:aws:iam::444455556666:role/xks-migrator"
    assert home.keystore.role_arn == "arn:aws:iam::111122223333:role/xks-migrator"
    assert [k.ref for k in fleet.whole.keystores] == ["cks-1111111111111111a", "ledger"]
    assert fleet.whole.cells == [("111122223333", "us-east-1"), ("444455556666", "eu-west-1")]


def test_the_fleets_request_rate_reaches_every_stores_plan_and_the_whole_one():
    fleet = parse_fleet(SMALL.replace("[access]", "[defaults]\nrequest_rate = 3\n\n[access]", 1), "small.toml")
    assert [s.plan.request_rate for s in fleet.stores] == [3.0, 3.0] and fleet.whole.request_rate == 3.0
    assert parse_fleet(SMALL, "small.toml").whole.request_rate == 1.0  # the default, as in a plan


def _broken(old: str, new: str) -> str:
    assert old in SMALL
    return SMALL.replace(old, new, 1)


BAD = [
    ("unknown account reference", _broken('account = "other"', 'account = "nobody"'),
     r"small\.toml: targets\[1\]\.account: 'nobody' is not an account of \[accounts\]"),
    ("duplicate store", _broken('name = "ledger"', 'id = "cks-1111111111111111a"'),
     r"small\.toml: targets\[1\]\.stores\[0\]\.id: 'cks-1111111111111111a' is also used by targets\[0\]\.stores\[0\]"),
    ("tolerance below zero", _broken("max_in_flight = 2", "max_in_flight = 2\nfailure_tolerance = -1"),
     r"small\.toml: rollout\.failure_tolerance: must be 0 or more"),
    ("wave naming an unknown store", _broken("max_in_flight = 2", 'max_in_flight = 2\nwaves = [["ledger", "gone"]]'),
     r"small\.toml: rollout\.waves\[0\]\[1\]: 'gone' is not a store of this fleet"),
    ("a store in two waves", _broken("max_in_flight = 2", 'waves = [["cks-1111111111111111a"]]'),
     r"small\.toml: rollout\.waves\[0\]\[0\]: 'cks-1111111111111111a' is already in rollout\.canary"),
    ("a store naming its own region", _broken('name = "ledger"', 'name = "ledger"\nregion = "us-east-1"'),
     r"small\.toml: targets\[1\]\.stores\[0\]\.region: comes from the group"),
    ("a bad target, named where it is", _broken("https://b-private", "http://b-private"),
     r"small\.toml: targets\[1\]\.stores\[0\]\.target\.uri_endpoint: .*only over HTTPS"),
    ("no role for another account", _broken('role_name = "xks-migrator"', 'external_id = "e-1"'),
     r"small\.toml: accounts\.other\.account_id: is another account than the caller's"),
    ("a role template in the wrong account", _broken('role_name = "xks-migrator"',
                                                     'role_arn = "arn:aws:iam::999999999999:role/x"'),
     r"small\.toml: access\.role_arn: .* is a role in account 999999999999, not in accounts\.home's"),
    ("a typo'd key", _broken("max_in_flight = 2", "max_inflight = 2"),
     r"small\.toml: rollout\.max_inflight: unknown key"),
    ("no stores", SMALL.split("[[targets]]")[0], r"small\.toml: targets: at least one"),
    ("a request rate above the quota", _broken("[access]", "[defaults]\nrequest_rate = 6\n\n[access]"),
     r"small\.toml: defaults\.request_rate: must be more than 0 and at most 5 requests per second"),
]


@pytest.mark.parametrize(("label", "text", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_fleet_file_is_one_line_naming_the_file_and_the_key(label, text, message):
    with pytest.raises(PlanError) as caught:
        parse_fleet(text, "small.toml")
    assert "\n" not in str(caught.value)
    assert re.match(message, str(caught.value)), str(caught.value)


def _slots(*pairs: tuple[str, str]) -> list[StoreSlot]:
    return [StoreSlot(ref, frozenset(proxy.split("+"))) for ref, proxy in pairs]


def test_the_canary_goes_first_and_alone_then_the_ramp_doubles():
    stores = _slots(*((f"s{i}", f"p{i}") for i in range(10)))
    waves = plan_waves(Rollout(canary=("s3",)), stores)
    assert waves[0] == Wave(1, ("s3",), canary=True)
    assert [len(w.refs) for w in waves] == [1, 2, 4, 3]
    assert sorted(r for w in waves for r in w.refs) == sorted(s.ref for s in stores)


def test_without_a_canary_the_ramp_starts_with_one_and_one_wave_takes_the_rest():
    stores = _slots(*((f"s{i}", f"p{i}") for i in range(7)))
    assert [len(w.refs) for w in plan_waves(Rollout(), stores)] == [1, 2, 4]
    explicit = plan_waves(Rollout(waves=(("s6", "s5"),), ramp="one_wave"), stores)
    assert [w.refs for w in explicit] == [("s6", "s5"), ("s0", "s1", "s2", "s3", "s4")]


def test_the_ramp_keeps_stores_of_one_proxy_in_different_waves():
    stores = _slots(("a", "new-a+shared-today"), ("b", "new-b+shared-today"), ("c", "p3"), ("d", "p4"))
    waves = plan_waves(Rollout(ramp="one_wave"), stores)
    assert [w.refs for w in waves] == [("a", "c", "d"), ("b",)]
    assert all(not shared_proxies(w, stores) for w in waves)
    assert shared_proxies(Wave(1, ("a", "b", "c")), stores) == [("shared-today", "a", "b")]


def test_failures_past_the_tolerance_stop_new_starts_and_name_the_store():
    gate = Tolerance(failure_tolerance=1)
    gate.record("s1", "completed", canary=False)
    gate.record("s2", "rolled_back", canary=False)
    assert gate.may_start
    gate.record("s3", "stuck", canary=False)
    assert not gate.may_start and gate.stopped_by == "s3"
    gate.record("s4", "rolled_back", canary=False)
    assert gate.stopped_by == "s3"  # the first store past the tolerance stopped it


def test_a_failed_canary_stops_the_fleet_whatever_the_tolerance():
    gate = Tolerance(failure_tolerance=5)
    gate.record("canary", "blocked", canary=True)
    assert not gate.may_start and gate.stopped_by == "canary"
