"""EC2 query API (VPC endpoint services) over the live world: what preflight and fix-up calls see.

The world's `EndpointService` objects are the ones the KMS side reads when it decides whether a
connect succeeds, so Modify* calls here mutate them in place and change what KMS does next.

Approximations (documented so nobody mistakes them for AWS facts):
- Private DNS verification finishes synchronously inside StartVpcEndpointServicePrivateDnsVerification.
  A name is "a subdomain of a public domain" (verifiable) when it ends in `.example.com`, `.example.org`
  or `.example.net`, or has at least three labels, and its last label is not a reserved/non-public
  TLD (local, localhost, internal, test, invalid, example, lan, home, corp); otherwise it fails.
- The consumer view (DescribeVpcEndpointServices) lists every world service that is not Deleted,
  whatever its owner and allowed principals; AWS-owned services (com.amazonaws.<region>.s3, ...) are absent.
- Pagination is not modelled: every answer is complete and has no NextToken.
- An application load balancer behind a service is reported in NetworkLoadBalancerArns (AWS would
  refuse to create such a service); ELBv2 shows its real type.
- Actions listed in the world's `[iam] denied_actions` as `ec2:<Action>` fail with UnauthorizedOperation,
  so the world agrees with what SimulatePrincipalPolicy said. DryRun=true answers DryRunOperation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from migrator.rehearsal.query.common import (
    QueryError,
    bool_param,
    caller_arn,
    denied,
    ec2_body,
    filters_param,
    find_lb,
    lb_arn,
    list_param,
    required,
    stable_hex,
    unique,
    wildcard_match,
)
from migrator.rehearsal.world import model

_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}$")
_NON_PUBLIC_TLDS = {"local", "localhost", "internal", "test", "invalid", "example", "lan", "home", "corp"}
_VERIFIABLE_SUFFIXES = (".example.com", ".example.org", ".example.net")


def verifiable(name: str) -> bool:
    """Approximates "the subdomain of a public domain" (see the module docstring)."""
    labels = name.lower().rstrip(".").split(".")
    if not name or labels[-1] in _NON_PUBLIC_TLDS:
        return False
    return name.lower().endswith(_VERIFIABLE_SUFFIXES) or len(labels) >= 3


def _owned(world: model.World, svc: model.EndpointService) -> bool:
    return svc.owner in ("", world.account_id)


def _owned_service(world: model.World, params: Mapping[str, str]) -> model.EndpointService:
    """The caller's service named by `ServiceId`; another owner's service is as good as missing."""
    service_id = required(params, "ServiceId")
    for svc in world.endpoint_services:
        if svc.service_id == service_id and _owned(world, svc):
            return svc
    raise QueryError("InvalidVpcEndpointServiceId.NotFound", f"The VpcEndpointService Id '{service_id}' does not exist")


def _filtered(items: list[Any], filters: dict[str, list[str]],
              getters: Mapping[str, Callable[[Any], str]]) -> list[Any]:
    """EC2 filter semantics: values of one filter OR together, different filters AND; `*`/`?` wildcards."""
    for name in filters:
        if name not in getters:
            raise QueryError("InvalidParameterValue", f"The filter '{name}' is invalid")
    return [
        item for item in items
        if all(any(wildcard_match(v, getters[name](item)) for v in values) for name, values in filters.items())
    ]


def _lb_parts(world: model.World, svc: model.EndpointService) -> tuple[list[str], list[str] | None, list[str] | None]:
    """(availability zones, NLB ARNs, GWLB ARNs) of the service's load balancer."""
    lb = find_lb(world, svc.load_balancer)
    if lb is None:
        return [], None, None
    if lb.type == "gateway":
        return list(lb.availability_zones), None, [lb_arn(world, lb)]
    return list(lb.availability_zones), [lb_arn(world, lb)], None


def _base_dns(world: model.World, svc: model.EndpointService) -> list[str]:
    return [f"{svc.service_id}.{world.region}.vpce.amazonaws.com"]


