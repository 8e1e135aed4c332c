"""Worlds derived from plans: the plan's target is present and healthy, so the documented procedure works."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from world_helpers import wait_for_state

from migrator.rehearsal.world.derive import world_for_plan

PLANS = Path(__file__).resolve().parents[2] / "plans"
NEW_SECRET = "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm8="
OLD_SECRET = "T2xkT2xkT2xkT2xkT2xkT2xkT2xkT2xkT2xkT2xkT2w="


def _plan(name: str) -> dict:
    return tomllib.loads((PLANS / name).read_text())


def _find_store(kms, entry: dict) -> dict:
    if "id" in entry:
        return kms.describe_custom_key_stores(CustomKeyStoreId=entry["id"])["CustomKeyStores"][0]
    return kms.describe_custom_key_stores(CustomKeyStoreName=entry["name"])["CustomKeyStores"][0]


@pytest.mark.parametrize("plan_file", ["public-to-vpc.toml", "vpc-to-public.toml"])
def test_plan_target_connects_in_a_derived_world(start_world, kms_client, plan_file):
    plan = _plan(plan_file)
    world = world_for_plan(plan, time_scale=1500)
    assert world.region == plan["plan"]["region"]
    server = start_world(world)
    kms = kms_client(server)
    entry = plan["keystores"][0]
    target = entry["target"]
    store = _find_store(kms, entry)
    assert store["ConnectionState"] == "CONNECTED"
    assert store["XksProxyConfiguration"]["Connectivity"] != target["connectivity"]
    store_id = store["CustomKeyStoreId"]
    key_ids = [k["KeyId"] for k in kms.list_keys()["Keys"]]
    assert len(key_ids) == 3 and set(entry["verify"]["key_ids"]) <= set(key_ids)
    blob = kms.encrypt(KeyId=key_ids[0], Plaintext=b"before")["CiphertextBlob"]

    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    wait_for_state(kms, store_id, "DISCONNECTED")
    update = {"XksProxyConnectivity": target["connectivity"], "XksProxyUriEndpoint": target["uri_endpoint"]}
    if "vpc_endpoint_service_name" in target:
        update["XksProxyVpcEndpointServiceName"] = target["vpc_endpoint_service_name"]
    kms.update_custom_key_store(CustomKeyStoreId=store_id, **update)
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert wait_for_state(kms, store_id, ("CONNECTED", "FAILED"))["ConnectionState"] == "CONNECTED"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"


def test_target_credential_is_accepted_only_when_its_secret_is_given(start_world, kms_client):
    plan = _plan("public-to-vpc.toml")
    entry = plan["keystores"][0]
    entry["target"]["credential"] = {"access_key_id": "NEWXKSACCESSKEYID2345", "secret": "env:NEW"}
    entry["original_credential"] = {"secret": "env:OLD"}
    world = world_for_plan(plan, {"env:NEW": NEW_SECRET, "env:OLD": OLD_SECRET}, time_scale=1500)
    assert world.keystores[0].secret == OLD_SECRET  # rollback with the operator's secret works
    kms = kms_client(start_world(world))
    kms.update_custom_key_store(CustomKeyStoreId=entry["id"], XksProxyAuthenticationCredential={
        "AccessKeyId": "NEWXKSACCESSKEYID2345", "RawSecretAccessKey": NEW_SECRET})

    bare = world_for_plan(plan, {}, time_scale=1500)
    kms = kms_client(start_world(bare))
    with pytest.raises(kms.exceptions.XksProxyIncorrectAuthenticationCredentialException):
        kms.update_custom_key_store(CustomKeyStoreId=entry["id"], XksProxyAuthenticationCredential={
            "AccessKeyId": "NEWXKSACCESSKEYID2345", "RawSecretAccessKey": NEW_SECRET})
