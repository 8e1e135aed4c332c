"""The one AWS CLI renderer (migrator.preflight.calls): run, rollback and stuck commands, without a world.

The stuck commands and RUNBOOK.md#stuck must name the same flags: a restore that drops the endpoint
service owner fails for a cross-account service, which is how they drifted once.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from migrator.aws.store_config import PUBLIC, VPC, Observation, StoreConfig
from migrator.engine.runbook import stuck_help
from migrator.plan import Plan, parse_plan
from migrator.preflight.calls import cli_flags, mutating_calls, rollback_calls, stuck_commands

REPO = Path(__file__).resolve().parents[2]
STORE = "cks-1234567890abcdef0"
REGION = "us-east-1"
SERVICE = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
OWNER = "444455556666"
SECRET = "c2VjcmV0IHZhbHVlIHRoYXQgbXVzdCBuZXZlciBiZSBwcmludGVk"

OLD_KEY_ID = "OLDACCESSKEYID234567"
PUBLIC_CONFIG = StoreConfig(PUBLIC, "https://myproxy.xks.example.com", "/kms/xks/v1", access_key_id=OLD_KEY_ID)
VPC_CONFIG = StoreConfig(VPC, "https://myproxy-private.xks.example.com", "/kms/xks/v1", SERVICE, OWNER, OLD_KEY_ID)


def observed(config: StoreConfig, state: str = "CONNECTED") -> Observation:
    return Observation(STORE, "payments", "EXTERNAL_KEY_STORE", state, "", config)


def plan(target: str, extra: str = "") -> Plan:
    return parse_plan(f"""
[plan]
name = "p"
region = "{REGION}"

[[keystores]]
id = "{STORE}"

[keystores.target]
{target}
{extra}
""", "p.toml")


TO_VPC = f'connectivity = "VPC_ENDPOINT_SERVICE"\nuri_endpoint = "https://myproxy-private.xks.example.com"\n' \
         f'vpc_endpoint_service_name = "{SERVICE}"'
TO_VPC_CROSS_ACCOUNT = TO_VPC + f'\nvpc_endpoint_service_owner = "{OWNER}"'
TO_PUBLIC = 'connectivity = "PUBLIC_ENDPOINT"\nuri_endpoint = "https://myproxy.xks.example.com"'
NEW_CREDENTIAL = """
[keystores.target.credential]
access_key_id = "NEWACCESSKEYID234567"
secret = "env:NEW_XKS_SECRET"

[keystores.original_credential]
secret = "env:OLD_XKS_SECRET"
"""


def update_of(commands: list[str]) -> list[str]:
    """The update command's words (the credential part, which is not shell-quoted, kept as one word)."""
    (update,) = [c for c in commands if "update-custom-key-store" in c]
    head, _, credential = update.partition(" --xks-proxy-authentication-credential ")
    return shlex.split(head) + (["--xks-proxy-authentication-credential", credential] if credential else [])


def flag_values(words: list[str]) -> dict[str, str]:
    return {w: words[i + 1] for i, w in enumerate(words) if w.startswith("--xks-proxy-")}


def test_public_to_vpc_run_and_rollback():
    p = plan(TO_VPC)
    ks = p.keystores[0]
    calls = mutating_calls(p, ks, observed(PUBLIC_CONFIG))
    assert [c.split()[2] for c in calls[:4]] == ["disconnect-custom-key-store", "describe-custom-key-stores",
                                                "update-custom-key-store", "connect-custom-key-store"]
    assert flag_values(update_of(calls)) == {
        "--xks-proxy-connectivity": VPC, "--xks-proxy-uri-endpoint": "https://myproxy-private.xks.example.com",
        "--xks-proxy-vpc-endpoint-service-name": SERVICE}
    assert update_of(calls)[-2:] == ["--region", REGION]
    back = rollback_calls(p, ks, observed(PUBLIC_CONFIG))
    assert back[0].startswith(f"aws kms disconnect-custom-key-store --custom-key-store-id {STORE}")
    assert "only if" in back[0]
    # Exactly what the engine sends: back to PUBLIC, no service name (KMS clears it; boto3 refuses '').
    assert flag_values(update_of(back)) == {"--xks-proxy-connectivity": PUBLIC,
                                            "--xks-proxy-uri-endpoint": "https://myproxy.xks.example.com"}


def test_vpc_to_public_run_and_rollback():
    p = plan(TO_PUBLIC)
    ks = p.keystores[0]
    calls = mutating_calls(p, ks, observed(VPC_CONFIG))
    assert flag_values(update_of(calls)) == {"--xks-proxy-connectivity": PUBLIC,
                                             "--xks-proxy-uri-endpoint": "https://myproxy.xks.example.com"}
    back = flag_values(update_of(rollback_calls(p, ks, observed(VPC_CONFIG))))
    assert back == {"--xks-proxy-connectivity": VPC, "--xks-proxy-uri-endpoint": "https://myproxy-private.xks.example.com",
                    "--xks-proxy-vpc-endpoint-service-name": SERVICE, "--xks-proxy-vpc-endpoint-service-owner": OWNER}


