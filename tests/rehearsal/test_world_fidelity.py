"""Fidelity of the world's KMS and XKS proxy to AWS's documentation (issue 12): GetHealthStatus needs its
requestMetadata, a connectivity switch needs a new URI endpoint, ScheduleKeyDeletion / CancelKeyDeletion let a
store with keys be deleted, and which properties may change in which connection state follows the API
reference, or, by `[world] update_state_rule`, another AWS text."""

from __future__ import annotations

import json
import urllib.request

import pytest
from world_helpers import KEY_ID, STORE_ID, VPC_ENDPOINT, VPC_SERVICE, make_world, wait_for_state

from migrator.rehearsal.world import model

SECRET = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="
CREDENTIAL = {"AccessKeyId": "XKSPROXYACCESSKEY2345", "RawSecretAccessKey": SECRET}
KEYS = [KEY_ID, "2234abcd-12ab-34cd-56ef-1234567890ab", "3234abcd-12ab-34cd-56ef-1234567890ab"]


def _post(server, path: str, payload) -> dict:
    request = urllib.request.Request(server.endpoint_url + path, data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _disconnect(kms) -> None:
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    wait_for_state(kms, STORE_ID, "DISCONNECTED")


# -- GetHealthStatus requires requestMetadata ----------------------------------------------------------
# (the proxy-level tests with a signed request are in test_xks_proxy.py; here KMS's own calls still pass)

def test_kms_health_checks_carry_request_metadata_and_pass(running_world, kms_client):
    kms = kms_client(running_world)
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyUriPath="/payments/kms/xks/v1")
    log = running_world.state.proxy_servers["payments-proxy"].request_log
    assert [(e["status"], e["kmsOperation"]) for e in log] == [(200, "UpdateCustomKeyStore")]


# -- a connectivity change must change the URI endpoint ------------------------------------------------

def test_switch_to_vpc_with_the_same_uri_endpoint_is_rejected(running_world, kms_client):
    kms = kms_client(running_world)
    _disconnect(kms)
    with pytest.raises(kms.exceptions.ClientError) as info:
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyConnectivity="VPC_ENDPOINT_SERVICE",
                                    XksProxyUriEndpoint="https://MyProxy.xks.example.com",
                                    XksProxyVpcEndpointServiceName=VPC_SERVICE)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "XksProxyUriEndpoint" in info.value.response["Error"]["Message"]
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyConnectivity="VPC_ENDPOINT_SERVICE",
                                XksProxyUriEndpoint=VPC_ENDPOINT, XksProxyVpcEndpointServiceName=VPC_SERVICE)


# -- ScheduleKeyDeletion / CancelKeyDeletion / DeleteCustomKeyStore -----------------------------------

def test_schedule_and_cancel_key_deletion(running_world, kms_client):
    kms = kms_client(running_world)
    scheduled = kms.schedule_key_deletion(KeyId=KEY_ID, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    assert scheduled["KeyId"].endswith(f":key/{KEY_ID}")
    meta = kms.describe_key(KeyId=KEY_ID)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and meta["DeletionDate"] == scheduled["DeletionDate"]
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.schedule_key_deletion(KeyId=KEY_ID)
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")
    assert kms.cancel_key_deletion(KeyId=KEY_ID)["KeyId"] == scheduled["KeyId"]
    assert kms.describe_key(KeyId=KEY_ID)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.cancel_key_deletion(KeyId=KEY_ID)
    with pytest.raises(kms.exceptions.ClientError) as info:
        kms.schedule_key_deletion(KeyId=KEY_ID, PendingWindowInDays=6)
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_a_store_with_keys_is_deleted_after_their_waiting_period(running_world, kms_client):
    kms = kms_client(running_world)
    _disconnect(kms)
    with pytest.raises(kms.exceptions.CustomKeyStoreHasCMKsException):
        kms.delete_custom_key_store(CustomKeyStoreId=STORE_ID)
    kms.cancel_key_deletion(KeyId=KEYS[2])  # pending in the world file: no waiting period runs for it
    for key_id in KEYS:  # allowed while the keys are Unavailable (store disconnected)
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    _post(running_world, "/_rehearsal/clock", {"advance": 6 * 86400})
    with pytest.raises(kms.exceptions.CustomKeyStoreHasCMKsException):
        kms.delete_custom_key_store(CustomKeyStoreId=STORE_ID)
    _post(running_world, "/_rehearsal/clock", {"advance": 86400 + 1})
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId=KEY_ID)
    kms.delete_custom_key_store(CustomKeyStoreId=STORE_ID)
    assert kms.describe_custom_key_stores()["CustomKeyStores"] == []
    log = [json.loads(line) for line in urllib.request.urlopen(running_world.endpoint_url + "/_rehearsal/log",
                                                               timeout=10).read().decode().splitlines()]
    assert [e["detail"] for e in log if e["operation"] == "KeyDeleted"] == KEYS


# -- which properties may change in which connection state ---------------------------------------------

def _failed_world(rule: str | None) -> model.World:
    def failed(data: dict) -> None:
        data["keystores"][0].update(state="FAILED", connection_error_code="XKS_PROXY_NOT_REACHABLE")
        if rule is not None:
            data["world"]["update_state_rule"] = rule
    return make_world(failed)


@pytest.mark.parametrize(("rule", "allowed"), [(None, False), ("api_operation", False), ("api_exception", False),
                                                ("developer_guide", True)])
def test_rename_in_failed_state_follows_the_rule(start_world, kms_client, rule, allowed):
    kms = kms_client(start_world(_failed_world(rule)))
    call = lambda: kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, NewCustomKeyStoreName="renamed")  # noqa: E731
    if allowed:
        call()
    else:
        with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):
            call()


@pytest.mark.parametrize(("rule", "allowed"), [(None, True), ("api_exception", False), ("developer_guide", True)])
def test_credential_and_path_while_connected_follow_the_rule(start_world, kms_client, rule, allowed):
    world = make_world(**({"update_state_rule": rule} if rule else {}))
    kms = kms_client(start_world(world))
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, NewCustomKeyStoreName="renamed")  # every rule
    for params in ({"XksProxyAuthenticationCredential": CREDENTIAL}, {"XksProxyUriPath": "/payments/kms/xks/v1"}):
        if allowed:
            kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, **params)
        else:
            with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):
                kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, **params)


def test_every_rule_needs_disconnected_for_the_endpoint(start_world, kms_client):
    for rule in model.UPDATE_STATE_RULES:
        kms = kms_client(start_world(make_world(update_state_rule=rule)))
        with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):
            kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyUriEndpoint=VPC_ENDPOINT)


def test_update_state_rule_is_validated():
    with pytest.raises(model.WorldFileError, match=r"world\.update_state_rule: must be one of api_operation"):
        make_world(update_state_rule="lenient")
