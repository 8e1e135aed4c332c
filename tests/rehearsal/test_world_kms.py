"""The documented procedure and the KMS store/key semantics, driven by boto3 over HTTP."""

from __future__ import annotations

import pytest
from world_helpers import KEY_ID, STORE_ID, VPC_ENDPOINT, VPC_SERVICE, wait_for_state


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

