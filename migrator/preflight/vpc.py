"""Preflight checks of the VPC endpoint service a VPC_ENDPOINT_SERVICE target names (facts §4).

KMS verifies all of this only at connect time, when the store is already disconnected; a missing
principal or an unverified private DNS name then shows up as FAILED minutes into the window. Here
the same requirements are read with the EC2/ELBv2 describe calls (facts §4.3) beforehand, including the
health of the NLB's targets (balancer.py). What cannot be read from here (another account's service, an
API that does not answer) is `unverified`, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any  # boto3 clients and responses carry no types

from migrator.aws.clients import aws_error_code
from migrator.plan import VPC
from migrator.preflight.balancer import nlb_targets
from migrator.preflight.base import (
    Finding,
    PreflightContext,
    block,
    caller_identity,
    host_of,
    is_aws_or_network_error,
    ok,
    short_error,
    target_owner,
    unverified,
    warn,
)


def kms_principal(region: str) -> str:
    return f"cks.kms.{region}.amazonaws.com"


def check_vpc(ctx: PreflightContext) -> list[Finding]:
    """The target's endpoint service, its permissions and its load balancer."""
    t = ctx.keystore.target
    if t.connectivity != VPC or not t.vpc_endpoint_service_name:
        return []
    name = t.vpc_endpoint_service_name
    owner = target_owner(ctx)
    account = caller_identity(ctx).get("Account", "")
    if owner and owner != account:
        return _consumer_view(ctx, name, owner)

    ec2 = ctx.clients.client("ec2")
    configs: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_vpc_endpoint_service_configurations").paginate(
            Filters=[{"Name": "service-name", "Values": [name]}]):
        configs.extend(page.get("ServiceConfigurations", []))
    if not configs:
        return [block("vpc.endpoint_service", f"no endpoint service {name} in account {account} "
                      f"({ctx.plan.region}): KMS would fail with XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND",
                      "aws ec2 describe-vpc-endpoint-service-configurations --region " + ctx.plan.region
                      + "  # check the name; set vpc_endpoint_service_owner if another account owns it",
                      service_name=name)]
    svc = configs[0]
    sid = svc.get("ServiceId", "")
    found = [ok("vpc.endpoint_service", f"endpoint service {sid} found", service_id=sid)]
    found += _service_fields(ctx, svc, sid)
    found += _permissions(ctx, ec2, sid)
    found += _load_balancers(ctx, svc, sid)
    return found


def _service_fields(ctx: PreflightContext, svc: Mapping[str, Any], sid: str) -> list[Finding]:
    """State, type, acceptance and private DNS: the same fields in the provider and consumer views."""
    region, host = ctx.plan.region, host_of(ctx.keystore.target.uri_endpoint)
    found: list[Finding] = []
    state = svc.get("ServiceState", "")
    found.append(ok("vpc.service_state", f"{sid} is Available") if state == "Available" else
                 block("vpc.service_state", f"{sid} is {state or 'in an unknown state'}, not Available",
                       "wait for the service to become Available or recreate it", state=state))
    types = [t.get("ServiceType") for t in svc.get("ServiceType", [])]
    found.append(ok("vpc.service_type", f"{sid} is an Interface endpoint service") if "Interface" in types else
                 block("vpc.service_type", f"{sid} is {'/'.join(filter(None, types)) or 'of unknown type'}: KMS "
                       "needs an Interface endpoint service on a network load balancer",
                       "create an endpoint service on a network load balancer", types=types))
    if svc.get("AcceptanceRequired"):
        found.append(block("vpc.acceptance_required", f"{sid} requires acceptance of endpoint connections: KMS "
                           "cannot accept its own interface endpoint",
                           f"aws ec2 modify-vpc-endpoint-service-configuration --service-id {sid} "
                           f"--no-acceptance-required --region {region}"))
    else:
        found.append(ok("vpc.acceptance_required", f"{sid} does not require acceptance"))
    dns_name = svc.get("PrivateDnsName") or ""
    if dns_name.lower() != host.lower():
        found.append(block("vpc.private_dns_name", f"{sid} has private DNS name {dns_name or '(none)'!r}, the "
                           f"target endpoint is {host!r}: they must be equal",
                           f"aws ec2 modify-vpc-endpoint-service-configuration --service-id {sid} "
                           f"--private-dns-name {host} --region {region}  (or fix uri_endpoint in the plan)",
                           private_dns_name=dns_name, endpoint_host=host))
    else:
        found.append(ok("vpc.private_dns_name", f"private DNS name {dns_name} equals the endpoint host"))
    dns_state = (svc.get("PrivateDnsNameConfiguration") or {}).get("State") \
        or svc.get("PrivateDnsNameVerificationState") or ""
    verify_cmd = f"aws ec2 start-vpc-endpoint-service-private-dns-verification --service-id {sid} --region {region}"
    if dns_state == "verified":
        found.append(ok("vpc.private_dns_verified", f"the private DNS name of {sid} is verified"))
    elif dns_state == "pendingVerification":
        found.append(block("vpc.private_dns_verified", f"the private DNS name of {sid} is pendingVerification: "
                           "KMS refuses to connect until the domain is verified (add the TXT record, then verify)",
                           verify_cmd, state=dns_state))
    elif dns_state == "failed":
        found.append(block("vpc.private_dns_verified", f"private DNS verification of {sid} failed: the TXT "
                           "record was not found, or the name is not a subdomain of a public domain",
                           "publish the TXT record from describe-vpc-endpoint-service-configurations, then "
                           + verify_cmd, state=dns_state))
    else:
        found.append(block("vpc.private_dns_verified", f"{sid} has no private DNS name configuration",
                           f"aws ec2 modify-vpc-endpoint-service-configuration --service-id {sid} "
                           f"--private-dns-name {host} --region {region}", state=dns_state))
    return found


