"""The read-only AWS calls of a capture, one account-Region cell at a time, as plain data.

Describe, List, Get and Simulate only (the world's log proves it in the tests): DescribeCustomKeyStores,
ListKeys + DescribeKey (metadata, never key material), ListAliases, the EC2 endpoint service configurations
and their permissions, the ELBv2 load balancers, listeners, target groups and target health, STS
GetCallerIdentity and IAM SimulatePrincipalPolicy. Nothing is pseudonymised here: `twin` does that when it
writes the world file, so one observation can become a scrubbed or a private twin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrator.aws.clients import ClientFactory, aws_error_code
from migrator.preflight.keys import RUN_ACTIONS, VPC_ACTIONS, role_arn

IAM_ACTIONS = (*RUN_ACTIONS, *VPC_ACTIONS, "ec2:DescribeVpcEndpointServices")
_KEY_STATES = {"Enabled": "Enabled", "Disabled": "Disabled", "PendingDeletion": "PendingDeletion"}


@dataclass
class CellCapture:
    """What one account-Region shows: raw AWS answers, trimmed to what the rehearsal world models."""

    account: str
    region: str
    caller_arn: str = ""
    stores: list[dict[str, Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)  # {key_id, keystore, xks_key_id, state}
    aliases: dict[str, list[str]] = field(default_factory=dict)  # key id -> alias names
    services: list[dict[str, Any]] = field(default_factory=list)  # configuration + "principals"
    load_balancers: list[dict[str, Any]] = field(default_factory=list)  # + "listeners", "target_groups"
    denied_actions: list[str] = field(default_factory=list)
    simulation_denied: bool = False
    unseen: list[str] = field(default_factory=list)  # what could not be read, one line each


def _pages(client: Any, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in client.get_paginator(operation).paginate(**params):
        items += page.get(key, [])
    return items


def capture_cell(clients: ClientFactory, *, account: str, region: str) -> CellCapture:
    """Every custom key store of the cell and what its connectivity depends on."""
    cell = CellCapture(account=account, region=region)
    sts = clients.client("sts")
    cell.caller_arn = str(sts.get_caller_identity().get("Arn", ""))
    kms = clients.client("kms")
    cell.stores = _pages(kms, "describe_custom_key_stores", "CustomKeyStores")
    store_ids = {s["CustomKeyStoreId"] for s in cell.stores}
    for entry in _pages(kms, "list_keys", "Keys"):
        meta = kms.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]
        if meta.get("CustomKeyStoreId") not in store_ids:
            continue
        cell.keys.append({"key_id": meta["KeyId"], "keystore": meta["CustomKeyStoreId"],
                          "xks_key_id": (meta.get("XksKeyConfiguration") or {}).get("Id", ""),
                          "state": _KEY_STATES.get(str(meta.get("KeyState")), "Enabled")})
    _aliases(kms, cell)
    _services(clients, cell)
    _load_balancers(clients, cell)
    _iam(clients, cell)
    return cell


def _aliases(kms: Any, cell: CellCapture) -> None:
    wanted = {k["key_id"] for k in cell.keys}
    try:
        for alias in _pages(kms, "list_aliases", "Aliases"):
            if alias.get("TargetKeyId") in wanted:
                cell.aliases.setdefault(alias["TargetKeyId"], []).append(alias["AliasName"])
    except Exception as exc:  # aliases are context only: the world does not model them
        cell.unseen.append(f"ListAliases failed in {cell.account}/{cell.region}: {aws_error_code(exc) or exc}")


def _services(clients: ClientFactory, cell: CellCapture) -> None:
    ec2 = clients.client("ec2")
    try:
        configs = _pages(ec2, "describe_vpc_endpoint_service_configurations", "ServiceConfigurations")
    except Exception as exc:
        cell.unseen.append(f"DescribeVpcEndpointServiceConfigurations failed in {cell.account}/{cell.region} "
                           f"({aws_error_code(exc) or exc}): the twin has no endpoint service there")
        return
    for config in configs:
        try:
            allowed = _pages(ec2, "describe_vpc_endpoint_service_permissions", "AllowedPrincipals",
                             ServiceId=config["ServiceId"])
            config["principals"] = [p["Principal"] for p in allowed if p.get("Principal")]
        except Exception as exc:
            config["principals"] = []
            cell.unseen.append(f"DescribeVpcEndpointServicePermissions {config['ServiceId']} failed "
                               f"({aws_error_code(exc) or exc}): the twin allows no principal")
        cell.services.append(config)


def _load_balancers(clients: ClientFactory, cell: CellCapture) -> None:
    elb = clients.client("elbv2")
    try:
        lbs = _pages(elb, "describe_load_balancers", "LoadBalancers")
    except Exception as exc:
        why = aws_error_code(exc) or exc
        cell.unseen.append(f"DescribeLoadBalancers failed in {cell.account}/{cell.region} ({why})")
        return
    for lb in lbs:
        arn = lb["LoadBalancerArn"]
        lb["listeners"] = _pages(elb, "describe_listeners", "Listeners", LoadBalancerArn=arn)
        groups = _pages(elb, "describe_target_groups", "TargetGroups", LoadBalancerArn=arn)
        for group in groups:
            health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
            group["targets"] = health.get("TargetHealthDescriptions", [])
        lb["target_groups"] = groups
        cell.load_balancers.append(lb)


def _iam(clients: ClientFactory, cell: CellCapture) -> None:
    if cell.caller_arn.endswith(":root"):
        return  # the root user: IAM policies do not limit it, nothing to simulate
    try:
        decisions = {}
        for page in clients.client("iam").get_paginator("simulate_principal_policy").paginate(
                PolicySourceArn=role_arn(cell.caller_arn), ActionNames=list(IAM_ACTIONS)):
            for result in page.get("EvaluationResults", []):
                decisions[result["EvalActionName"]] = result.get("EvalDecision", "")
    except Exception as exc:
        code = aws_error_code(exc)
        if code in ("AccessDenied", "AccessDeniedException"):
            cell.simulation_denied = True
        else:
            cell.unseen.append(f"iam:SimulatePrincipalPolicy failed ({code or exc}): the twin allows every action")
        return
    cell.denied_actions = sorted(a for a, d in decisions.items() if d != "allowed")
