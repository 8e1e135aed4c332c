"""Many accounts and Regions on one endpoint (issue 13): boto3 over HTTP against plans/worlds/multi-account.toml.

The access key decides the account and the signing Region the cell; STS AssumeRole hands out credentials of
the role's account that expire on the world's clock; per account-Region quotas throttle with the error botocore
treats as throttling, and the world's log counts per cell. A world file without [[accounts]] means what it did.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.retries import standard
from world_helpers import FAST_TIME_SCALE, STORE_ID, make_world

from migrator.rehearsal.server import RehearsalServer
from migrator.rehearsal.world import log_analysis, model

WORLD = Path(__file__).resolve().parents[2] / "plans" / "worlds" / "multi-account.toml"
A, B, C = "111122223333", "444455556666", "777788889999"
B_KEY, C_KEY = "AKIAACCOUNTB00000001", "AKIAACCOUNTC00000001"
ROLE_B, ROLE_C = f"arn:aws:iam::{B}:role/xks-migrator", f"arn:aws:iam::{C}:role/xks-migrator"
EXTERNAL_ID = "xksmigrate-rehearsal"
TOOL_KEY = "AKIAREHEARSAL0000000"  # not listed anywhere: the default account's, as every key was before
US_PROXY_CREDENTIAL = {"AccessKeyId": "XKSPROXYUSACCESSKEY23",
                       "RawSecretAccessKey": "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="}


def multi_world(mutate: Callable[[dict[str, Any]], None] | None = None, **world: Any) -> model.World:
    data = model.parse_toml_text(WORLD.read_bytes(), str(WORLD))
    data["world"].update({"time_scale": FAST_TIME_SCALE, **world})
    accounts = {a["id"]: a for a in data["accounts"]}
    accounts[B]["access_keys"] = [B_KEY]
    accounts[C]["access_keys"] = [C_KEY]
    if mutate is not None:
        mutate(data)
    return model.world_from_dict(data, "<multi-account test world>")


def client(server: RehearsalServer, service: str, region: str = "us-east-1", key: str = TOOL_KEY,
           secret: str = "rehearsal-secret", token: str | None = None, attempts: int = 1) -> Any:
    return boto3.client(service, endpoint_url=server.endpoint_url, region_name=region, aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=token,
                        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}))


def session_client(server: RehearsalServer, credentials: dict[str, Any], service: str, region: str) -> Any:
    return client(server, service, region, credentials["AccessKeyId"], credentials["SecretAccessKey"],
                  credentials["SessionToken"])


def store_ids(kms: Any) -> list[str]:
    return [s["CustomKeyStoreId"] for s in kms.describe_custom_key_stores()["CustomKeyStores"]]


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def world_log(server: RehearsalServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.endpoint_url}/_rehearsal/log", timeout=10) as answer:
        return [json.loads(line) for line in answer.read().splitlines() if line]


def advance_clock(server: RehearsalServer, seconds: float) -> None:
    request = urllib.request.Request(f"{server.endpoint_url}/_rehearsal/clock", method="POST",
                                     data=json.dumps({"advance": seconds}).encode())
    urllib.request.urlopen(request, timeout=10).close()


def assume(server: RehearsalServer, role_arn: str = ROLE_B, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("ExternalId", EXTERNAL_ID)
    sts = kwargs.pop("sts", None) or client(server, "sts")
    return dict(sts.assume_role(RoleArn=role_arn, RoleSessionName="rehearsal", **kwargs)["Credentials"])


# -- routing: access key -> account, signing Region -> cell -------------------------------------------------------


def test_two_accounts_and_two_regions_on_one_endpoint_each_see_only_their_own_stores(start_world):
    server = start_world(multi_world())
    assert store_ids(client(server, "kms")) == ["cks-1111111111111111a"]
    assert store_ids(client(server, "kms", key=B_KEY)) == ["cks-4444444444444444a"]
    assert store_ids(client(server, "kms", "eu-west-1", key=B_KEY)) == ["cks-4444444444444444b"]
    assert store_ids(client(server, "kms", "eu-west-1", key=C_KEY)) == ["cks-7777777777777777a"]
    key = client(server, "kms", "eu-west-1", key=B_KEY).describe_key(KeyId="44444444-4444-4444-8444-444444444442")
    assert key["KeyMetadata"]["Arn"].startswith(f"arn:aws:kms:eu-west-1:{B}:key/")
    assert error_code(lambda: client(server, "kms", key=B_KEY).describe_key(
        KeyId="44444444-4444-4444-8444-444444444442")) == "NotFoundException"  # another Region's key
    # EC2 answers from the cell too: each account-Region sees its own endpoint services
    ec2 = client(server, "ec2", "eu-west-1", key=C_KEY)
    services = ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"]
    assert [s["ServiceName"] for s in services] == ["com.amazonaws.vpce.eu-west-1.vpce-svc-07777888899990001"]
    # a Region the account does not have is refused, as AWS refuses a Region not enabled for the account
    assert error_code(lambda: store_ids(client(server, "kms", "eu-west-1"))) == "UnrecognizedClientException"
    assert error_code(lambda: store_ids(client(server, "kms", "us-east-1", key=C_KEY))) == \
        "UnrecognizedClientException"
    cells = {log_analysis.cell_of(e) for e in log_analysis.calls(world_log(server), "DescribeCustomKeyStores")}
    assert {(A, "us-east-1"), (B, "us-east-1"), (B, "eu-west-1"), (C, "eu-west-1")} <= cells


def test_a_store_connects_through_its_regions_proxy(start_world):
    server = start_world(multi_world())
    kms = client(server, "kms", "eu-west-1", key=B_KEY)
    kms.disconnect_custom_key_store(CustomKeyStoreId="cks-4444444444444444b")
    advance_clock(server, 301)
    kms.connect_custom_key_store(CustomKeyStoreId="cks-4444444444444444b")
    advance_clock(server, 301)
    entry = kms.describe_custom_key_stores(CustomKeyStoreId="cks-4444444444444444b")["CustomKeyStores"][0]
    assert entry["ConnectionState"] == "CONNECTED", entry  # proxy-eu verifies SigV4 for eu-west-1
    blob = kms.encrypt(KeyId="44444444-4444-4444-8444-444444444442", Plaintext=b"eu")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"eu"
    states = [e for e in world_log(server) if e["kind"] == "state" and e["keystore"] == "cks-4444444444444444b"]
    assert {(e["account"], e["region"]) for e in states} == {(B, "eu-west-1")}


def test_a_public_store_cannot_take_the_endpoint_of_a_vpc_store_in_another_account(start_world):
    """Facts §5: "... in the same AWS Region, even if the key stores are in different AWS accounts"."""
    server = start_world(multi_world())
    vpc = dict(CustomKeyStoreName="clash", CustomKeyStoreType="EXTERNAL_KEY_STORE",
               XksProxyUriEndpoint="https://ledger.xks.example.com", XksProxyUriPath="/kms/xks/v1",
               XksProxyConnectivity="VPC_ENDPOINT_SERVICE",
               XksProxyVpcEndpointServiceName="com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0",
               XksProxyAuthenticationCredential=US_PROXY_CREDENTIAL)
    # account A, us-east-1: B's public store there already uses https://ledger.xks.example.com
    assert error_code(lambda: client(server, "kms").create_custom_key_store(**vpc)) == \
        "XksProxyUriEndpointInUseException"
    # C in eu-west-1 shares no Region with that store: whatever else fails, it is not the endpoint
    eu = {**vpc, "XksProxyVpcEndpointServiceName": "com.amazonaws.vpce.eu-west-1.vpce-svc-07777888899990001"}
    assert error_code(lambda: client(server, "kms", "eu-west-1", key=C_KEY).create_custom_key_store(**eu)) != \
        "XksProxyUriEndpointInUseException"


def test_a_store_can_use_an_endpoint_service_of_another_account_in_its_region(start_world):
    """Cross-account VPC connectivity (facts §0): XksProxyVpcEndpointServiceOwner names the account whose cell
    holds the service; without it KMS looks in the caller's own account and finds nothing."""
    server = start_world(multi_world())
    kms = client(server, "kms")
    create = dict(CustomKeyStoreName="cross", CustomKeyStoreType="EXTERNAL_KEY_STORE",
                  XksProxyUriEndpoint="https://ledger-private.xks.example.com", XksProxyUriPath="/kms/xks/v1",
                  XksProxyConnectivity="VPC_ENDPOINT_SERVICE",
                  XksProxyVpcEndpointServiceName="com.amazonaws.vpce.us-east-1.vpce-svc-04444555566660001",
                  XksProxyAuthenticationCredential=US_PROXY_CREDENTIAL)
    assert error_code(lambda: kms.create_custom_key_store(**create)) == "XksProxyVpcEndpointServiceNotFoundException"
    store_id = kms.create_custom_key_store(**create, XksProxyVpcEndpointServiceOwner=B)["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    advance_clock(server, 301)
    entry = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
    assert entry["ConnectionState"] == "CONNECTED", entry
    assert entry["XksProxyConfiguration"]["VpcEndpointServiceOwner"] == B


# -- STS ------------------------------------------------------------------------------------------------------------


def test_assume_role_gives_credentials_that_see_the_roles_account(start_world):
    server = start_world(multi_world())
    credentials = assume(server, DurationSeconds=3600)
    assert credentials["AccessKeyId"].startswith("ASIA") and credentials["SessionToken"]
    assert store_ids(session_client(server, credentials, "kms", "eu-west-1")) == ["cks-4444444444444444b"]
    assert store_ids(session_client(server, credentials, "kms", "us-east-1")) == ["cks-4444444444444444a"]
    identity = session_client(server, credentials, "sts", "us-east-1").get_caller_identity()
    assert identity["Account"] == B
    assert identity["Arn"] == f"arn:aws:sts::{B}:assumed-role/xks-migrator/rehearsal"
    assert client(server, "sts").get_caller_identity()["Account"] == A
    log = world_log(server)
    describes = log_analysis.calls(log, "DescribeCustomKeyStores")
    assert {log_analysis.cell_of(e) for e in describes} == {(B, "eu-west-1"), (B, "us-east-1")}
    assumed = [e for e in log if e["kind"] == "session"]
    assert len(assumed) == 1 and assumed[0]["account"] == B and credentials["SecretAccessKey"] not in str(log)
    assert credentials["SessionToken"] not in json.dumps(server.world_state.snapshot())


def test_assume_role_is_denied_unless_trusted_with_the_right_external_id(start_world):
    server = start_world(multi_world())
    assert error_code(lambda: assume(server, ExternalId="not-the-one")) == "AccessDenied"
    assert error_code(lambda: client(server, "sts").assume_role(RoleArn=ROLE_B, RoleSessionName="no-id")) == \
        "AccessDenied"  # no external id at all
    assert error_code(lambda: assume(server, sts=client(server, "sts", key=C_KEY))) == "AccessDenied"  # untrusted
    assert error_code(lambda: assume(server, f"arn:aws:iam::{B}:role/no-such-role")) == "AccessDenied"
    assert error_code(lambda: assume(server, "arn:aws:iam::999999999999:role/xks-migrator")) == "AccessDenied"
    with pytest.raises(ClientError) as caught:
        assume(server, ExternalId="not-the-one")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_duration_above_the_roles_maximum_or_the_chaining_limit_is_a_validation_error(start_world):
    def trust_b(data: dict[str, Any]) -> None:
        role = next(a for a in data["accounts"] if a["id"] == C)["roles"][0]
        role["trusted"] = [A, ROLE_B]
        role["max_session_seconds"] = 7200

    server = start_world(multi_world(trust_b))
    assert error_code(lambda: assume(server, DurationSeconds=7201)) == "ValidationError"  # B allows 7200
    assert assume(server, DurationSeconds=7200)["AccessKeyId"]
    with pytest.raises(ClientError) as caught:
        assume(server, ROLE_C, DurationSeconds=3601, sts=session_client(server, assume(server), "sts", "us-east-1"))
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "role chaining" in caught.value.response["Error"]["Message"]
    chained = assume(server, ROLE_C, DurationSeconds=3600,
                     sts=session_client(server, assume(server), "sts", "us-east-1"))
    assert store_ids(session_client(server, chained, "kms", "eu-west-1")) == ["cks-7777777777777777a"]


def test_session_credentials_expire_on_the_world_clock(start_world):
    server = start_world(multi_world())
    credentials = assume(server, DurationSeconds=900)
    # Expiration is the real instant the world's clock reaches the expiry: at 1500x, 900 s are 0.6 real s
    assert credentials["Expiration"] - datetime.now(UTC) < timedelta(seconds=60)
    kms = session_client(server, credentials, "kms", "eu-west-1")
    assert store_ids(kms) == ["cks-4444444444444444b"]
    advance_clock(server, 901)
    assert error_code(lambda: store_ids(kms)) == "ExpiredTokenException"
    assert error_code(lambda: session_client(server, credentials, "ec2", "eu-west-1")
                      .describe_vpc_endpoint_service_configurations()) == "RequestExpired"
    assert error_code(lambda: session_client(server, credentials, "sts", "us-east-1")
                      .get_caller_identity()) == "ExpiredToken"
    expired = [e for e in world_log(server) if e.get("error") == "ExpiredTokenException"]
    assert expired and expired[0]["account"] == B
    # a session key with another token is nobody's
    forged = {**assume(server), "SessionToken": "forged"}
    assert error_code(lambda: store_ids(session_client(server, forged, "kms", "us-east-1"))) == \
        "UnrecognizedClientException"


def test_get_role_shows_the_trust_and_the_maximum_session(start_world):
    server = start_world(multi_world())
    credentials = assume(server)
    role = session_client(server, credentials, "iam", "us-east-1").get_role(RoleName="xks-migrator")["Role"]
    assert role["Arn"] == ROLE_B and role["MaxSessionDuration"] == 7200
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"]["AWS"] == [f"arn:aws:iam::{A}:root"]
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}
    assert error_code(lambda: client(server, "iam").get_role(RoleName="nope")) == "NoSuchEntity"


