"""ELBv2 query API over the world's load balancers: what a preflight sees of an endpoint service's NLB.

ARNs, DNS names, subnets and the VPC are derived from names (stable across runs). Target groups and
target health come from `world.balancing` (a `proxy` shorthand shows as one implicit group). A load balancer
behind an endpoint service owned by another account lives in that account, so it is invisible here,
as it would be in AWS. Pagination is not modelled. `elasticloadbalancing:<Action>` in the world's
`[iam] denied_actions` makes that action fail with AccessDenied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from migrator.rehearsal.query.common import (
    QueryError,
    caller_arn,
    denied,
    lb_account,
    lb_arn,
    list_param,
    query_body,
    required,
    stable_hex,
    subnet_id,
    vpc_id,
)
from migrator.rehearsal.world import balancing, model

_CREATED = "2024-01-01T00:00:00.000Z"  # the world has no history; one fixed creation time


def _visible(world: model.World) -> list[model.LoadBalancer]:
    return [lb for lb in world.load_balancers if lb_account(world, lb) == world.account_id]


def _dns_name(world: model.World, lb: model.LoadBalancer) -> str:
    suffix = stable_hex(lb.name, "dns", length=16)
    if lb.type == "application":
        prefix = "internal-" if lb.scheme == "internal" else ""
        return f"{prefix}{lb.name}-{suffix}.{world.region}.elb.amazonaws.com"
    return f"{lb.name}-{suffix}.elb.{world.region}.amazonaws.com"


def _load_balancer(world: model.World, lb: model.LoadBalancer) -> dict[str, Any]:
    return {
        "LoadBalancerArn": lb_arn(world, lb),
        "DNSName": _dns_name(world, lb),
        "CanonicalHostedZoneId": "Z" + stable_hex(world.region, lb.type, length=13).upper(),
        "CreatedTime": _CREATED,
        "LoadBalancerName": lb.name,
        "Scheme": lb.scheme,
        "VpcId": vpc_id(world, world.account_id),
        "State": {"Code": lb.state},
        "Type": lb.type,
        "AvailabilityZones": [
            {"ZoneName": zone, "SubnetId": subnet_id(lb, zone)} for zone in lb.availability_zones
        ],
        "IpAddressType": "ipv4",
    }


def describe_load_balancers(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    arns = list_param(params, "LoadBalancerArns.member")
    names = list_param(params, "Names.member")
    if arns and names:
        raise QueryError("ValidationError",
                         "Load balancer names and load balancer ARNs cannot be specified at the same time")
    lbs = _visible(world)
    if arns:
        by_arn = {lb_arn(world, lb): lb for lb in lbs}
        missing = [a for a in arns if a not in by_arn]
        if missing:
            raise QueryError("LoadBalancerNotFound", f"Load balancers '{', '.join(missing)}' not found")
        lbs = [by_arn[a] for a in dict.fromkeys(arns)]
    elif names:
        by_name = {lb.name: lb for lb in lbs}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise QueryError("LoadBalancerNotFound", f"Load balancers '{', '.join(missing)}' not found")
        lbs = [by_name[n] for n in dict.fromkeys(names)]
    return {"LoadBalancers": [_load_balancer(world, lb) for lb in lbs]}


def _tg_arn(world: model.World, lb: model.LoadBalancer, group: model.TargetGroup) -> str:
    """Stable per (load balancer, group); the implicit group keeps the ARN listeners always showed."""
    suffix = (stable_hex(lb.name, "tg", length=16) if group.name == balancing.implicit_group_name(lb)
              else stable_hex(lb.name, group.name, "tg", length=16))
    return f"arn:aws:elasticloadbalancing:{world.region}:{lb_account(world, lb)}:targetgroup/{group.name}/{suffix}"


def _listeners(world: model.World, lb: model.LoadBalancer) -> list[dict[str, Any]]:
    arn = lb_arn(world, lb)
    groups = {g.name: g for g in balancing.target_groups_of(lb)}
    first = next(iter(groups.values()))
    out = []
    for i, listener in enumerate(lb.listeners):
        port = int(listener.get("port", 443))
        target_group = _tg_arn(world, lb, groups.get(listener.get("target_group", ""), first))
        out.append({
            "ListenerArn": arn.replace(":loadbalancer/", ":listener/", 1)
            + "/" + stable_hex(lb.name, str(port), str(i), length=16),
            "LoadBalancerArn": arn,
            "Port": port,
            "Protocol": str(listener.get("protocol", "TCP")),
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": target_group}],
        })
    return out


def describe_listeners(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    lb_arn_param = params.get("LoadBalancerArn", "")
    listener_arns = list_param(params, "ListenerArns.member")
    if not lb_arn_param and not listener_arns:
        raise QueryError("ValidationError", "You must specify either listener ARNs or a load balancer ARN")
    if lb_arn_param:
        lb = next((lb for lb in _visible(world) if lb_arn(world, lb) == lb_arn_param), None)
        if lb is None:
            raise QueryError("LoadBalancerNotFound", f"Load balancer '{lb_arn_param}' not found")
        listeners = _listeners(world, lb)
    else:
        listeners = [entry for lb in _visible(world) for entry in _listeners(world, lb)]
    if listener_arns:
        known = {entry["ListenerArn"] for entry in listeners}
        missing = [a for a in listener_arns if a not in known]
        if missing:
            raise QueryError("ListenerNotFound", f"Listeners '{', '.join(missing)}' not found")
        listeners = [entry for entry in listeners if entry["ListenerArn"] in listener_arns]
    return {"Listeners": listeners}


def _groups(world: model.World) -> list[tuple[model.LoadBalancer, model.TargetGroup, str]]:
    return [(lb, g, _tg_arn(world, lb, g)) for lb in _visible(world) for g in balancing.target_groups_of(lb)]


def _target_group(world: model.World, lb: model.LoadBalancer, group: model.TargetGroup, arn: str) -> dict[str, Any]:
    return {
        "TargetGroupArn": arn, "TargetGroupName": group.name, "Protocol": group.protocol, "Port": group.port,
        "VpcId": vpc_id(world, world.account_id), "HealthCheckProtocol": "TCP", "HealthCheckPort": "traffic-port",
        "HealthCheckEnabled": True, "HealthCheckIntervalSeconds": 30, "HealthCheckTimeoutSeconds": 10,
        "HealthyThresholdCount": 5, "UnhealthyThresholdCount": 2, "LoadBalancerArns": [lb_arn(world, lb)],
        "TargetType": group.target_type, "IpAddressType": "ipv4",
    }


def describe_target_groups(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """DescribeTargetGroups by LoadBalancerArn, TargetGroupArns or Names (one of them), or all."""
    lb_arn_param = params.get("LoadBalancerArn", "")
    arns = list_param(params, "TargetGroupArns.member")
    names = list_param(params, "Names.member")
    if sum(map(bool, (lb_arn_param, arns, names))) > 1:
        raise QueryError("ValidationError", "Only one of LoadBalancerArn, TargetGroupArns, or Names can be specified")
    groups = _groups(world)
    if lb_arn_param:
        if not any(lb_arn(world, lb) == lb_arn_param for lb in _visible(world)):
            raise QueryError("LoadBalancerNotFound", f"Load balancer '{lb_arn_param}' not found")
        groups = [g for g in groups if lb_arn(world, g[0]) == lb_arn_param]
    elif arns or names:
        wanted, index = (arns, 2) if arns else (names, 1)
        by_key = {(g[2] if index == 2 else g[1].name): g for g in groups}
        if any(w not in by_key for w in wanted):
            raise QueryError("TargetGroupNotFound", "One or more target groups not found")
        groups = [by_key[w] for w in dict.fromkeys(wanted)]
    return {"TargetGroups": [_target_group(world, lb, g, arn) for lb, g, arn in groups]}


def _health(lb: model.LoadBalancer, group: model.TargetGroup, target: model.Target) -> dict[str, Any]:
    health: dict[str, Any] = {"State": target.health}
    reason = balancing.health_reason(target)
    if reason:
        health.update(Reason=reason, Description=balancing.TARGET_HEALTH_REASONS[reason])
    return {"Target": {"Id": target.id, "Port": target.port,
                       "AvailabilityZone": balancing.target_zone(lb, group, target)},
            "HealthCheckPort": str(target.port), "TargetHealth": health}


def describe_target_health(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """DescribeTargetHealth of one group; asked-for targets that are not registered are unused/NotRegistered."""
    arn = required(params, "TargetGroupArn", "ValidationError")
    found = next(((lb, g) for lb, g, a in _groups(world) if a == arn), None)
    if found is None:
        raise QueryError("TargetGroupNotFound", f"Target groups '{arn}' not found")
    lb, group = found
    ids = [v for k, v in params.items() if re.fullmatch(r"Targets\.member\.\d+\.Id", k)]  # matched by Id only
    descriptions = [] if ids else [_health(lb, group, target) for target in group.targets]
    for target_id in dict.fromkeys(ids):
        target = next((t for t in group.targets if t.id == target_id), None)
        descriptions.append(_health(lb, group, target) if target else {
            "Target": {"Id": target_id, "Port": group.port},
            "TargetHealth": {"State": "unused", "Reason": "Target.NotRegistered",
                             "Description": balancing.TARGET_HEALTH_REASONS["Target.NotRegistered"]}})
    return {"TargetHealthDescriptions": descriptions}


HANDLERS: dict[str, Callable[[model.World, Mapping[str, str]], dict[str, Any]]] = {
    "DescribeLoadBalancers": describe_load_balancers,
    "DescribeListeners": describe_listeners,
    "DescribeTargetGroups": describe_target_groups,
    "DescribeTargetHealth": describe_target_health,
}


def handle(world: model.World, action: str, params: Mapping[str, str]) -> bytes:
    """One ELBv2 action: permission (world IAM), then the handler; raises QueryError."""
    handler = HANDLERS.get(action)
    if handler is None:
        raise QueryError("InvalidAction", f"The action {action} is not valid for this web service.")
    if denied(world, f"elasticloadbalancing:{action}"):
        raise QueryError("AccessDenied", f"User: {caller_arn(world)} is not authorized to perform: "
                                         f"elasticloadbalancing:{action}", 403)
    return query_body("elasticloadbalancing", action, handler(world, params))