def _configuration(world: model.World, svc: model.EndpointService) -> dict[str, Any]:
    zones, nlbs, gwlbs = _lb_parts(world, svc)
    dns_config = None
    if svc.private_dns_name:
        dns_config = {
            "state": svc.private_dns_state,
            "type": "TXT",
            "value": f"vpce:{stable_hex(svc.service_id, svc.private_dns_name, length=20)}",
            "name": f"_{stable_hex(svc.service_id, 'txt-name', length=20)}",
        }
    return {
        "serviceType": [{"serviceType": svc.service_type}],
        "serviceId": svc.service_id,
        "serviceName": svc.service_name(world.region),
        "serviceState": svc.state,
        "availabilityZoneSet": zones,
        "acceptanceRequired": svc.acceptance_required,
        "managesVpcEndpoints": False,
        "networkLoadBalancerArnSet": nlbs,
        "gatewayLoadBalancerArnSet": gwlbs,
        "supportedIpAddressTypeSet": ["ipv4"],
        "baseEndpointDnsNameSet": _base_dns(world, svc),
        "privateDnsName": svc.private_dns_name or None,
        "privateDnsNameConfiguration": dns_config,
        "payerResponsibility": "ServiceOwner",
        "remoteAccessEnabled": False,
    }


def describe_service_configurations(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """Provider view: only the world account's own services."""
    services = [s for s in world.endpoint_services if _owned(world, s)]
    wanted = list_param(params, "ServiceId")
    for service_id in wanted:
        if not any(s.service_id == service_id for s in services):
            raise QueryError("InvalidVpcEndpointServiceId.NotFound",
                             f"The VpcEndpointService Id '{service_id}' does not exist")
    if wanted:
        services = [s for s in services if s.service_id in wanted]
    services = _filtered(services, filters_param(params), {
        "service-name": lambda s: s.service_name(world.region),
        "service-id": lambda s: s.service_id,
        "service-state": lambda s: s.state,
        "service-type": lambda s: s.service_type,
    })
    return {"serviceConfigurationSet": [_configuration(world, s) for s in services]}


def describe_services(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """Consumer view: services of any owner, with the owner account named."""
    services = [s for s in world.endpoint_services if s.state != "Deleted"]
    wanted = list_param(params, "ServiceName")
    names = {s.service_name(world.region) for s in services}
    for name in wanted:
        if name not in names:
            raise QueryError("InvalidServiceName", f"The Vpc Endpoint Service '{name}' does not exist")
    if wanted:
        services = [s for s in services if s.service_name(world.region) in wanted]
    services = _filtered(services, filters_param(params), {
        "service-name": lambda s: s.service_name(world.region),
        "service-type": lambda s: s.service_type,
        "owner": lambda s: s.owner or world.account_id,
        "service-region": lambda s: world.region,
    })
    details = []
    for svc in services:
        zones, _, _ = _lb_parts(world, svc)
        details.append({
            "serviceName": svc.service_name(world.region),
            "serviceId": svc.service_id,
            "serviceType": [{"serviceType": svc.service_type}],
            "serviceRegion": world.region,
            "availabilityZoneSet": zones,
            "owner": svc.owner or world.account_id,
            "baseEndpointDnsNameSet": _base_dns(world, svc),
            "privateDnsName": svc.private_dns_name or None,
            "privateDnsNameSet": [{"privateDnsName": svc.private_dns_name}] if svc.private_dns_name else None,
            "vpcEndpointPolicySupported": True,
            "acceptanceRequired": svc.acceptance_required,
            "managesVpcEndpoints": False,
            "payerResponsibility": "ServiceOwner",
            "privateDnsNameVerificationState": svc.private_dns_state if svc.private_dns_name else None,
            "supportedIpAddressTypeSet": ["ipv4"],
        })
    return {
        "serviceNameSet": sorted(d["serviceName"] for d in details),
        "serviceDetailSet": details,
    }


def principal_type(principal: str) -> str:
    """What EC2 reports as PrincipalType for an allowed-principal string."""
    if principal == "*":
        return "All"
    if not principal.startswith("arn:") and principal.endswith(".amazonaws.com"):
        return "Service"
    if re.fullmatch(r"[0-9]{12}", principal) or principal.endswith(":root"):
        return "Account"
    if ":role/" in principal:
        return "Role"
    if ":user/" in principal:
        return "User"
    if principal.startswith("arn:aws:organizations:"):
        return "OrganizationUnit"
    return "Account"


def _principal(svc: model.EndpointService, principal: str) -> dict[str, Any]:
    return {
        "principalType": principal_type(principal),
        "principal": principal,
        "servicePermissionId": f"vpce-svc-perm-{stable_hex(svc.service_id, principal)}",
        "serviceId": svc.service_id,
    }


def describe_permissions(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    svc = _owned_service(world, params)
    principals = _filtered(list(svc.allowed_principals), filters_param(params), {
        "principal": lambda p: p,
        "principal-type": principal_type,
    })
    return {"allowedPrincipals": [_principal(svc, p) for p in principals]}


def modify_permissions(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """Removes, then adds (duplicates are kept once); the world object changes in place."""
    svc = _owned_service(world, params)
    add = unique(list_param(params, "AddAllowedPrincipals"))
    remove = set(list_param(params, "RemoveAllowedPrincipals"))
    if not add and not remove:
        raise QueryError("MissingParameter", "Either AddAllowedPrincipals or RemoveAllowedPrincipals is required")
    kept = [p for p in svc.allowed_principals if p not in remove]
    svc.allowed_principals[:] = unique([*kept, *add])
    return {"addedPrincipalSet": [_principal(svc, p) for p in add] or None, "return": True}


_UNMODELLED_CONFIG = ("AddNetworkLoadBalancerArn", "RemoveNetworkLoadBalancerArn", "AddGatewayLoadBalancerArn",
                      "RemoveGatewayLoadBalancerArn", "AddSupportedIpAddressType", "RemoveSupportedIpAddressType",
                      "AddSupportedRegion", "RemoveSupportedRegion")


def modify_configuration(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """AcceptanceRequired, PrivateDnsName (a new name restarts verification) and RemovePrivateDnsName."""
    svc = _owned_service(world, params)
    for key in params:
        if key.split(".")[0] in _UNMODELLED_CONFIG:
            raise QueryError("UnsupportedOperation", f"{key.split('.')[0]} is not modelled by the rehearsal world")
    acceptance = bool_param(params, "AcceptanceRequired")
    remove_dns = bool_param(params, "RemovePrivateDnsName")
    new_name = params.get("PrivateDnsName")
    if new_name is not None and remove_dns:
        raise QueryError("InvalidParameterCombination",
                         "PrivateDnsName and RemovePrivateDnsName cannot be specified together")
    if new_name is not None and not _DNS_NAME.match(new_name):
        raise QueryError("InvalidParameterValue", f"Private DNS name '{new_name}' is not a valid domain name")
    if acceptance is not None:
        svc.acceptance_required = acceptance
    if new_name is not None and new_name != svc.private_dns_name:
        svc.private_dns_name = new_name
        svc.private_dns_state = "pendingVerification"
    if remove_dns:
        svc.private_dns_name = ""
    return {"return": True}


def start_dns_verification(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """pendingVerification/failed -> verified or failed at once (see `verifiable`); verified stays verified."""
    svc = _owned_service(world, params)
    if not svc.private_dns_name:
        raise QueryError("InvalidParameter", f"The VpcEndpointService '{svc.service_id}' has no private DNS name")
    if svc.private_dns_state != "verified":
        svc.private_dns_state = "verified" if verifiable(svc.private_dns_name) else "failed"
    return {"return": True}


HANDLERS: dict[str, Callable[[model.World, Mapping[str, str]], dict[str, Any]]] = {
    "DescribeVpcEndpointServiceConfigurations": describe_service_configurations,
    "DescribeVpcEndpointServices": describe_services,
    "DescribeVpcEndpointServicePermissions": describe_permissions,
    "ModifyVpcEndpointServicePermissions": modify_permissions,
    "ModifyVpcEndpointServiceConfiguration": modify_configuration,
    "StartVpcEndpointServicePrivateDnsVerification": start_dns_verification,
}


def handle(world: model.World, action: str, params: Mapping[str, str]) -> bytes:
    """One EC2 action: permission (world IAM), DryRun, then the handler; raises QueryError."""
    handler = HANDLERS.get(action)
    if handler is None:
        raise QueryError("InvalidAction", f"The action {action} is not valid for this web service.")
    if denied(world, f"ec2:{action}"):
        raise QueryError("UnauthorizedOperation",
                         f"You are not authorized to perform this operation. User: {caller_arn(world)} "
                         f"is not authorized to perform: ec2:{action}", 403)
    if bool_param(params, "DryRun"):
        raise QueryError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
    return ec2_body(action, handler(world, params))
