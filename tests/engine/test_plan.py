"""Plan loading: the examples load; every broken plan is one PlanError line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.plan import PUBLIC, VPC, Plan, PlanError, load_plan, parse_duration, parse_plan

REPO = Path(__file__).resolve().parents[2]
SECRET = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8="  # 52 chars of the raw secret alphabet

BASE = """\
[plan]
name = "t"
region = "us-east-1"
max_disconnected = "15m"
poll_interval = "5s"

[[keystores]]
id = "cks-1234567890abcdef0"

[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://myproxy-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"

[keystores.verify]
key_ids = []
"""

CRED = """
[keystores.target.credential]
access_key_id = "ABCDEFGHIJKLMNOPQRST"
secret = "env:NEW_XKS_SECRET"

[keystores.original_credential]
secret = "file:/run/old-secret"
"""


def parse(text: str | bytes) -> Plan:
    return parse_plan(text, "plans/x.toml")


def test_example_plans_load():
    """Every example in plans/ loads: a plan as a plan, a fleet file (plans/fleet-*.toml) as a fleet."""
    from migrator.fleet.spec import load_fleet

    for path in sorted((REPO / "plans").glob("fleet-*.toml")):
        assert load_fleet(path).stores
    for path in sorted(p for p in (REPO / "plans").glob("*.toml") if not p.name.startswith("fleet-")):
        plan = load_plan(path)
        assert plan.keystores and plan.path == str(path)
        assert plan.text == path.read_text()
        import hashlib

        assert plan.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_base_and_credentials_parse():
    plan = parse(BASE + CRED)
    store = plan.keystores[0]
    assert store.ref == "cks-1234567890abcdef0" and store.target.connectivity == VPC
    assert store.target.credential.secret_ref == "env:NEW_XKS_SECRET"
    assert store.original_credential.secret_ref == "file:/run/old-secret"
    assert store.original_credential.access_key_id == ""
    assert plan.max_disconnected == 900 and plan.poll_interval == 5


def test_accept_no_rollback_instead_of_original_credential():
    text = BASE + CRED.split("[keystores.original_credential]")[0]
    text = text.replace('id = "cks-1234567890abcdef0"', 'id = "cks-1234567890abcdef0"\naccept_no_rollback = true')
    store = parse(text).keystores[0]
    assert store.accept_no_rollback and store.original_credential is None


def test_public_target_and_load_plan_roots(tmp_path):
    text = BASE.replace("VPC_ENDPOINT_SERVICE", PUBLIC).replace(
        'vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"',
        'uri_path = "/tenant-1/kms/xks/v1"',
    ).replace('poll_interval = "5s"', 'poll_interval = "5s"\nextra_trusted_roots = ["ca.pem", "/abs/ca.pem"]')
    path = tmp_path / "p.toml"
    path.write_text(text)
    plan = load_plan(path)
    assert plan.keystores[0].target.uri_path == "/tenant-1/kms/xks/v1"
    assert plan.extra_trusted_roots == (str(tmp_path / "ca.pem"), "/abs/ca.pem")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("15m", 900), ("5s", 5), ("1h30m", 5400), ("90s", 90), ("250ms", 0.25), (30, 30), (1.5, 1.5), ("1m30s", 90)],
)
def test_durations(value, seconds):
    assert parse_duration(value, "f: k") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "15", "m", "30m1h", "5s5s", "-5s", "1d", "5 s", True, [1], -1, float("inf")])
def test_bad_durations(value):
    with pytest.raises(PlanError, match=r"^f: k: "):
        parse_duration(value, "f: k")


def sub(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


EP = 'uri_endpoint = "https://myproxy-private.xks.example.com"'
SVC = 'vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"'
TO_PUBLIC = sub('connectivity = "VPC_ENDPOINT_SERVICE"', f'connectivity = "{PUBLIC}"', sub(SVC, ""))

BROKEN = [
    ("not toml", "[plan\nname = 1", "", "not valid TOML"),
    ("bad toml value", sub('name = "t"', "name = t"), "", "line 2"),
    ("empty file", "", "plan", "is required"),
    ("no keystores", BASE.split("[[keystores]]")[0], "keystores", "at least one"),
    ("no target", sub("[keystores.target]", "[keystores.other]"), "keystores[0].other", "unknown key"),
    ("missing target", BASE.split("[keystores.target]")[0], "keystores[0].target", "is required"),
    ("unknown top key", "oops = 1\n" + BASE, "oops", "unknown key"),
    ("unknown plan key", sub('name = "t"', 'name = "t"\nnmae = "x"'), "plan.nmae", "unknown key"),
    ("unknown target key", sub(EP, EP + '\nport = 443'), "keystores[0].target.port", "unknown key"),
    ("name wrong type", sub('name = "t"', "name = 5"), "plan.name", "must be a string, not integer"),
    ("region wrong", sub('region = "us-east-1"', 'region = "US East"'), "plan.region", "does not match"),
    ("plan is array", sub("[plan]", "[[plan]]"), "plan", "must be a table"),
    ("keystores not tables", 'keystores = ["a"]\n' + BASE.split("[[keystores]]")[0], "keystores", "array of tables"),
    ("bad duration", sub('"15m"', '"15 minutes"'), "plan.max_disconnected", "not a duration"),
    ("zero budget", sub('"15m"', '"0s"'), "plan.max_disconnected", "more than 0"),
    ("poll too fast", sub('"5s"', '"500ms"'), "plan.poll_interval", "at least 1s"),
    ("poll >= budget", sub('"15m"', '"5s"'), "plan.poll_interval", "shorter than max_disconnected"),
    ("account digits", sub('region = "us-east-1"', 'region = "us-east-1"\naccount_id = "1234"'), "plan.account_id",
     "must be 12-12"),
    ("account int", sub('region = "us-east-1"', 'region = "us-east-1"\naccount_id = 111122223333'),
     "plan.account_id", "must be a string"),
    ("bad id", sub("cks-1234567890abcdef0", "cks-XYZ"), "keystores[0].id", "characters"),
    ("bad id pattern", sub("cks-1234567890abcdef0", "cks-1234567890ABCDEF0"), "keystores[0].id", "does not match"),
    ("id and name", sub('id = "cks-1234567890abcdef0"', 'id = "cks-1234567890abcdef0"\nname = "n"'),
     "keystores[0].id", "exactly one"),
    ("neither id nor name", sub('id = "cks-1234567890abcdef0"', ""), "keystores[0].id", "id or name is required"),
    ("duplicate store", BASE + BASE[BASE.index("[[keystores]]"):], "keystores[1].id", "also used by keystores[0]"),
    ("endpoint with port", sub(EP, 'uri_endpoint = "https://h.example.com:443"'), "keystores[0].target.uri_endpoint",
     "'https://h.example.com:443' does not match ^https://[a-zA-Z0-9.-]+$ (KMS takes no port; it always uses 443)"),
    ("endpoint http", sub(EP, 'uri_endpoint = "http://h.example.com"'), "keystores[0].target.uri_endpoint", "HTTPS"),
    ("endpoint with path", sub(EP, 'uri_endpoint = "https://h.example.com/kms"'),
     "keystores[0].target.uri_endpoint", "uri_path"),
    ("endpoint newline", sub(EP, 'uri_endpoint = "https://h.example.com\\n"'), "keystores[0].target.uri_endpoint",
     "does not match"),
    ("path newline", sub(EP, EP + '\nuri_path = "/kms/xks/v1\\n"'), "keystores[0].target.uri_path", "does not match"),
    ("endpoint too short", sub(EP, 'uri_endpoint = "https://h"'), "keystores[0].target.uri_endpoint", "10-128"),
    ("path without kms", sub(EP, EP + '\nuri_path = "/tenant/xks/v1"'), "keystores[0].target.uri_path",
     "does not match"),
    ("path v3 digits", sub(EP, EP + '\nuri_path = "/kms/xks/v100"'), "keystores[0].target.uri_path", "does not match"),
    ("bad connectivity", sub('"VPC_ENDPOINT_SERVICE"', '"PRIVATE"'), "keystores[0].target.connectivity", "must be"),
    ("vpc without service", sub(SVC, ""), "keystores[0].target.vpc_endpoint_service_name", "is required"),
    ("bad service name", sub("com.amazonaws", "org.amazonaws"), "keystores[0].target.vpc_endpoint_service_name",
     "does not match"),
    ("service other region", sub("vpce.us-east-1", "vpce.us-west-2"), "keystores[0].target.vpc_endpoint_service_name",
     "Region us-west-2"),
    ("bad owner", sub(SVC, SVC + '\nvpc_endpoint_service_owner = "12ab"'),
     "keystores[0].target.vpc_endpoint_service_owner", "12-12"),
    ("public with service", sub(EP, EP + "\n" + SVC, TO_PUBLIC), "keystores[0].target.vpc_endpoint_service_name",
     "must not be set"),
    ("public with owner", sub(EP, EP + '\nvpc_endpoint_service_owner = "111122223333"', TO_PUBLIC),
     "keystores[0].target.vpc_endpoint_service_owner", "must not be set"),
    ("no original credential", (BASE + CRED).split("[keystores.original_credential]")[0],
     "keystores[0].original_credential", "accept_no_rollback"),
    ("bad access key id", sub("ABCDEFGHIJKLMNOPQRST", "abc", BASE + CRED),
     "keystores[0].target.credential.access_key_id", "characters"),
    ("credential without key id", sub('access_key_id = "ABCDEFGHIJKLMNOPQRST"', "", BASE + CRED),
     "keystores[0].target.credential.access_key_id", "is required"),
    ("bad env ref", sub("env:NEW_XKS_SECRET", "env:1-bad", BASE + CRED), "keystores[0].target.credential.secret",
     "must be a reference"),
    ("too many verify keys", sub("key_ids = []", "key_ids = [" + ", ".join(
        f'"{i:08x}-2222-3333-4444-555566667777"' for i in range(11)) + "]"), "keystores[0].verify.key_ids",
     "at most 10"),
    ("verify alias", sub("key_ids = []", 'key_ids = ["alias/x"]'), "keystores[0].verify.key_ids[0]", "not a key id"),
    ("verify arn region", sub("key_ids = []", 'key_ids = ["arn:aws:kms:eu-west-1:111122223333:key/'
                              'aaaa1111-2222-3333-4444-555566667777"]'), "keystores[0].verify.key_ids[0]", "region"),
    ("verify int", sub("key_ids = []", "key_ids = [1]"), "keystores[0].verify.key_ids[0]", "not a key id"),
    ("probe without port", sub('id = "cks-1234567890abcdef0"', 'id = "cks-1234567890abcdef0"\nprobe = "h"'),
     "keystores[0].probe", "host:port"),
    ("probe port range", sub('id = "cks-1234567890abcdef0"', 'id = "cks-1234567890abcdef0"\nprobe = "h:70000"'),
     "keystores[0].probe", "1-65535"),
    ("non utf-8", BASE.encode().replace(b'name = "t"', b'name = "\xff"'), "", "not UTF-8"),
    ("over 1 MiB", BASE + "#" * (1024 * 1024) + "\n", "", "1 MiB"),
]


@pytest.mark.parametrize(("text", "key", "reason"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_plans(text, key, reason):
    with pytest.raises(PlanError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    prefix = f"plans/x.toml: {key}: " if key else "plans/x.toml: "
    assert message.startswith(prefix), message
    assert reason in message, message


@pytest.mark.parametrize(
    "where",
    [
        ('secret = "env:NEW_XKS_SECRET"', f'secret = "{SECRET}"', "keystores[0].target.credential.secret"),
        ('secret = "file:/run/old-secret"', f'secret = "{SECRET}"', "keystores[0].original_credential.secret"),
        ('secret = "env:NEW_XKS_SECRET"', f'secret = "hunter2-{SECRET[:10]}"', "keystores[0].target.credential.secret"),
        ('access_key_id = "ABCDEFGHIJKLMNOPQRST"', f'access_key_id = "{SECRET}"',
         "keystores[0].target.credential.access_key_id"),
        (EP, f'uri_endpoint = "https://{SECRET}"', "keystores[0].target.uri_endpoint"),
        ('name = "t"', f'name = "t"\n"{SECRET}" = "x"', "plan."),
        ('name = "t"', f'name = "t"\nsecret = "{SECRET}"', "plan.secret"),
        ('name = "t"', f'name = "t"\n"{SECRET}" = 1\n"{SECRET}" = 2', "not valid TOML"),
    ],
)
def test_inlined_secret_is_refused_and_not_echoed(where):
    old, new, key = where
    with pytest.raises(PlanError) as info:
        parse(sub(old, new, BASE + CRED))
    message = str(info.value)
    assert message.startswith(f"plans/x.toml: {key}"), message
    assert SECRET not in message and SECRET[:20] not in message and "hunter2" not in message


def test_load_plan_errors(tmp_path):
    with pytest.raises(PlanError, match=r"missing\.toml: cannot read: No such file"):
        load_plan(tmp_path / "missing.toml")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (10 * 1024 * 1024))
    with pytest.raises(PlanError, match="1 MiB"):
        load_plan(big)


# --- fuzzing: TOML-ish mutations give a Plan or a one-line PlanError, nothing else --------------

LINES = (BASE + CRED).splitlines()
FRAGMENTS = ["=", "[", "]", "[[", '"', "'", "\\", "\n", "#", ",", "{", "}", "1", "-1", "true", "1979-05-27", "0x1f",
             "inf", "nan", "\x00", "\xff", "\ufeff", "é", "cks-", "https://", ":443", "/kms/xks/v1", "env:", "file:",
             "secretsmanager:", SECRET, "[keystores.target]", "[[keystores]]", "key_ids = [", "[" * 50, "]" * 50]


@st.composite
def mutated_plans(draw) -> str | bytes:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "dup", "swap", "splice"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if op == "delete" and lines:
            del lines[i]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(FRAGMENTS)) + draw(st.text(max_size=20)))
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "splice" and lines:
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.sampled_from(FRAGMENTS)) + lines[i][pos:]
    text = "\n".join(lines)
    if draw(st.booleans()):
        return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else text.encode("latin-1", "replace")
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_plans())
def test_mutations_give_plan_or_one_line_error(text):
    try:
        plan = parse(text)
    except PlanError as exc:
        message = str(exc)
        assert message.startswith("plans/x.toml: ") and "\n" not in message and "\r" not in message
        assert SECRET not in message
    else:
        assert isinstance(plan, Plan) and plan.keystores


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_plan_or_one_line_error(text):
    try:
        parse(text)
    except PlanError as exc:
        assert "\n" not in str(exc)


def to_toml(value) -> str:
    """A tiny inline-TOML writer, enough to re-serialize mutated plan data."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value).replace("inf", "inf")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {to_toml(v)}" for k, v in value.items()) + "}"


