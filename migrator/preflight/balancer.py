"""Target health of the network load balancer behind a VPC endpoint service (facts §4.3).

KMS reaches a VPC_ENDPOINT_SERVICE proxy only through the service's NLB, which forwards TCP 443 to a
target group; with no healthy target nothing answers there and KMS's connect fails minutes into the
window. ELBv2 shows it read-only: DescribeListeners (which group port 443 forwards to), DescribeTargetGroups
(LoadBalancerArn) and DescribeTargetHealth per group. No healthy target blocks; some unhealthy ones warn
(KMS still connects, with less headroom); an API that does not answer is `unverified`, never a pass.

`check_rollback_balancer` does the same for the original endpoint service when the rollback would go back
to VPC_ENDPOINT_SERVICE (prefix `rollback.vpc`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any  # boto3 clients and responses carry no types

from migrator.plan import VPC
from migrator.preflight.base import (
    BLOCK,
    UNVERIFIED,
    Finding,
    PreflightContext,
    block,
    caller_identity,
    is_aws_or_network_error,
    ok,
    short_error,
    unverified,
    warn,
)

_READ_REMEDY = ("allow elasticloadbalancing:DescribeListeners, DescribeTargetGroups and DescribeTargetHealth for "
                "this principal, then run preflight again; by hand: aws elbv2 describe-target-health "
                "--target-group-arn <arn>")


def _forwarded_groups(elbv2: Any, lb_arn: str) -> set[str] | None:
    """Target group ARNs the TCP 443 listener forwards to (None: no such listener, or unreadable)."""
    try:
        listeners = elbv2.describe_listeners(LoadBalancerArn=lb_arn).get("Listeners", [])
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return None
    arns = {str(action.get("TargetGroupArn", "")) for li in listeners if li.get("Port") == 443
            for action in li.get("DefaultActions", []) if action.get("Type") == "forward"}
    return (arns - {""}) or None


def nlb_targets(elbv2: Any, lb: Mapping[str, Any], check: str = "vpc.nlb_targets") -> Finding:
    """One finding for the targets behind `lb`'s port 443 (all its groups when no 443 listener names one)."""
    name, arn = str(lb.get("LoadBalancerName", "")), str(lb.get("LoadBalancerArn", ""))
    try:
        groups = elbv2.describe_target_groups(LoadBalancerArn=arn).get("TargetGroups", [])
        forwarded = _forwarded_groups(elbv2, arn)
        if forwarded is not None:
            groups = [g for g in groups if g.get("TargetGroupArn") in forwarded] or groups
        states: dict[str, list[dict[str, str]]] = {}
        for group in groups:
            descriptions = elbv2.describe_target_health(
                TargetGroupArn=group["TargetGroupArn"]).get("TargetHealthDescriptions", [])
            states[str(group.get("TargetGroupName", ""))] = [
                {"id": str((d.get("Target") or {}).get("Id", "")),
                 "state": str((d.get("TargetHealth") or {}).get("State", "")),
                 "reason": str((d.get("TargetHealth") or {}).get("Reason", ""))} for d in descriptions]
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return unverified(check, f"could not read the target health of {name} ({short_error(exc)}): whether any "
                          "healthy target answers behind it was NOT checked", _READ_REMEDY, load_balancer=name)
    targets = [t for group in states.values() for t in group]
    healthy = [t for t in targets if t["state"] == "healthy"]
    detail: dict[str, object] = {"load_balancer": name, "target_groups": states, "healthy": len(healthy),
                                 "total": len(targets)}
    register = ("aws elbv2 register-targets --target-group-arn <arn> --targets Id=<proxy-ip>,Port=443  # then "
                "wait for healthy: aws elbv2 describe-target-health --target-group-arn <arn>")
    if not groups or not targets:
        return block(check, f"{name} has no target registered behind port 443: KMS's connect would find nothing "
                     "to talk to", register, **detail)
    if not healthy:
        # An NLB whose targets all fail their health checks "fails open" (routes to all of them anyway), but
        # failing every health check means the proxy does not answer as it should: not a state to migrate into.
        shown = ", ".join(f"{t['id']} {t['state']}" + (f" ({t['reason']})" if t["reason"] else "") for t in targets)
        return block(check, f"{name} has no healthy target ({shown}): KMS's connect through the endpoint service "
                     "would fail", "make the proxy answer the NLB's health checks on its target port (security "
                     "group, proxy listening), or " + register, **detail)
    if len(healthy) < len(targets):
        return warn(check, f"{name}: {len(healthy)} of {len(targets)} targets healthy", "check the unhealthy "
                    "targets: aws elbv2 describe-target-health --target-group-arn <arn>", **detail)
    return ok(check, f"{name}: all {len(targets)} target(s) healthy", **detail)


def check_rollback_balancer(ctx: PreflightContext) -> list[Finding]:
    """The original endpoint service's NLB, when the rollback would reconnect through it."""
    original = ctx.snapshot.config if ctx.snapshot else None
    if original is None or original.connectivity != VPC or not original.vpc_endpoint_service_name:
        return []
    check, name = "rollback.vpc.nlb_targets", original.vpc_endpoint_service_name
    owner = original.vpc_endpoint_service_owner
    if owner and owner != caller_identity(ctx).get("Account", ""):
        if ctx.keystore.accept_no_rollback:
            return []
        return [unverified(check, f"the load balancer of {name} belongs to account {owner} and cannot be read from "
                           "here: the rollback's targets were NOT checked", "in account " + owner + ": aws elbv2 "
                           "describe-target-health --target-group-arn <arn>  # then accept rollback.vpc.nlb_targets "
                           "by name if they are healthy")]
    ec2, elbv2 = ctx.clients.client("ec2"), ctx.clients.client("elbv2")
    try:
        configs = ec2.describe_vpc_endpoint_service_configurations(
            Filters=[{"Name": "service-name", "Values": [name]}]).get("ServiceConfigurations", [])
        arns = [a for c in configs for a in c.get("NetworkLoadBalancerArns") or []]
        lbs = elbv2.describe_load_balancers(LoadBalancerArns=arns).get("LoadBalancers", []) if arns else []
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        found = unverified(check, f"could not read the endpoint service {name} or its load balancer "
                           f"({short_error(exc)}): the rollback's targets were NOT checked", _READ_REMEDY)
        return [] if ctx.keystore.accept_no_rollback else [found]
    findings = [nlb_targets(elbv2, lb, check) for lb in lbs] or [
        block(check, f"the original endpoint service {name} has no network load balancer here: the rollback's "
              "connect would fail", "recreate the original endpoint service, or set accept_no_rollback = true")]
    if ctx.keystore.accept_no_rollback:
        return [warn(f.check, f.message + " (accepted: accept_no_rollback = true)", f.remedy, **f.detail)
                if f.status in (BLOCK, UNVERIFIED) else f for f in findings]
    return [f if f.status != BLOCK else block(f.check, "rollback target: " + f.message, f.remedy, **f.detail)
            for f in findings]
