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


# -- many accounts and Regions: each store in its own cell, reached through its role -------------------------------

CALLER, LEDGER, ANALYTICS = "111122223333", "444455556666", "777788889999"
EXTERNAL_ID = "xksmigrate-rehearsal"
CELLS = {"cks-1111111111111111a": (CALLER, "us-east-1"), "cks-4444444444444444a": (LEDGER, "us-east-1"),
         "cks-4444444444444444b": (LEDGER, "eu-west-1"), "cks-7777777777777777a": (ANALYTICS, "eu-west-1")}


def _cell_of(world, store_id: str) -> tuple[str, str]:
    return next(cell for cell, w in world.all_cells().items() if any(ks.id == store_id for ks in w.keystores))


def _assume(server, role_arn: str, **kwargs):
    import boto3

    sts = boto3.client("sts", endpoint_url=server.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="AKIAREHEARSAL0000000", aws_secret_access_key="rehearsal")
    return sts.assume_role(RoleArn=role_arn, RoleSessionName="derive-test", **kwargs)["Credentials"]


def _session_client(server, credentials: dict, service: str, region: str):
    import boto3

    return boto3.client(service, endpoint_url=server.endpoint_url, region_name=region,
                        aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"])


def test_multi_account_plan_puts_each_store_and_its_target_in_its_cell():
    plan = _plan("multi-account.toml")
    world = world_for_plan(plan)
    assert (world.account_id, world.region) == (CALLER, "us-east-1") and world.declares_accounts
    assert {a.id: a.regions for a in world.accounts} == {
        CALLER: ["us-east-1"], LEDGER: ["us-east-1", "eu-west-1"], ANALYTICS: ["eu-west-1"]}
    assert set(world.all_cells()) == set(CELLS.values())
    for account in world.accounts:  # every role the plan names: trusts the caller, wants the external id
        assert [(r.name, r.trusted, r.external_id, r.max_session_seconds) for r in account.roles] == [
            ("xks-migrator", [CALLER], EXTERNAL_ID, 3600)]
    proxies = {p.name: p for p in world.proxies}
    for entry in plan["keystores"]:
        account, region = CELLS[entry["id"]]
        cell = world.all_cells()[(account, region)]
        assert _cell_of(world, entry["id"]) == (account, region)
        store = next(ks for ks in cell.keystores if ks.id == entry["id"])
        assert len([k for k in cell.keys if k.keystore == store.id]) == 3
        service_id = entry["target"]["vpc_endpoint_service_name"].rsplit(".", 1)[-1]
        service = next(s for s in cell.endpoint_services if s.service_id == service_id)
        assert service.private_dns_name == entry["target"]["uri_endpoint"].removeprefix("https://")
        assert service.private_dns_state == "verified" and not service.owner
        assert service.allowed_principals == [f"cks.kms.{region}.amazonaws.com"]
        nlb = next(lb for lb in cell.load_balancers if lb.name == service.load_balancer)
        assert proxies[nlb.proxy].region == region  # the Region whose KMS signs to it
        ref = entry["original_credential"]["secret"]
        assert f":{region}:{account}:secret:" in ref
        assert [s.name for s in cell.secrets] == [ref.rsplit(":secret:", 1)[1]]
        assert cell.secrets[0].value == store.secret  # what the store uses today: rollback works


def test_role_name_and_store_external_id_and_a_plain_store_in_another_region():
    plan = _plan("multi-account.toml")
    plan["plan"]["role_name"] = "fleet-role"
    plan["plan"].pop("external_id")
    ledger, ledger_eu, analytics = plan["keystores"][1:]
    for entry in (ledger, ledger_eu, analytics):
        entry.pop("role_arn")
    ledger["account_id"] = ledger_eu["account_id"] = LEDGER
    ledger_eu["external_id"] = "ledger-only"  # a role keeps the external id it was first named with
    analytics.update(region="ap-southeast-2")  # no account_id: the caller's own account, no role, own credentials
    del plan["keystores"][0]
    analytics["target"]["vpc_endpoint_service_name"] = "com.amazonaws.vpce.ap-southeast-2.vpce-svc-0777"
    analytics["original_credential"]["secret"] = "secretsmanager:analytics-xks-proxy-credential"
    world = world_for_plan(plan)
    roles = {a.id: [(r.name, r.trusted, r.external_id, r.max_session_seconds) for r in a.roles]
             for a in world.accounts}
    assert roles == {CALLER: [], LEDGER: [("fleet-role", [CALLER], "", 3600)]}
    assert _cell_of(world, "cks-7777777777777777a") == (CALLER, "ap-southeast-2")
    home = world.all_cells()[(CALLER, "ap-southeast-2")]
    assert [s.name for s in home.secrets] == ["analytics-xks-proxy-credential"]  # a bare name: the store's cell
    # the ledger secrets' ARNs name their own cells, whatever store refers to them
    assert [s.name for s in world.all_cells()[(LEDGER, "eu-west-1")].secrets] == ["ledger-eu-xks-proxy-credential"]

    ledger_eu["external_id"], plan["keystores"] = "ledger-only", [ledger_eu]
    only = world_for_plan(plan)
    assert [(r.name, r.external_id) for r in only.account(LEDGER).roles] == [("fleet-role", "ledger-only")]


def test_endpoint_service_of_another_reached_account_lives_in_that_account():
    plan = _plan("multi-account.toml")
    ledger = plan["keystores"][1]
    ledger["target"]["vpc_endpoint_service_owner"] = CALLER
    world = world_for_plan(plan)
    service_id = ledger["target"]["vpc_endpoint_service_name"].rsplit(".", 1)[-1]
    owner_cell, store_cell = world.all_cells()[(CALLER, "us-east-1")], world.all_cells()[(LEDGER, "us-east-1")]
    assert service_id in [s.service_id for s in owner_cell.endpoint_services]
    assert service_id not in [s.service_id for s in store_cell.endpoint_services]
    assert "xks-store-2-nlb" in [lb.name for lb in owner_cell.load_balancers]


@pytest.mark.parametrize("plan_file", ["public-to-vpc.toml", "vpc-to-public.toml"])
def test_a_plan_without_accounts_or_roles_derives_one_cell(plan_file):
    plan = _plan(plan_file)
    world = world_for_plan(plan)
    assert not world.declares_accounts and not world.cells
    assert [(a.id, a.regions, a.roles) for a in world.accounts] == [
        (plan["plan"].get("account_id", CALLER), [plan["plan"]["region"]], [])]
    assert {p.region for p in world.proxies} == {plan["plan"]["region"]}


def test_a_store_in_another_account_is_reached_and_moved_through_its_role(start_world):
    plan = _plan("multi-account.toml")
    server = start_world(world_for_plan(plan, time_scale=1500))
    role = "arn:aws:iam::777788889999:role/xks-migrator"
    with pytest.raises(Exception, match="AccessDenied"):
        _assume(server, role)  # the role wants the plan's external id
    credentials = _assume(server, role, ExternalId=EXTERNAL_ID, DurationSeconds=3600)
    with pytest.raises(Exception, match="MaxSessionDuration"):
        _assume(server, role, ExternalId=EXTERNAL_ID, DurationSeconds=7200)  # IAM's default maximum: 1 hour
    kms = _session_client(server, credentials, "kms", "eu-west-1")
    entry = plan["keystores"][3]
    store = _find_store(kms, entry)
    assert [s["CustomKeyStoreId"] for s in kms.describe_custom_key_stores()["CustomKeyStores"]] == [entry["id"]]
    secret_id = entry["original_credential"]["secret"].removeprefix("secretsmanager:")
    secrets = _session_client(server, credentials, "secretsmanager", "eu-west-1")
    assert secrets.get_secret_value(SecretId=secret_id)["SecretString"]
    blob = kms.encrypt(KeyId=kms.list_keys()["Keys"][0]["KeyId"], Plaintext=b"before")["CiphertextBlob"]

    store_id, target = store["CustomKeyStoreId"], entry["target"]
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    wait_for_state(kms, store_id, "DISCONNECTED")
    kms.update_custom_key_store(CustomKeyStoreId=store_id, XksProxyConnectivity=target["connectivity"],
                                XksProxyUriEndpoint=target["uri_endpoint"],
                                XksProxyVpcEndpointServiceName=target["vpc_endpoint_service_name"])
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert wait_for_state(kms, store_id, ("CONNECTED", "FAILED"))["ConnectionState"] == "CONNECTED"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"