SCALARS = st.one_of(
    st.sampled_from(["", "15m", "0s", "1h30m", "cks-1234567890abcdef0", "https://h.example.com:443",
                     "https://a.example.com", "/kms/xks/v1", "/x/kms/xks/v1", PUBLIC, VPC, "env:X", "file:/x",
                     "secretsmanager:arn:aws:secretsmanager:us-east-1:111122223333:secret:x", SECRET,
                     "com.amazonaws.vpce.us-east-1.vpce-svc-0abc", "111122223333", "h:443",
                     "aaaa1111-2222-3333-4444-555566667777"]),
    st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.booleans(),
    st.floats(allow_nan=False),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["id", "name", "secret", "uri_endpoint", "x"]), inner, max_size=3), max_leaves=6)


@st.composite
def mutated_data(draw):
    import copy
    import tomllib

    data = copy.deepcopy(tomllib.loads(BASE + CRED))
    for _ in range(draw(st.integers(1, 4))):
        node = data
        while True:  # walk down to a random container
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, dict | list) and child and draw(st.integers(0, 5)) > 0:
                node = child
                continue
            op = draw(st.sampled_from(["delete", "replace", "add"]))
            if op == "delete":
                del node[key]
            elif op == "replace":
                node[key] = draw(VALUES)
            elif isinstance(node, dict):
                node[draw(st.sampled_from(["extra", "secret", "accept_no_rollback", "uri_path", "probe"]))] = draw(
                    VALUES)
            break
    return "\n".join(f"{json_key(k)} = {to_toml(v)}" for k, v in data.items())


