"""Faults (API errors by count/probability/after, latency, proxy faults), the call log and control paths."""

from __future__ import annotations

import json
import urllib.request

import pytest
from world_helpers import KEY_ID, STORE_ID, VPC_ENDPOINT, VPC_SERVICE, make_world, wait_for_state

from migrator.rehearsal.world import model


def _get(server, path: str) -> bytes:
    with urllib.request.urlopen(server.endpoint_url + path, timeout=10) as response:
        return response.read()


def _post(server, path: str, payload) -> dict:
    request = urllib.request.Request(server.endpoint_url + path, data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _log(server) -> list[dict]:
    return [json.loads(line) for line in _get(server, "/_rehearsal/log").decode().splitlines()]


def test_throttling_by_count_is_retried_by_boto3_standard_mode(start_world, kms_client):
    fault = model.Fault(operation="DescribeCustomKeyStores", error_code="ThrottlingException", count=2)
    server = start_world(faults=[fault])
    kms = kms_client(server, retries={"mode": "standard", "max_attempts": 5})
    response = kms.describe_custom_key_stores(CustomKeyStoreId=STORE_ID)
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    calls = [e for e in _log(server) if e["kind"] == "call" and e["operation"] == "DescribeCustomKeyStores"]
    assert [c["error"] for c in calls] == ["ThrottlingException", "ThrottlingException", None]
    assert all(c["request_id"] for c in calls)


def test_fault_after_and_internal_error_status(start_world, kms_client):
    fault = model.Fault(operation="DescribeKey", error_code="KMSInternalException", count=1, after=1)
    server = start_world(faults=[fault])
    kms = kms_client(server, retries={"mode": "standard", "total_max_attempts": 1})
    kms.describe_key(KeyId=KEY_ID)  # let through
    with pytest.raises(kms.exceptions.KMSInternalException) as info:
        kms.describe_key(KeyId=KEY_ID)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    kms.describe_key(KeyId=KEY_ID)  # count exhausted


def test_fault_by_probability_is_seeded(start_world, kms_client):
    fault = model.Fault(operation="ListKeys", error_code="ThrottlingException", probability=0.5)
    server = start_world(faults=[fault])
    kms = kms_client(server, retries={"mode": "standard", "total_max_attempts": 1})
    outcomes = []
    for _ in range(30):
        try:
            kms.list_keys()
            outcomes.append(True)
        except kms.exceptions.ClientError:
            outcomes.append(False)
    assert 0 < outcomes.count(False) < 30


def test_faults_added_at_run_time_and_latency(running_world, kms_client):
    kms = kms_client(running_world, retries={"mode": "standard", "total_max_attempts": 1})
    added = _post(running_world, "/_rehearsal/faults", [
        {"operation": "*", "error_code": "AccessDeniedException", "count": 1},
        {"operation": "DescribeKey", "latency_seconds": 30},
    ])
    assert added == {"added": 2}
    with pytest.raises(kms.exceptions.ClientError) as info:
        kms.list_keys()
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert kms.describe_key(KeyId=KEY_ID)["KeyMetadata"]["KeyId"] == KEY_ID
    with pytest.raises(urllib.error.HTTPError):
        _post(running_world, "/_rehearsal/faults", [{"operation": "X"}])  # no effect field


def test_counted_proxy_fault_makes_one_encrypt_fail(start_world, kms_client):
    fault = model.Fault(proxy="payments-proxy", proxy_fault="slow", latency_ms=600, count=2)
    server = start_world(faults=[fault])
    kms = kms_client(server, retries={"mode": "standard", "total_max_attempts": 1})
    with pytest.raises(kms.exceptions.KMSInvalidStateException):  # 250 ms timeout, retried once by KMS
        kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")
    assert kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")["KeyId"].endswith(KEY_ID)


def test_log_records_calls_and_state_changes_with_simulated_time(running_world, kms_client):
    kms = kms_client(running_world)
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    wait_for_state(kms, STORE_ID, "DISCONNECTED")
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyConnectivity="VPC_ENDPOINT_SERVICE",
                                XksProxyUriEndpoint=VPC_ENDPOINT, XksProxyVpcEndpointServiceName=VPC_SERVICE)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    wait_for_state(kms, STORE_ID, "CONNECTED")
    entries = _log(running_world)
    assert all(set(e) >= {"t", "wall", "kind", "operation", "keystore", "from", "to", "error", "request_id"}
               for e in entries)
    states = [(e["from"], e["to"]) for e in entries if e["kind"] == "state" and e["keystore"] == STORE_ID]
    assert states == [("CONNECTED", "DISCONNECTING"), ("DISCONNECTING", "DISCONNECTED"),
                      ("DISCONNECTED", "CONNECTING"), ("CONNECTING", "CONNECTED")]
    times = [e["t"] for e in entries if e["kind"] == "state"]
    # the disconnected window as the world saw it, in simulated seconds (latencies: 300 + 300)
    assert times[3] - times[0] >= 600
    ops = {e["operation"] for e in entries if e["kind"] == "call"}
    assert {"DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore"} <= ops
    proxy_ops = [e["operation"] for e in entries if e["kind"] == "proxy"]
    assert proxy_ops.count("GetHealthStatus") == 2  # update with the new values, then connect
    text = _get(running_world, "/_rehearsal/log").decode() + _get(running_world, "/_rehearsal/state").decode()
    assert "+IKdHjtP/QDxtGRJxkxhicMq268cVU" not in text  # the proxy secret never shows


