"""Every XKS ConnectionErrorCode and every UpdateCustomKeyStore exception, each from a world whose
configuration really is wrong (a fault flag only where no configuration can produce it: a proxy's 403 or
malformed answer, NETWORK_ERRORS, INTERNAL_ERROR)."""

from __future__ import annotations

from typing import Any

import pytest
from world_helpers import STORE_ID, VPC_ENDPOINT, VPC_SERVICE, make_world, wait_for_state

from migrator.rehearsal.world import model

OTHER_SECRET = "Pcf6BsY8P4L5FGTs1zX3p6ZLWQjVTItj2OeR7uJSfDw="


def _store(data: dict[str, Any]) -> dict[str, Any]:
    return data["keystores"][0]


def disconnected_public(extra=None):
    def mutate(data):
        _store(data)["state"] = "DISCONNECTED"
        if extra:
            extra(data)
    return mutate


def disconnected_vpc(extra=None):
    def mutate(data):
        _store(data).update(state="DISCONNECTED", connectivity="VPC_ENDPOINT_SERVICE", uri_endpoint=VPC_ENDPOINT,
                            vpc_endpoint_service_name=VPC_SERVICE)
        if extra:
            extra(data)
    return mutate


def _proxy(**fields):
    return lambda data: data["proxies"][0].update(fields)


def _service(**fields):
    return lambda data: data["endpoint_services"][0].update(fields)


def _lb(**fields):
    return lambda data: data["load_balancers"][0].update(fields)


def _connect_and_fail(start_world, kms_client, mutate, faults=()) -> dict[str, Any]:
    server = start_world(make_world(mutate), faults)
    kms = kms_client(server)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    return wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))


CONNECT_CASES = {
    "INVALID_CREDENTIALS": disconnected_public(lambda d: _store(d).update(secret=OTHER_SECRET)),
    "XKS_PROXY_INVALID_CONFIGURATION": disconnected_public(lambda d: _store(d).update(uri_path="/wrong/kms/xks/v1")),
    "tls-expired": disconnected_public(_proxy(certificate="expired")),
    "tls-wrong-host": disconnected_public(_proxy(certificate="wrong_host")),
    "tls-untrusted-ca": disconnected_public(_proxy(certificate="untrusted_ca")),
    "tls-self-signed": disconnected_public(_proxy(certificate="self_signed")),
    "tls-vpc-host-missing-from-cert": disconnected_vpc(_proxy(certificate_hosts=["myproxy.xks.example.com"])),
    "not-reachable-down": disconnected_public(_proxy(down=True)),
    "not-reachable-all-unavailable": disconnected_public(_proxy(health="UNAVAILABLE")),
    "not-reachable-unknown-host": disconnected_public(
        lambda d: _store(d).update(uri_endpoint="https://nobody.xks.example.com")),
    "XKS_PROXY_TIMED_OUT": disconnected_public(_proxy(latency_ms=400.0)),
    "vpc-not-found-principal": disconnected_vpc(_service(allowed_principals=["arn:aws:iam::111122223333:root"])),
    "vpc-not-found-name": disconnected_vpc(
        lambda d: _store(d).update(vpc_endpoint_service_name="com.amazonaws.vpce.us-east-1.vpce-svc-0nothere")),
    "vpc-invalid-acceptance": disconnected_vpc(_service(acceptance_required=True)),
    "vpc-invalid-one-az": disconnected_vpc(_lb(availability_zones=["us-east-1a"])),
    "vpc-invalid-gateway-lb": disconnected_vpc(_lb(type="gateway")),
    "vpc-invalid-dns-pending": disconnected_vpc(_service(private_dns_state="pendingVerification")),
    "vpc-invalid-dns-mismatch": disconnected_vpc(_service(private_dns_name="other.xks.example.com")),
}
EXPECTED = {
    "tls": "XKS_PROXY_INVALID_TLS_CONFIGURATION", "not-reachable": "XKS_PROXY_NOT_REACHABLE",
    "vpc-not-found": "XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND",
    "vpc-invalid": "XKS_VPC_ENDPOINT_SERVICE_INVALID_CONFIGURATION",
}