# -- quotas ---------------------------------------------------------------------------------------------------------


def test_a_burst_above_the_quota_is_throttled_per_cell_and_the_log_counts_each_cell(start_world):
    # 0.01 simulated seconds per real second: one simulated second lasts 100 real seconds, so the burst
    # below falls in one quota window however slow the machine is
    def shared(data: dict[str, Any]) -> None:
        data["quotas"] = [{"operations": ["DescribeCustomKeyStores", "ConnectCustomKeyStore",
                                          "DisconnectCustomKeyStore", "UpdateCustomKeyStore"], "rate": 5}]

    server = start_world(multi_world(shared, time_scale=0.01))
    kms_a, kms_b = client(server, "kms"), client(server, "kms", key=B_KEY)
    outcomes, refused = [], []
    for _ in range(8):
        try:
            kms_a.describe_custom_key_stores()
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
            refused.append(exc.response)
    assert outcomes == ["ok"] * 5 + ["ThrottlingException"] * 3
    # botocore's standard retry mode classifies the answer, as parsed, as throttling (so it backs off and retries)
    context = standard.RetryContext(attempt_number=1, parsed_response=refused[0])
    assert standard.ThrottledRetryableChecker().is_retryable(context)
    assert refused[0]["ResponseMetadata"]["HTTPStatusCode"] == 400
    # the four operations share the budget here: a connect in that cell is throttled too
    assert error_code(lambda: kms_a.connect_custom_key_store(CustomKeyStoreId="cks-1111111111111111a")) == \
        "ThrottlingException"
    assert store_ids(kms_b) == ["cks-4444444444444444a"]  # another account in the same Region: its own budget
    log = world_log(server)
    assert log_analysis.calls_per_cell(log, "DescribeCustomKeyStores") == {(A, "us-east-1"): 8, (B, "us-east-1"): 1}
    assert len(log_analysis.throttled(log, (A, "us-east-1"))) == 4
    assert log_analysis.peak_rate(log, "DescribeCustomKeyStores", (A, "us-east-1")) == 8
    assert log_analysis.peak_rate(log, "DescribeCustomKeyStores", (A, "us-east-1"), accepted=True) == 5


