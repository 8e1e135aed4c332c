"""Pure logic of a scrubbed capture: the keyed pseudonyms keep shape and relationships, and a plan written
against real names reads through them (issue 14). No world, no network."""

from __future__ import annotations

import re
import secrets
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrator.capture.pseudonyms import CaptureKeyError, Pseudonyms, key_check, key_from_text, load_or_create_key
from migrator.capture.translate import TwinKeyError, check_key, translate_plan
from migrator.plan import (
    RE_ACCESS_KEY_ID,
    RE_ACCOUNT,
    RE_ENDPOINT,
    RE_PATH,
    RE_ROLE_ARN,
    RE_SERVICE,
    RE_STORE_ID,
    parse_plan,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SAMPLES = {"account": "111122223333", "key_id": "1234abcd-12ab-34cd-56ef-1234567890ab"}
digits12 = st.text("0123456789", min_size=12, max_size=12)


@given(digits12)
def test_an_account_keeps_its_shape_and_is_stable_under_one_key(account):
    ps = Pseudonyms(KEY)
    assert RE_ACCOUNT.match(ps.account(account))
    assert ps.account(account) == Pseudonyms(KEY).account(account)


def test_another_key_gives_other_pseudonyms():
    a, b = Pseudonyms(KEY), Pseudonyms(OTHER_KEY)
    for fn in ("account", "keystore_id", "key_id", "host", "service_id", "access_key_id"):
        value = SAMPLES.get(fn, "cks-1234567890abcdef0")
        assert getattr(a, fn)(value) != getattr(b, fn)(value), fn
        assert getattr(a, fn)(value) != value, fn


def test_shapes_are_what_the_plan_and_the_world_accept():
    ps = Pseudonyms(KEY)
    assert RE_STORE_ID.match(ps.keystore_id("cks-1234567890abcdef0"))
    assert UUID.match(ps.key_id("1234abcd-12ab-34cd-56ef-1234567890ab"))
    assert RE_ACCESS_KEY_ID.match(ps.access_key_id("AKIAXKSPROXYEXAMPLE1"))
    assert len(ps.access_key_id("AKIAXKSPROXYEXAMPLE1")) == 20
    assert RE_ENDPOINT.match(ps.uri_endpoint("https://xks.payments.example.com"))
    assert RE_PATH.match(ps.uri_path("/payments/kms/xks/v1"))
    assert ps.uri_path("/kms/xks/v1") == "/kms/xks/v1"
    service = ps.service_name("com.amazonaws.vpce.eu-west-1.vpce-svc-0123456789abcdef0")
    assert RE_SERVICE.match(service) and service.startswith("com.amazonaws.vpce.eu-west-1.vpce-svc-")
    role = ps.arn("arn:aws:iam::111122223333:role/ops/xks-migrator")
    assert RE_ROLE_ARN.match(role)
    assert ps.account("111122223333") in role and "xks-migrator" not in role and ":role/" in role


def test_relationships_survive_the_scrub():
    ps = Pseudonyms(KEY)
    # a wildcard name still covers its hosts, label by label
    wildcard, host = ps.host("*.example.com"), ps.host("xks.example.com")
    assert wildcard.startswith("*.") and host.endswith(wildcard.removeprefix("*"))
    # the private DNS name equals the endpoint host, through either spelling
    assert ps.uri_endpoint("https://XKS.example.com") == "https://" + ps.host("xks.example.com.")
    assert ps.uri_endpoint("https://xks.example.com:8443").endswith(":8443")
    # an ARN's account is the account's pseudonym; service principals name AWS and stay
    assert ps.principal("arn:aws:iam::111122223333:root") == f"arn:aws:iam::{ps.account('111122223333')}:root"
    assert ps.principal("cks.kms.eu-west-1.amazonaws.com") == "cks.kms.eu-west-1.amazonaws.com"
    # two kinds of name never collide even for the same text
    assert ps.name("role", "payments") != ps.name("keystore", "payments")


def test_no_key_is_the_identity():
    ps = Pseudonyms(None)
    for value in ("111122223333", "cks-1234567890abcdef0", "https://xks.example.com", "/p/kms/xks/v1",
                  "arn:aws:iam::111122223333:role/r"):
        assert ps.account(value) == ps.keystore_id(value) == ps.uri_endpoint(value) == ps.arn(value) == value


def test_the_key_file_is_made_once_private_and_read_back(tmp_path: Path):
    path = tmp_path / "state" / "capture.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    path.write_text("not hex\n")
    with pytest.raises(CaptureKeyError, match="cannot read it"):
        load_or_create_key(path)


def test_a_key_given_as_text():
    hexkey = secrets.token_hex(32)
    assert key_from_text(hexkey, "env:K") == bytes.fromhex(hexkey)
    assert len(key_from_text("a long enough passphrase", "env:K")) == 32
    with pytest.raises(CaptureKeyError, match="env:K"):
        key_from_text("short", "env:K")


def test_a_twin_read_with_the_wrong_key_is_refused_in_one_line():
    header = {"key_check": key_check(KEY)}
    check_key(header, KEY, "twin.toml")
    for wrong in (OTHER_KEY, None):
        with pytest.raises(TwinKeyError, match=r"twin\.toml: this twin was scrubbed with another capture key"):
            check_key(header, wrong, "twin.toml")


PLAN = textwrap.dedent("""
    [plan]
    name = "payments-to-privatelink"
    region = "eu-west-1"
    max_disconnected = "15m"

    [[keystores]]
    id = "cks-1234567890abcdef0"
    account_id = "111122223333"
    role_arn = "arn:aws:iam::111122223333:role/xks-migrator"
    probe = "10.0.0.5:443"

    [keystores.target]
    connectivity = "VPC_ENDPOINT_SERVICE"
    uri_endpoint = "https://xks.payments.example.com"
    uri_path = "/payments/kms/xks/v1"
    vpc_endpoint_service_name = "com.amazonaws.vpce.eu-west-1.vpce-svc-0123456789abcdef0"

    [keystores.verify]
    key_ids = ["1234abcd-12ab-34cd-56ef-1234567890ab"]
    """)


def test_a_plan_against_real_names_reads_through_the_pseudonyms():
    plan = parse_plan(PLAN, "real.toml")
    ps = Pseudonyms(KEY)
    twin = translate_plan(plan, ps, "twin.toml")
    store, real = twin.keystores[0], plan.keystores[0]
    assert store.id == ps.keystore_id(real.id) != real.id
    assert store.account_id == ps.account("111122223333")
    assert store.role_arn == ps.arn("arn:aws:iam::111122223333:role/xks-migrator")
    assert store.target.uri_endpoint == ps.uri_endpoint("https://xks.payments.example.com")
    assert store.target.uri_path == ps.uri_path("/payments/kms/xks/v1")
    assert store.target.vpc_endpoint_service_name == ps.service_name(real.target.vpc_endpoint_service_name or "")
    assert store.verify_key_ids == (ps.key_id("1234abcd-12ab-34cd-56ef-1234567890ab"),)
    assert store.probe is None  # the real network's address means nothing on the twin
    assert twin.path == plan.path and twin.max_disconnected == plan.max_disconnected
    assert translate_plan(plan, Pseudonyms(None), "twin.toml") is plan