def _expected(case: str) -> str:
    return next((code for prefix, code in EXPECTED.items() if case.startswith(prefix + "-")), case)


@pytest.mark.parametrize("case", sorted(CONNECT_CASES))
def test_connect_fails_with_the_documented_code(start_world, kms_client, case):
    entry = _connect_and_fail(start_world, kms_client, CONNECT_CASES[case])
    assert entry["ConnectionState"] == "FAILED"
    assert entry["ConnectionErrorCode"] == _expected(case)


@pytest.mark.parametrize("proxy_fault,code", [("invalid_response", "XKS_PROXY_INVALID_RESPONSE"),
                                              ("reject_credentials", "INVALID_CREDENTIALS")])
def test_connect_codes_from_proxy_behaviour(start_world, kms_client, proxy_fault, code):
    fault = model.Fault(proxy="payments-proxy", proxy_fault=proxy_fault)
    entry = _connect_and_fail(start_world, kms_client, disconnected_public(), [fault])
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", code)


@pytest.mark.parametrize("code", ["NETWORK_ERRORS", "INTERNAL_ERROR", "XKS_PROXY_ACCESS_DENIED"])
def test_connect_codes_by_fault(start_world, kms_client, code):
    """No configuration yields these (a spec proxy never answers 403 to GetHealthStatus)."""
    fault = model.Fault(operation="ConnectCustomKeyStore", connection_error_code=code, count=1)
    entry = _connect_and_fail(start_world, kms_client, disconnected_public(), [fault])
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", code)


def test_failed_store_must_be_disconnected_before_connecting_again(start_world, kms_client):
    server = start_world(make_world(disconnected_public(_proxy(down=True))))
    kms = kms_client(server)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    assert wait_for_state(kms, STORE_ID, "FAILED")["ConnectionState"] == "FAILED"
    with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):
        kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    server.world.proxies[0].down = False  # fix the cause, then the documented recovery
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    entry = wait_for_state(kms, STORE_ID, "DISCONNECTED")
    assert "ConnectionErrorCode" not in entry
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    assert wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))["ConnectionState"] == "CONNECTED"


# ---------------------------------------------------------------------------------------------- update

def _to_vpc(**overrides):
    return {"XksProxyConnectivity": "VPC_ENDPOINT_SERVICE", "XksProxyUriEndpoint": VPC_ENDPOINT,
            "XksProxyVpcEndpointServiceName": VPC_SERVICE, **overrides}


def _second_store(**fields):
    def add(data):
        data["keystores"].append({**_store(data), "id": "cks-0000000000000000a", "name": "other", **fields})
    return add


def _both(*mutations):
    return lambda data: [m(data) for m in mutations]


UPDATE_CASES = {
    "XksProxyVpcEndpointServiceNotFoundException": (
        _service(allowed_principals=[]), _to_vpc()),
    "XksProxyVpcEndpointServiceInvalidConfigurationException-acceptance": (
        _service(acceptance_required=True), _to_vpc()),
    "XksProxyVpcEndpointServiceInvalidConfigurationException-one-az": (
        _lb(availability_zones=["us-east-1b"]), _to_vpc()),
    "XksProxyVpcEndpointServiceInvalidConfigurationException-gateway": (_lb(type="gateway"), _to_vpc()),
    "XksProxyVpcEndpointServiceInvalidConfigurationException-dns-pending": (
        _service(private_dns_state="pendingVerification"), _to_vpc()),
    "XksProxyVpcEndpointServiceInvalidConfigurationException-dns-mismatch": (
        None, _to_vpc(XksProxyUriEndpoint="https://elsewhere.xks.example.com")),
    "XksProxyVpcEndpointServiceInUseException": (
        _second_store(connectivity="VPC_ENDPOINT_SERVICE", uri_endpoint="https://other-private.xks.example.com",
                      vpc_endpoint_service_name=VPC_SERVICE, state="DISCONNECTED"), _to_vpc()),
    "XksProxyUriEndpointInUseException": (
        _second_store(uri_endpoint=VPC_ENDPOINT, uri_path="/other/kms/xks/v1", state="DISCONNECTED"), _to_vpc()),
    "XksProxyUriInUseException": (
        _second_store(uri_path="/other/kms/xks/v1", state="DISCONNECTED"),
        {"XksProxyUriPath": "/other/kms/xks/v1"}),
    "XksProxyIncorrectAuthenticationCredentialException": (None, {"XksProxyAuthenticationCredential": {
        "AccessKeyId": "XKSPROXYACCESSKEY2345", "RawSecretAccessKey": OTHER_SECRET}}),
    "XksProxyInvalidConfigurationException": (None, {"XksProxyUriPath": "/wrong/kms/xks/v1"}),
    "XksProxyUriUnreachableException-down": (_proxy(down=True), {"XksProxyUriPath": "/payments/kms/xks/v1"}),
    "XksProxyUriUnreachableException-unavailable": (_proxy(health="UNAVAILABLE"), _to_vpc()),
    "XksProxyUriUnreachableException-slow": (_proxy(latency_ms=400.0), _to_vpc()),
    "XksProxyUriUnreachableException-expired-cert": (_proxy(certificate="expired"), _to_vpc()),
    "XksProxyUriUnreachableException-unknown-host": (None, {"XksProxyUriEndpoint": "https://no.xks.example.com"}),
    "CustomKeyStoreNameInUseException": (_second_store(uri_path="/x/kms/xks/v1"), {"NewCustomKeyStoreName": "other"}),
}