def _permissions(ctx: PreflightContext, ec2: Any, sid: str) -> list[Finding]:
    principal = kms_principal(ctx.plan.region)
    allowed: list[str] = []
    try:
        for page in ec2.get_paginator("describe_vpc_endpoint_service_permissions").paginate(ServiceId=sid):
            allowed += [p.get("Principal", "") for p in page.get("AllowedPrincipals", [])]
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return [unverified("vpc.allowed_principal", f"could not read the allowed principals of {sid} "
                           f"({short_error(exc)}): whether {principal} is allowed was NOT checked",
                           "allow ec2:DescribeVpcEndpointServicePermissions for this principal, then run preflight "
                           f"again; by hand: aws ec2 describe-vpc-endpoint-service-permissions --service-id {sid}")]
    add_cmd = (f"aws ec2 modify-vpc-endpoint-service-permissions --service-id {sid} "
               f"--add-allowed-principals '[\"{principal}\"]' --region {ctx.plan.region}")
    if principal in allowed or any(p.endswith(":" + principal) or p.endswith("/" + principal) for p in allowed):
        return [ok("vpc.allowed_principal", f"{principal} is an allowed principal of {sid}")]
    if "*" in allowed:
        return [warn("vpc.allowed_principal", f"{sid} allows every principal ('*'): KMS can connect, but so can "
                     "anyone", add_cmd + "  # then remove '*'", allowed=allowed)]
    return [block("vpc.allowed_principal", f"{principal} is not an allowed principal of {sid}: KMS would fail "
                  "with XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND", add_cmd, allowed=allowed)]


def _load_balancers(ctx: PreflightContext, svc: Mapping[str, Any], sid: str) -> list[Finding]:
    """A network (not gateway/application) load balancer in two AZs; internal with TCP 443 (warnings)."""
    if svc.get("GatewayLoadBalancerArns"):
        return [block("vpc.load_balancer", f"{sid} is backed by a gateway load balancer: KMS needs a network "
                      "load balancer", "create the endpoint service on a network load balancer")]
    arns = svc.get("NetworkLoadBalancerArns") or []
    if not arns:
        return [block("vpc.load_balancer", f"{sid} has no network load balancer",
                      "create the endpoint service on a network load balancer")]
    elbv2 = ctx.clients.client("elbv2")
    lbs = elbv2.describe_load_balancers(LoadBalancerArns=arns).get("LoadBalancers", [])
    found: list[Finding] = []
    bad = [lb for lb in lbs if lb.get("Type") != "network"]
    if bad or not lbs:
        kinds = ", ".join(f"{lb.get('LoadBalancerName')} is {lb.get('Type')}" for lb in bad) or "not found"
        return [block("vpc.load_balancer", f"load balancer of {sid}: {kinds}; KMS needs a network load balancer",
                      "create the endpoint service on a network load balancer")]
    found.append(ok("vpc.load_balancer", f"{sid} uses network load balancer(s) "
                    + ", ".join(lb.get("LoadBalancerName", "") for lb in lbs)))
    zones = sorted({z.get("ZoneName", "") for lb in lbs for z in lb.get("AvailabilityZones", [])} - {""})
    if len(zones) < 2:
        found.append(block("vpc.availability_zones", f"the load balancer of {sid} is in {len(zones)} Availability "
                           f"Zone(s) ({', '.join(zones) or 'none'}): KMS needs at least two",
                           "aws elbv2 set-subnets --load-balancer-arn " + arns[0]
                           + " --subnets <subnet-in-az-1> <subnet-in-az-2>", zones=zones))
    else:
        found.append(ok("vpc.availability_zones", f"load balancer in {len(zones)} Availability Zones", zones=zones))
    for lb in lbs:
        lb_name = lb.get("LoadBalancerName", "")
        if lb.get("Scheme") != "internal":
            found.append(warn("vpc.nlb_internal", f"{lb_name} is {lb.get('Scheme')}; AWS recommends an internal "
                              "NLB for an XKS endpoint service", "recreate the NLB with scheme internal"))
        else:
            found.append(ok("vpc.nlb_internal", f"{lb_name} is internal"))
        state = (lb.get("State") or {}).get("Code", "active")
        if state == "active_impaired":  # it still routes, with less capacity
            found.append(warn("vpc.nlb_state", f"{lb_name} is {state}, not active", "check the load balancer's "
                              "subnets and targets", state=state))
        elif state != "active":  # provisioning or failed: nothing routes through it yet (or any more)
            found.append(block("vpc.nlb_state", f"{lb_name} is {state}, not active: KMS's connect through the "
                               "endpoint service would fail", "wait for the load balancer to become active, or "
                               "recreate it: aws elbv2 describe-load-balancers --load-balancer-arns "
                               + str(lb.get("LoadBalancerArn", "")), state=state))
        found.append(_listener(elbv2, lb))
        found.append(nlb_targets(elbv2, lb))
    return found