def json_key(key: str) -> str:
    import json

    return json.dumps(key, ensure_ascii=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_data())
def test_data_mutations_give_plan_or_one_line_error(text):
    try:
        plan = parse(text)
    except PlanError as exc:
        message = str(exc)
        assert message.startswith("plans/x.toml: ") and "\n" not in message and "\r" not in message
        assert SECRET not in message, message
    else:
        assert isinstance(plan, Plan) and plan.keystores


# -- [preflight] accept_unverified (issue 12: fail closed, accept by name) ----------------------------------

def test_accept_unverified_is_read_in_order_and_absent_means_none():
    assert parse_plan(BASE, "p.toml").accept_unverified == ()
    plan = parse_plan(BASE + '\n[preflight]\naccept_unverified = ["proxy.credential", "rollback.tls.reachable"]\n',
                      "p.toml")
    assert plan.accept_unverified == ("proxy.credential", "rollback.tls.reachable")
    assert parse_plan(BASE + "\n[preflight]\n", "p.toml").accept_unverified == ()


@pytest.mark.parametrize(("body", "where", "reason"), [
    ('accept_unverified = "proxy.credential"', "preflight.accept_unverified", "must be an array, not string"),
    ('accept_unverified = [""]', "preflight.accept_unverified[0]", "is not a check id"),
    ('accept_unverified = ["proxy.credential", 3]', "preflight.accept_unverified[1]", "is not a check id"),
    ('accept_unverified = ["Proxy Credential"]', "preflight.accept_unverified[0]", "is not a check id"),
    ('accept_unverified = ["a.b", "a.b"]', "preflight.accept_unverified", "lists a check twice"),
    ("accept = []", "preflight.accept", "unknown key (expected one of: accept_unverified)"),
])
def test_a_bad_accept_unverified_is_one_line_naming_the_key(body, where, reason):
    with pytest.raises(PlanError) as err:
        parse_plan(BASE + f"\n[preflight]\n{body}\n", "p.toml")
    message = str(err.value)
    assert message.startswith(f"p.toml: {where}: ") and reason in message, message
    assert "\n" not in message