def test_a_world_without_quotas_never_throttles_and_a_single_account_world_is_unchanged(start_world):
    server = start_world()  # the packaged default world: no [[accounts]], no [[quotas]]
    assert server.world.accounts[0].id == server.world.account_id and not server.world.cells
    kms = client(server, "kms", attempts=1)
    for _ in range(20):
        assert store_ids(kms) == [STORE_ID]
    assert store_ids(client(server, "kms", "eu-west-1")) == [STORE_ID]  # one cell answers every Region
    log = world_log(server)
    assert log_analysis.throttled(log) == []
    assert {log_analysis.cell_of(e) for e in log_analysis.calls(log)} == {(server.world.account_id, "us-east-1")}


# -- faults and world files -----------------------------------------------------------------------------------------


def test_a_fault_can_be_limited_to_one_account(start_world):
    server = start_world(multi_world(lambda d: d.update(faults=[{
        "operation": "DescribeCustomKeyStores", "error_code": "KMSInternalException", "account": B}])))
    assert store_ids(client(server, "kms")) == ["cks-1111111111111111a"]
    assert error_code(lambda: store_ids(client(server, "kms", key=B_KEY))) == "KMSInternalException"


def _with(account: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        next(a for a in data["accounts"] if a["id"] == account).update(changes)
    return mutate


@pytest.mark.parametrize("mutate, where", [
    (_with(C, keystores=[{"id": "cks-7777777777777777b", "name": "x", "connectivity": "PUBLIC_ENDPOINT",
                          "uri_endpoint": "https://x.example.com", "access_key_id": "XKSPROXYEUACCESSKEY23",
                          "secret": "Qm9yZWFsaXMvc2ltdWxhdGVkL3Byb3h5L3NlY3JldD0=", "region": "us-east-1"}]),
     "accounts[2].keystores[0].region"),
    (_with(C, access_keys=[B_KEY]), "accounts[2].access_keys"),
    (_with(B, roles=[{"name": "r", "max_session_seconds": 900}]), "accounts[1].roles[0].max_session_seconds"),
    (_with(B, keys=[{"key_id": "44444444-4444-4444-8444-444444444449", "keystore": "cks-7777777777777777a",
                     "xks_key_id": "ledger-key-1"}]), "accounts[1].keys[0].keystore"),
    (lambda d: d["accounts"].append({"id": C}), "accounts[3].id"),
    (_with(A, iam={"caller_arn": "arn:aws:iam::111122223333:user/x"}), "accounts[0].iam"),
])
def test_world_file_errors_name_the_nested_key(mutate, where):
    with pytest.raises(model.WorldFileError, match=re.escape(f": {where}: ")):
        multi_world(mutate)


def test_the_single_account_form_loads_as_one_cell_and_any_key_is_the_default_account():
    world = make_world()
    assert world.all_cells() == {(world.account_id, world.region): world}
    assert not world.declares_accounts and world.quotas == []