def _listener(elbv2: Any, lb: Mapping[str, Any]) -> Finding:
    name = lb.get("LoadBalancerName", "")
    try:
        listeners = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"]).get("Listeners", [])
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return unverified("vpc.nlb_listener", f"could not read the listeners of {name} ({short_error(exc)}): "
                          "TCP 443 was NOT checked", "allow elasticloadbalancing:DescribeListeners for this "
                          "principal, then run preflight again")
    if any(li.get("Port") == 443 and li.get("Protocol") == "TCP" for li in listeners):
        return ok("vpc.nlb_listener", f"{name} listens on TCP 443")
    seen = ", ".join(f"{li.get('Protocol')} {li.get('Port')}" for li in listeners) or "none"
    return warn("vpc.nlb_listener", f"{name} has no TCP 443 listener (has: {seen}); KMS connects on 443 and the "
                "proxy must terminate TLS",
                f"aws elbv2 create-listener --load-balancer-arn {lb.get('LoadBalancerArn')} --protocol TCP "
                "--port 443 --default-actions Type=forward,TargetGroupArn=<proxy-target-group>")


def _consumer_view(ctx: PreflightContext, name: str, owner: str) -> list[Finding]:
    """Another account owns the service: only the consumer view (DescribeVpcEndpointServices) is readable."""
    ec2 = ctx.clients.client("ec2")
    try:
        details = ec2.describe_vpc_endpoint_services(ServiceNames=[name]).get("ServiceDetails", [])
    except Exception as exc:
        if aws_error_code(exc) in {"InvalidServiceName"}:
            details = []
        else:
            raise
    if not details:
        return [unverified("vpc.endpoint_service", f"{name} (owner {owner}) is not visible from this account: it "
                           "may not exist, or this account is not one of its allowed principals; it was NOT checked",
                           "check it in the owner account: aws ec2 describe-vpc-endpoint-service-configurations "
                           f"--filters Name=service-name,Values={name}  # run in account {owner}")]
    svc = details[0]
    sid = svc.get("ServiceId", name.rsplit(".", 1)[-1])
    # The consumer view has no ServiceState; list it as Available when it is listed at all.
    svc = {**svc, "ServiceState": svc.get("ServiceState", "Available")}
    found = [ok("vpc.endpoint_service", f"endpoint service {sid} of account {owner} found", service_id=sid)]
    found += _service_fields(ctx, svc, sid)
    zones = svc.get("AvailabilityZones", [])
    found.append(ok("vpc.availability_zones", f"offered in {len(zones)} Availability Zones", zones=zones)
                 if len(zones) >= 2 else
                 block("vpc.availability_zones", f"{sid} is offered in {len(zones)} Availability Zone(s): KMS needs "
                       "at least two", "add a subnet in another AZ to the NLB in account " + owner, zones=zones))
    principal = kms_principal(ctx.plan.region)
    found.append(unverified("vpc.allowed_principal", f"the allowed principals of {sid} belong to account {owner} "
                            f"and cannot be read from here: whether {principal} is allowed was NOT checked",
                            f"in account {owner}: aws ec2 describe-vpc-endpoint-service-permissions --service-id "
                            f"{sid}; then accept vpc.allowed_principal by name"))
    found.append(unverified("vpc.load_balancer", f"the load balancer of {sid} belongs to account {owner} and cannot "
                            "be read from here: its type, listener and healthy targets were NOT checked",
                            f"in account {owner}: aws elbv2 describe-target-health --target-group-arn <arn> (network "
                            "type, TCP 443, healthy targets); then accept vpc.load_balancer by name"))
    return found