def test_cross_account_owner_in_run_rollback_and_stuck_commands():
    p = plan(TO_VPC_CROSS_ACCOUNT)
    ks = p.keystores[0]
    assert flag_values(update_of(mutating_calls(p, ks, observed(PUBLIC_CONFIG))))[
        "--xks-proxy-vpc-endpoint-service-owner"] == OWNER
    # From a cross-account VPC store back to it: the rollback and the manual restore both name the owner.
    other = StoreConfig(VPC, "https://other-private.xks.example.com", "/kms/xks/v1", SERVICE.replace("0123", "9999"),
                        "777788889999", OLD_KEY_ID)
    back = rollback_calls(plan(TO_PUBLIC), plan(TO_PUBLIC).keystores[0], observed(other))
    assert flag_values(update_of(back))["--xks-proxy-vpc-endpoint-service-owner"] == "777788889999"
    stuck = stuck_commands(REGION, STORE, VPC_CONFIG, "FAILED")
    assert flag_values(update_of(stuck)) == {
        "--xks-proxy-connectivity": VPC, "--xks-proxy-uri-endpoint": "https://myproxy-private.xks.example.com",
        "--xks-proxy-uri-path": "/kms/xks/v1", "--xks-proxy-vpc-endpoint-service-name": SERVICE,
        "--xks-proxy-vpc-endpoint-service-owner": OWNER}


def test_a_public_original_restores_without_service_flags():
    words = update_of(stuck_commands(REGION, STORE, PUBLIC_CONFIG, "DISCONNECTED"))
    assert flag_values(words) == {"--xks-proxy-connectivity": PUBLIC,
                                  "--xks-proxy-uri-endpoint": "https://myproxy.xks.example.com",
                                  "--xks-proxy-uri-path": "/kms/xks/v1"}


def test_credentials_are_shown_as_references_never_values(monkeypatch):
    monkeypatch.setenv("NEW_XKS_SECRET", SECRET)
    monkeypatch.setenv("OLD_XKS_SECRET", SECRET)
    p = plan(TO_VPC, NEW_CREDENTIAL)
    ks = p.keystores[0]
    calls = mutating_calls(p, ks, observed(PUBLIC_CONFIG))
    back = rollback_calls(p, ks, observed(PUBLIC_CONFIG))
    stuck = stuck_commands(REGION, STORE, PUBLIC_CONFIG, "FAILED")
    assert flag_values(update_of(calls))["--xks-proxy-authentication-credential"] == \
        "AccessKeyId=NEWACCESSKEYID234567,RawSecretAccessKey=<env:NEW_XKS_SECRET>"
    # The rollback restores the original access key id (from the snapshot) with the original secret's reference.
    assert flag_values(update_of(back))["--xks-proxy-authentication-credential"] == \
        f"AccessKeyId={OLD_KEY_ID},RawSecretAccessKey=<env:OLD_XKS_SECRET>"
    assert SECRET not in "\n".join(calls + back + stuck)
    assert not any("RawSecretAccessKey" in c for c in stuck)  # the operator supplies it (RUNBOOK.md#stuck)


@pytest.mark.parametrize(("state", "disconnects"), [("CONNECTED", True), ("CONNECTING", True), ("FAILED", True),
                                                    ("DISCONNECTED", False), ("DISCONNECTING", False),
                                                    ("unknown", False)])
def test_stuck_commands_disconnect_only_a_store_that_is_not_disconnected(state, disconnects):
    commands = stuck_commands(REGION, STORE, PUBLIC_CONFIG, state)
    ops = [shlex.split(c)[4] for c in commands]
    expected = ["describe-custom-key-stores", *(["disconnect-custom-key-store"] if disconnects else []),
                "update-custom-key-store", "connect-custom-key-store", "describe-custom-key-stores"]
    assert ops == expected
    assert all(f"--custom-key-store-id {STORE}" in c and f"--region {REGION}" in c for c in commands)
    assert commands[-1].endswith("--query 'CustomKeyStores[0].[ConnectionState,ConnectionErrorCode]'")


def test_stuck_commands_without_a_snapshot_skip_the_update():
    ops = [shlex.split(c)[4] for c in stuck_commands(REGION, STORE, None, "CONNECTED")]
    assert ops == ["describe-custom-key-stores", "disconnect-custom-key-store", "connect-custom-key-store",
                   "describe-custom-key-stores"]


def test_stuck_help_reports_the_last_observation_and_the_commands():
    last = Observation(STORE, "payments", "EXTERNAL_KEY_STORE", "FAILED", "XKS_PROXY_TIMED_OUT", PUBLIC_CONFIG)
    help_ = stuck_help(REGION, STORE, VPC_CONFIG, last)
    assert help_ == {"connection_state": "FAILED", "connection_error_code": "XKS_PROXY_TIMED_OUT",
                     "commands": stuck_commands(REGION, STORE, VPC_CONFIG, "FAILED"),
                     "runbook": "xksmigrate runbook stuck"}
    unseen = stuck_help(REGION, STORE, None, None)
    assert (unseen["connection_state"], unseen["connection_error_code"]) == ("unknown", None)


def test_runbook_stuck_section_names_every_flag_the_renderer_emits():
    text = (REPO / "RUNBOOK.md").read_text()
    section = re.search(r"^## Stuck\n(.*?)^## ", text, re.S | re.M)
    assert section, "RUNBOOK.md has no Stuck section"
    stuck = section.group(1)
    missing = [flag for flag in cli_flags() if flag not in stuck]
    assert not missing, f"RUNBOOK.md#stuck does not name {missing}"
    # The restore command gives the service name and owner only when the snapshot has them, like stuck_commands.
    assert '${ORIG_VPCE_OWNER:+--xks-proxy-vpc-endpoint-service-owner "$ORIG_VPCE_OWNER"}' in stuck
    emitted = {w for c in stuck_commands(REGION, STORE, VPC_CONFIG, "FAILED") for w in shlex.split(c)
               if w.startswith("--xks-proxy-")}
    assert emitted <= set(cli_flags())