def test_log_file_and_clock(start_world, tmp_path):
    path = tmp_path / "log.jsonl"
    server = start_world(log_path=str(path))
    clock = json.loads(_get(server, "/_rehearsal/clock"))
    assert clock["time_scale"] == server.time_scale and clock["t"] >= 0
    later = _post(server, "/_rehearsal/clock", {"advance": 1000})
    assert later["t"] >= clock["t"] + 1000
    _post(server, "/_rehearsal/mutate", {"kind": "proxy", "id": "payments-proxy", "set": {"down": True}})
    assert path.read_text().strip()


def test_mutate_endpoint_service_changes_what_connect_sees(start_world, kms_client):
    def vpc_disconnected(data):
        data["keystores"][0].update(state="DISCONNECTED", connectivity="VPC_ENDPOINT_SERVICE",
                                    uri_endpoint=VPC_ENDPOINT, vpc_endpoint_service_name=VPC_SERVICE)
    server = start_world(make_world(vpc_disconnected))
    kms = kms_client(server)
    view = _post(server, "/_rehearsal/mutate", {"kind": "endpoint_service", "id": "vpce-svc-0123456789abcdef0",
                                                 "set": {"private_dns_state": "pendingVerification"}})
    assert view["private_dns_state"] == "pendingVerification"
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    entry = wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))
    assert entry["ConnectionErrorCode"] == "XKS_VPC_ENDPOINT_SERVICE_INVALID_CONFIGURATION"
    state = json.loads(_get(server, "/_rehearsal/state"))
    assert state["keystores"][0]["state"] == "FAILED" and "secret" not in state["keystores"][0]
    with pytest.raises(urllib.error.HTTPError):
        _post(server, "/_rehearsal/mutate", {"kind": "proxy", "id": "payments-proxy", "set": {"down": "yes"}})


def test_query_protocol_mutations_are_seen_by_kms(start_world, kms_client):
    """EC2 calls go through the same endpoint and change the very objects KMS checks at connect."""
    from world_helpers import aws_client

    def vpc_disconnected(data):
        data["keystores"][0].update(state="DISCONNECTED", connectivity="VPC_ENDPOINT_SERVICE",
                                    uri_endpoint=VPC_ENDPOINT, vpc_endpoint_service_name=VPC_SERVICE)
    server = start_world(make_world(vpc_disconnected))
    ec2, kms = aws_client(server, "ec2"), kms_client(server)
    service = ec2.describe_vpc_endpoint_service_configurations(
        ServiceIds=["vpce-svc-0123456789abcdef0"])["ServiceConfigurations"][0]
    assert service["PrivateDnsNameConfiguration"]["State"] == "verified"
    ec2.modify_vpc_endpoint_service_permissions(ServiceId="vpce-svc-0123456789abcdef0",
                                                RemoveAllowedPrincipals=["cks.kms.us-east-1.amazonaws.com"])
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    entry = wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))
    assert entry["ConnectionErrorCode"] == "XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND"
    calls = [e for e in _log(server) if e["kind"] == "call" and e.get("detail") == "ec2"]
    assert [c["operation"] for c in calls] == ["DescribeVpcEndpointServiceConfigurations",
                                               "ModifyVpcEndpointServicePermissions"]