def test_preflight_must_be_a_table():
    with pytest.raises(PlanError, match=r"^p\.toml: preflight: must be a table, not string$"):
        parse_plan('preflight = "x"\n' + BASE, "p.toml")


# -- many accounts and Regions (issue 13) -------------------------------------------------------------------
ROLE = "arn:aws:iam::444455556666:role/xks-migrator"


def test_a_store_names_its_region_account_and_role_and_falls_back_to_the_plan():
    text = sub('name = "t"', 'name = "t"\naccount_id = "111122223333"\nrole_name = "xks-migrator"\n'
                             'external_id = "ext-1"')
    plan = parse_plan(sub('[keystores.target]', 'account_id = "444455556666"\n[keystores.target]', text), "p.toml")
    (ks,) = plan.keystores
    assert (ks.region, ks.account_id, ks.role_arn, ks.external_id) == ("us-east-1", "444455556666", ROLE, "ext-1")
    assert plan.for_store(ks).account_id == "444455556666" and plan.cells == [("444455556666", "us-east-1")]

    own = parse_plan(BASE, "p.toml").keystores[0]
    assert (own.region, own.account_id, own.role_arn, own.external_id) == ("us-east-1", None, None, None)

    explicit = parse_plan(sub('[keystores.target]', f'role_arn = "{ROLE}"\n[keystores.target]'), "p.toml")
    assert explicit.keystores[0].account_id == "444455556666"  # the role's account is the store's