@pytest.mark.parametrize("case", sorted(UPDATE_CASES))
def test_update_rejects_wrong_configuration(start_world, kms_client, case):
    extra, params = UPDATE_CASES[case]
    server = start_world(make_world(disconnected_public(extra)))
    kms = kms_client(server)
    before = kms.describe_custom_key_stores(CustomKeyStoreId=STORE_ID)["CustomKeyStores"][0]
    name = case.split("-")[0]
    with pytest.raises(getattr(kms.exceptions, name)):
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, **params)
    after = kms.describe_custom_key_stores(CustomKeyStoreId=STORE_ID)["CustomKeyStores"][0]
    assert after == before  # nothing applied


def test_update_invalid_response_from_proxy(start_world, kms_client):
    server = start_world(make_world(disconnected_public()),
                         [model.Fault(proxy="payments-proxy", proxy_fault="invalid_response")])
    kms = kms_client(server)
    with pytest.raises(kms.exceptions.XksProxyInvalidResponseException):
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyUriPath="/payments/kms/xks/v1")


def test_update_state_rules(running_world, kms_client):
    kms = kms_client(running_world)
    with pytest.raises(kms.exceptions.CustomKeyStoreNotFoundException):
        kms.update_custom_key_store(CustomKeyStoreId="cks-00000000000000000", NewCustomKeyStoreName="x")
    # name and path may change while CONNECTED; the endpoint may not
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, NewCustomKeyStoreName="renamed",
                                XksProxyUriPath="/payments/kms/xks/v1")
    with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyUriEndpoint=VPC_ENDPOINT)
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):  # DISCONNECTING
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, **_to_vpc())
    wait_for_state(kms, STORE_ID, "DISCONNECTED")
    with pytest.raises(kms.exceptions.ClientError) as info:  # VPC without a service name
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyConnectivity="VPC_ENDPOINT_SERVICE",
                                    XksProxyUriEndpoint=VPC_ENDPOINT)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, **_to_vpc())
    with pytest.raises(kms.exceptions.ClientError) as info:  # back to PUBLIC but still naming a service
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyConnectivity="PUBLIC_ENDPOINT",
                                    XksProxyUriEndpoint="https://myproxy.xks.example.com",
                                    XksProxyVpcEndpointServiceName=VPC_SERVICE)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyConnectivity="PUBLIC_ENDPOINT",
                                XksProxyUriEndpoint="https://myproxy.xks.example.com")
    config = kms.describe_custom_key_stores(CustomKeyStoreId=STORE_ID)["CustomKeyStores"][0]["XksProxyConfiguration"]
    assert config["Connectivity"] == "PUBLIC_ENDPOINT" and "VpcEndpointServiceName" not in config
