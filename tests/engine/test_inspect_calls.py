"""Pure parts of the inspector: the CLI-form call sequences, `blocked`, ARN conversion, the latency verdict."""

from __future__ import annotations

from migrator.aws.store_config import Observation
from migrator.plan import PUBLIC, VPC, CredentialRef, KeystorePlan, Plan, Target
from migrator.preflight.calls import mutating_calls, rollback_calls
from migrator.preflight.inspector import Finding, blocked
from migrator.preflight.keys import role_arn
from migrator.preflight.proxy import LATENCY_LIMIT_MS, latency_finding

SNAP_VPC = Observation.from_describe({
    "CustomKeyStoreId": "cks-0fedcba9876543210", "ConnectionState": "DISCONNECTED",
    "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
    "XksProxyConfiguration": {"Connectivity": VPC, "UriEndpoint": "https://ledger-private.example.org",
                              "UriPath": "/kms/xks/v1", "AccessKeyId": "LEDGERXKSACCESSKEY234",
                              "VpcEndpointServiceName": "com.amazonaws.vpce.eu-west-1.vpce-svc-0fed",
                              "VpcEndpointServiceOwner": "444455556666"}})


def plan_for(ks: KeystorePlan) -> Plan:
    return Plan(name="p", region="eu-west-1", keystores=(ks,))


def test_to_public_from_a_disconnected_store():
    target = Target(PUBLIC, "https://ledger.example.org",
                    credential=CredentialRef("NEWKEYID234567ABCDEFG", "env:NEW"))
    ks = KeystorePlan(id=None, name="ledger-xks", target=target, verify_key_ids=("k1",),
                      original_credential=CredentialRef("", "file:/run/old"))
    calls = mutating_calls(plan_for(ks), ks, SNAP_VPC)
    assert not any("disconnect-custom-key-store" in c for c in calls)  # already DISCONNECTED
    update = next(c for c in calls if "update-custom-key-store" in c)
    assert "--custom-key-store-id cks-0fedcba9876543210" in update  # the id from the snapshot, not the name
    # Omitted, as the engine sends it: KMS clears the name for PUBLIC, and boto3 refuses '' (min length 20).
    assert "--xks-proxy-vpc-endpoint-service-name" not in update
    assert "AccessKeyId=NEWKEYID234567ABCDEFG,RawSecretAccessKey=<env:NEW>" in update
    assert [c.split()[2] for c in calls if c.startswith("aws kms encrypt") or c.startswith("aws kms decrypt")] == \
        ["encrypt", "decrypt"]
    back = rollback_calls(plan_for(ks), ks, SNAP_VPC)
    assert back[0].startswith("aws kms disconnect-custom-key-store") and "only if" in back[0]
    update_back = next(c for c in back if "update-custom-key-store" in c)
    assert "--xks-proxy-connectivity VPC_ENDPOINT_SERVICE" in update_back
    assert "--xks-proxy-vpc-endpoint-service-owner 444455556666" in update_back
    assert "AccessKeyId=LEDGERXKSACCESSKEY234,RawSecretAccessKey=<file:/run/old>" in update_back


def test_rollback_without_snapshot_says_so():
    ks = KeystorePlan(id="cks-1", name=None, target=Target(PUBLIC, "https://x.example.org"))
    assert rollback_calls(plan_for(ks), ks, None)[0].startswith("#")


def test_blocked():
    assert not blocked([Finding("a", "pass", "m"), Finding("b", "warn", "m")])
    assert blocked([Finding("a", "pass", "m"), Finding("b", "block", "m")])
    # Fail closed: a check that could not be made holds the run too, until it is accepted by name.
    assert blocked([Finding("a", "pass", "m"), Finding("b", "unverified", "m")])
    assert not blocked([Finding("a", "pass", "m"), Finding("b", "accepted", "m")])


def test_latency_is_judged_by_the_median_against_kms_timeout():
    assert LATENCY_LIMIT_MS == 250.0
    slow = latency_finding("proxy", [260.0, 300.0, 40.0, 280.0, 255.0])  # one fast call does not save it
    assert (slow.check, slow.status) == ("proxy.latency", "block")
    assert slow.detail["median_ms"] == 260.0 and slow.detail["samples_ms"] == [40.0, 255.0, 260.0, 280.0, 300.0]
    assert "median 260 ms of 5" in slow.message and "250 ms" in slow.message and slow.remedy
    close = latency_finding("rollback.proxy", [210.0, 220.0, 900.0])  # one outlier does not block
    assert (close.check, close.status) == ("rollback.proxy.latency", "warn")
    assert "median 220 ms of 3" in close.message and "max 900" in close.message
    assert latency_finding("proxy", [199.0, 3.0, 5.0]).status == "pass"
    assert latency_finding("proxy", [200.0]).status == "pass"  # 80 % of the limit is still headroom
    assert latency_finding("proxy", [250.0]).status == "warn"  # at the limit: not above it


def test_role_arn():
    assert role_arn("arn:aws:sts::111122223333:assumed-role/Deployer/session-1") == \
        "arn:aws:iam::111122223333:role/Deployer"
    assert role_arn("arn:aws:iam::111122223333:user/alice") == "arn:aws:iam::111122223333:user/alice"
    assert role_arn("arn:aws-us-gov:sts::1:assumed-role/R/s") == "arn:aws-us-gov:iam::1:role/R"

