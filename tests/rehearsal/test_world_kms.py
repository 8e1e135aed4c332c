"""The documented procedure and the KMS store/key semantics, driven by boto3 over HTTP."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from world_helpers import KEY_ID, STORE_ID, VPC_ENDPOINT, VPC_SERVICE, make_world, wait_for_state


def _switch_to_vpc(kms) -> None:
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyConnectivity="VPC_ENDPOINT_SERVICE",
                                XksProxyUriEndpoint=VPC_ENDPOINT, XksProxyVpcEndpointServiceName=VPC_SERVICE)


def test_documented_procedure_public_to_vpc(running_world, kms_client):
    kms = kms_client(running_world)
    before = kms.encrypt(KeyId=KEY_ID, Plaintext=b"hello", EncryptionContext={"app": "payments"})
    assert before["KeyId"].endswith(KEY_ID)

    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    assert wait_for_state(kms, STORE_ID, "DISCONNECTED")["ConnectionState"] == "DISCONNECTED"
    _switch_to_vpc(kms)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    entry = wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))
    assert entry["ConnectionState"] == "CONNECTED", entry
    config = entry["XksProxyConfiguration"]
    assert config["Connectivity"] == "VPC_ENDPOINT_SERVICE"
    assert config["UriEndpoint"] == VPC_ENDPOINT
    assert config["VpcEndpointServiceName"] == VPC_SERVICE
    assert "ConnectionErrorCode" not in entry

    # ciphertext made before the switch still decrypts (same key manager), without KeyId
    plain = kms.decrypt(CiphertextBlob=before["CiphertextBlob"], EncryptionContext={"app": "payments"})
    assert plain["Plaintext"] == b"hello"
    data_key = kms.generate_data_key(KeyId=KEY_ID, KeySpec="AES_256")
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]


def test_update_while_connected_is_rejected(running_world, kms_client):
    kms = kms_client(running_world)
    with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):
        _switch_to_vpc(kms)


def test_disconnect_while_disconnected_is_rejected(running_world, kms_client):
    kms = kms_client(running_world)
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):  # DISCONNECTING
        kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    wait_for_state(kms, STORE_ID, "DISCONNECTED")
    with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):
        kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)


def test_encrypt_while_disconnected_names_the_key_arn(running_world, kms_client):
    kms = kms_client(running_world)
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    arn = f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"
    with pytest.raises(kms.exceptions.KMSInvalidStateException) as info:
        kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")
    assert info.value.response["Error"]["Message"] == f"{arn} is unavailable."
    meta = kms.describe_key(KeyId=KEY_ID)["KeyMetadata"]
    assert meta["KeyState"] == "Unavailable" and meta["Enabled"] is False
    assert kms.describe_key(KeyId="3234abcd-12ab-34cd-56ef-1234567890ab")["KeyMetadata"]["KeyState"] == \
        "PendingDeletion"




SECRET = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="
CREDENTIAL = {"AccessKeyId": "XKSPROXYACCESSKEY2345", "RawSecretAccessKey": SECRET}


def _second_proxy(data):
    data["proxies"].append({**data["proxies"][0], "name": "second-proxy",
                            "public_hostnames": ["second.xks.example.com"],
                            "certificate_hosts": ["second.xks.example.com"], "uri_path_prefix": ""})


def _create(kms, name, endpoint="https://second.xks.example.com", path="/kms/xks/v1", **extra):
    return kms.create_custom_key_store(
        CustomKeyStoreName=name, CustomKeyStoreType="EXTERNAL_KEY_STORE", XksProxyUriEndpoint=endpoint,
        XksProxyUriPath=path, XksProxyConnectivity="PUBLIC_ENDPOINT", XksProxyAuthenticationCredential=CREDENTIAL,
        **extra)["CustomKeyStoreId"]


def test_create_describe_page_create_key_and_delete(start_world, kms_client):
    server = start_world(make_world(_second_proxy))
    kms = kms_client(server)
    with pytest.raises(kms.exceptions.XksProxyUriInUseException):
        _create(kms, "dup", "https://myproxy.xks.example.com", "/payments/kms/xks/v1")
    with pytest.raises(kms.exceptions.CustomKeyStoreNameInUseException):
        _create(kms, "payments-xks")
    with pytest.raises(kms.exceptions.XksProxyInvalidConfigurationException):  # the proxy serves no prefix
        _create(kms, "wrong-path", path="/other/kms/xks/v1")
    store_id = _create(kms, "second")
    entry = kms.describe_custom_key_stores(CustomKeyStoreName="second")["CustomKeyStores"][0]
    assert entry["CustomKeyStoreId"] == store_id and entry["ConnectionState"] == "DISCONNECTED"
    assert entry["CustomKeyStoreType"] == "EXTERNAL_KEY_STORE"
    assert "VpcEndpointServiceName" not in entry["XksProxyConfiguration"]

    pages = list(kms.get_paginator("describe_custom_key_stores").paginate(PaginationConfig={"PageSize": 1}))
    assert [len(p["CustomKeyStores"]) for p in pages] == [1, 1]
    assert pages[0]["Truncated"] is True and pages[-1]["Truncated"] is False
    with pytest.raises(kms.exceptions.InvalidMarkerException):
        kms.describe_custom_key_stores(Marker="bogus")
    with pytest.raises(kms.exceptions.CustomKeyStoreNotFoundException):
        kms.describe_custom_key_stores(CustomKeyStoreName="nothing")

    with pytest.raises(kms.exceptions.CustomKeyStoreInvalidStateException):  # not CONNECTED
        kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId="payments-key-1")
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert wait_for_state(kms, store_id, ("CONNECTED", "FAILED"))["ConnectionState"] == "CONNECTED"
    with pytest.raises(kms.exceptions.XksKeyNotFoundException):
        kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId="no-such-key")
    meta = kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId="payments-key-1",
                          Description="second")["KeyMetadata"]
    assert meta["XksKeyConfiguration"] == {"Id": "payments-key-1"} and meta["KeyState"] == "Enabled"
    assert meta["Origin"] == "EXTERNAL_KEY_STORE" and meta["CustomKeyStoreId"] == store_id
    with pytest.raises(kms.exceptions.XksKeyAlreadyInUseException):
        kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId="payments-key-1")
    # the new key works through the second proxy
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"via second")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"via second"

    keys = [k["KeyId"] for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2})
            for k in page["Keys"]]
    assert len(keys) == 4 and meta["KeyId"] in keys

    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    wait_for_state(kms, store_id, "DISCONNECTED")
    with pytest.raises(kms.exceptions.CustomKeyStoreHasCMKsException):
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)
    server.world.keys.pop()  # (the world has no ScheduleKeyDeletion; drop the key directly)
    kms.delete_custom_key_store(CustomKeyStoreId=store_id)
    assert len(kms.describe_custom_key_stores()["CustomKeyStores"]) == 1


def test_create_vpc_store_checks_the_service_not_the_proxy(running_world, kms_client):
    kms = kms_client(running_world)
    running_world.world.endpoint_services[0].allowed_principals = []
    params = dict(CustomKeyStoreName="vpc", CustomKeyStoreType="EXTERNAL_KEY_STORE",
                  XksProxyUriEndpoint="https://myproxy-private.xks.example.com", XksProxyUriPath="/payments/kms/xks/v1",
                  XksProxyConnectivity="VPC_ENDPOINT_SERVICE", XksProxyVpcEndpointServiceName=VPC_SERVICE,
                  XksProxyAuthenticationCredential=CREDENTIAL)
    with pytest.raises(kms.exceptions.XksProxyVpcEndpointServiceNotFoundException):
        kms.create_custom_key_store(**params)
    running_world.world.endpoint_services[0].allowed_principals = ["cks.kms.us-east-1.amazonaws.com"]
    running_world.world.proxies[0].down = True  # not contacted at create for VPC connectivity
    store_id = kms.create_custom_key_store(**params)["CustomKeyStoreId"]
    config = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]["XksProxyConfiguration"]
    assert config["VpcEndpointServiceName"] == VPC_SERVICE and config["VpcEndpointServiceOwner"] == "111122223333"


def test_keys_stay_unavailable_after_connect_and_during_update_propagation(start_world, kms_client):
    def slow_keys(data):
        data["latencies"].update(key_availability_after_connect=100000, update_propagation=200000)
    server = start_world(make_world(slow_keys))
    kms = kms_client(server)
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)
    wait_for_state(kms, STORE_ID, "DISCONNECTED")
    _switch_to_vpc(kms)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    assert wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))["ConnectionState"] == "CONNECTED"
    assert kms.describe_key(KeyId=KEY_ID)["KeyMetadata"]["KeyState"] == "Unavailable"
    server.state.clock.advance(150000)  # keys available, update still propagating
    assert kms.describe_key(KeyId=KEY_ID)["KeyMetadata"]["KeyState"] == "Enabled"
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")
    server.state.clock.advance(100000)
    assert kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")["KeyId"].endswith(KEY_ID)


def test_wrong_encryption_context_and_garbage_ciphertext(running_world, kms_client):
    kms = kms_client(running_world)
    blob = kms.encrypt(KeyId=KEY_ID, Plaintext=b"x", EncryptionContext={"a": "1"})["CiphertextBlob"]
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "2"})
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=b"not a kms blob")
    with pytest.raises(kms.exceptions.KMSInvalidStateException):
        kms.encrypt(KeyId="3234abcd-12ab-34cd-56ef-1234567890ab", Plaintext=b"x")  # PendingDeletion
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId="00000000-0000-4000-8000-000000000000")


def test_secrets_manager_get_secret_value(start_world):
    from world_helpers import aws_client

    def with_secret(data):
        data["secrets"] = [{"name": "xks/new", "value": "s3cret"}]
    server = start_world(make_world(with_secret))
    sm = aws_client(server, "secretsmanager")
    assert sm.get_secret_value(SecretId="xks/new")["SecretString"] == "s3cret"
    arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:xks/new"
    assert sm.get_secret_value(SecretId=arn + "-AbCdEf")["SecretString"] == "s3cret"
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.get_secret_value(SecretId="missing")


def test_a_request_cut_off_before_its_body_is_not_a_call(running_world, kms_client):
    """A client killed between sending the headers and the body (botocore sends them separately) must not
    become a call: real KMS never acts on an incomplete request, so the world neither answers nor logs it."""
    body = json.dumps({"CustomKeyStoreId": STORE_ID}).encode()
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{running_world.port}\r\n"
            "X-Amz-Target: TrentService.DisconnectCustomKeyStore\r\n"
            f"Content-Type: application/x-amz-json-1.1\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    kms = kms_client(running_world)
    kms.describe_custom_key_stores(CustomKeyStoreId=STORE_ID)  # a whole request, so the log is not empty
    for sent in (b"", body[:10]):
        with socket.create_connection(("127.0.0.1", running_world.port), timeout=5) as conn:
            conn.sendall(head + sent)
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(1024) == b""  # closed without an answer
    with urllib.request.urlopen(f"{running_world.endpoint_url}/_rehearsal/log", timeout=5) as answer:
        log = [json.loads(line) for line in answer.read().decode().splitlines()]
    assert [e["operation"] for e in log if e["kind"] == "call"] == ["DescribeCustomKeyStores"]
    entry = kms.describe_custom_key_stores(CustomKeyStoreId=STORE_ID)["CustomKeyStores"][0]
    assert entry["ConnectionState"] == "CONNECTED"
    kms.disconnect_custom_key_store(CustomKeyStoreId=STORE_ID)  # the whole request still works
    assert wait_for_state(kms, STORE_ID, "DISCONNECTED")["ConnectionState"] == "DISCONNECTED"