@pytest.mark.parametrize(("body", "where", "reason"), [
    (sub('[keystores.target]', f'account_id = "111122223333"\nrole_arn = "{ROLE}"\n[keystores.target]'),
     "keystores[0].role_arn", "is a role in account 444455556666"),
    (sub('name = "t"', 'name = "t"\naccount_id = "111122223333"', sub('[keystores.target]',
         'account_id = "444455556666"\n[keystores.target]')), "keystores[0].account_id", "cannot be used across"),
    (sub('[keystores.target]', 'role_arn = "arn:aws:iam::4444:role/x"\n[keystores.target]'),
     "keystores[0].role_arn", "arn:aws:iam::ACCOUNT:role/NAME"),
    (sub('[keystores.target]', 'region = "eu-west-1"\n[keystores.target]'),
     "keystores[0].target.vpc_endpoint_service_name", "the key store's Region is eu-west-1"),
])
def test_a_bad_reach_is_one_line_naming_the_key(body, where, reason):
    with pytest.raises(PlanError) as err:
        parse_plan(body, "p.toml")
    assert where in str(err.value) and reason in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_endpoints_are_unique_per_region_not_across_regions():
    store = BASE[BASE.index("[[keystores]]"):]
    other_id = store.replace('id = "cks-1234567890abcdef0"', 'id = "cks-0fedcba9876543210"')
    with pytest.raises(PlanError, match="also used by keystores"):
        parse_plan(BASE + "\n" + other_id, "p.toml")
    elsewhere = other_id.replace("[keystores.target]", 'region = "eu-west-1"\n[keystores.target]', 1).replace(
        "vpce.us-east-1.", "vpce.eu-west-1.")
    plan = parse_plan(BASE + "\n" + elsewhere, "p.toml")
    assert [ks.region for ks in plan.keystores] == ["us-east-1", "eu-west-1"]
