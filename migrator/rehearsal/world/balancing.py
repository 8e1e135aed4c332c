"""Network load balancers of the world: target groups, targets with health, and where traffic really goes.

A VPC endpoint service reaches a proxy only through its NLB: the listener on 443 forwards to a target
group, and the NLB routes to that group's healthy targets. When no target is healthy, an NLB "fails open":
"If all targets fail health checks at the same time in all enabled Availability Zones, the load balancer
fails open. ... The effect of the fail-open is to allow traffic to all targets in all enabled Availability
Zones, regardless of their health status" (ELB guide, "Health checks for Network Load Balancer target
groups"). So `routed_proxy()` follows healthy targets first, then the registered ones of a failed-open
group; a target reaches a proxy only when it names one (`proxy = ""`: nothing listens at that address),
which is how "no healthy target" makes KMS's connect fail: the targets fail their health checks because
nothing answers there.

World-file shape (`[[load_balancers]]`): either the shorthand `proxy = "NAME"` (one implicit target group
`<lb>-tg` with one healthy target in front of that proxy; `proxy = ""` is an empty target group), or
`[[load_balancers.target_groups]]` tables, each with `targets = [{ id, proxy, port, health, reason,
availability_zone }]`. A listener may name its group (`listeners = [{ port = 443, protocol = "TCP",
target_group = "NAME" }]`); otherwise it forwards to the first group. `health` is one of ELBv2's
TargetHealthStateEnum; `reason` defaults to the reason ELBv2 gives for that state.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from migrator.rehearsal.world.reader import Reader

LB_TYPES = ("network", "application", "gateway")
LB_SCHEMES = ("internal", "internet-facing")
LB_STATES = ("active", "provisioning", "active_impaired", "failed")
TARGET_TYPES = ("ip", "instance", "alb")
TARGET_HEALTH_STATES = ("initial", "healthy", "unhealthy", "unhealthy.draining", "unused", "draining",
                        "unavailable")
# ELBv2 TargetHealthReasonEnum with the descriptions DescribeTargetHealth gives for them.
TARGET_HEALTH_REASONS = {
    "Elb.RegistrationInProgress": "Target registration is in progress",
    "Elb.InitialHealthChecking": "Initial health checks in progress",
    "Target.ResponseCodeMismatch": "Health checks failed with these codes",
    "Target.Timeout": "Request timed out",
    "Target.FailedHealthChecks": "Health checks failed",
    "Target.NotRegistered": "Target is not registered to the target group",
    "Target.NotInUse": "Target group is not configured to receive traffic from the load balancer",
    "Target.DeregistrationInProgress": "Target deregistration is in progress",
    "Target.InvalidState": "Target is in the stopped or terminated state",
    "Target.IpUnusable": "The IP address cannot be used as a target, as it is in use by a load balancer",
    "Target.HealthCheckDisabled": "Health checks are disabled",
    "Elb.InternalError": "Health checks failed due to an internal error",
}
DEFAULT_REASON = {"initial": "Elb.InitialHealthChecking", "unhealthy": "Target.FailedHealthChecks",
                  "unhealthy.draining": "Target.DeregistrationInProgress", "unused": "Target.NotInUse",
                  "draining": "Target.DeregistrationInProgress", "unavailable": "Target.HealthCheckDisabled"}
# Registered targets in enabled zones: what a failed-open group sends traffic to (unused and draining never).
_FAIL_OPEN_STATES = ("initial", "unhealthy", "unavailable")
_TG_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$")


@dataclass
class Target:
    id: str  # an IP address (target_type "ip") or an instance id
    proxy: str = ""  # the proxy answering at this address; "" = nothing listens there
    port: int = 443
    health: str = "healthy"  # one of TARGET_HEALTH_STATES
    reason: str = ""  # TargetHealth.Reason; "" = DEFAULT_REASON[health] (healthy has none)
    availability_zone: str = ""  # "" = the load balancer's zones in turn


@dataclass
class TargetGroup:
    name: str
    protocol: str = "TCP"
    port: int = 443
    target_type: str = "ip"
    targets: list[Target] = field(default_factory=list)


@dataclass
class LoadBalancer:
    name: str
    type: str = "network"
    scheme: str = "internal"
    availability_zones: list[str] = field(default_factory=lambda: ["us-east-1a", "us-east-1b"])
    listeners: list[dict[str, Any]] = field(default_factory=lambda: [{"port": 443, "protocol": "TCP"}])
    state: str = "active"
    # Shorthand for one healthy target in front of this proxy ("" = an empty target group); only
    # without `target_groups`. Read live, so tests may re-point it on the model object.
    proxy: str = ""
    target_groups: list[TargetGroup] = field(default_factory=list)


def implicit_group_name(lb: LoadBalancer) -> str:
    return f"{lb.name[:28]}-tg"


def _stable_ip(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return f"10.0.{digest[0]}.{digest[1] % 254 + 1}"


def target_groups_of(lb: LoadBalancer) -> list[TargetGroup]:
    """The groups as ELBv2 shows them: as written, else the implicit group of the `proxy` shorthand."""
    if lb.target_groups:
        return lb.target_groups
    targets = [Target(id=_stable_ip(lb.name, "target"), proxy=lb.proxy)] if lb.proxy else []
    return [TargetGroup(name=implicit_group_name(lb), targets=targets)]


def target_zone(lb: LoadBalancer, group: TargetGroup, target: Target) -> str:
    if target.availability_zone:
        return target.availability_zone
    zones = lb.availability_zones or ["all"]
    return zones[group.targets.index(target) % len(zones)] if target in group.targets else zones[0]


def forwarding_group(lb: LoadBalancer) -> TargetGroup | None:
    """The group KMS's traffic lands in: the one the port-443 listener (else the first) names, else the first."""
    groups = target_groups_of(lb)
    listener = next((x for x in lb.listeners if int(x.get("port", 443)) == 443), lb.listeners[0] if lb.listeners
                    else {})
    wanted = listener.get("target_group")
    return next((g for g in groups if g.name == wanted), None) if wanted else (groups[0] if groups else None)


def receiving_targets(group: TargetGroup) -> list[Target]:
    """Healthy targets; with none, the registered ones in enabled zones (fail-open, see module doc)."""
    healthy = [t for t in group.targets if t.health == "healthy"]
    return healthy or [t for t in group.targets if t.health in _FAIL_OPEN_STATES]


def routed_proxy(lb: LoadBalancer) -> str:
    """The proxy a connection through this NLB reaches ("" = none: no target answers)."""
    group = forwarding_group(lb)
    if group is None:
        return ""
    return next((t.proxy for t in receiving_targets(group) if t.proxy), "")


def proxies_behind(lb: LoadBalancer) -> list[str]:
    """Every proxy any target of this NLB names, whatever its health (its certificate must cover the name)."""
    return list(dict.fromkeys(t.proxy for g in target_groups_of(lb) for t in g.targets if t.proxy))


def health_reason(target: Target) -> str:
    return target.reason or DEFAULT_REASON.get(target.health, "")


# ---------------------------------------------------------------------------------------------
# Loading


def read_load_balancer(r: Reader, region: str) -> LoadBalancer:
    """One `[[load_balancers]]` table (with its target groups); the caller calls `r.done()`."""
    lb = LoadBalancer(
        name=r.get("name", str),
        type=r.get("type", str, "network", choices=LB_TYPES),
        scheme=r.get("scheme", str, "internal", choices=LB_SCHEMES),
        availability_zones=r.strings("availability_zones", [f"{region}a", f"{region}b"]),
        listeners=r.get("listeners", list, [{"port": 443, "protocol": "TCP"}]),
        state=r.get("state", str, "active", choices=LB_STATES),
        proxy=r.get("proxy", str, ""),
        target_groups=[_read_group(g) for g in r.tables("target_groups")],
    )
    if lb.proxy and lb.target_groups:
        raise r.fail("proxy", "give either proxy (one healthy target) or [[load_balancers.target_groups]], not both")
    names = [g.name for g in target_groups_of(lb)]
    for listener in lb.listeners:
        if not isinstance(listener, dict):
            raise r.fail("listeners", "must be a list of tables like { port = 443, protocol = \"TCP\" }")
        wanted = listener.get("target_group")
        if wanted is not None and wanted not in names:
            raise r.fail("listeners", f"target_group {wanted!r} is not a target group of this load balancer")
    return lb


def _read_group(r: Reader) -> TargetGroup:
    group = TargetGroup(
        name=r.get("name", str, pattern=_TG_NAME),
        protocol=r.get("protocol", str, "TCP", choices=("TCP", "TLS", "UDP", "TCP_UDP", "HTTP", "HTTPS")),
        port=r.get("port", int, 443),
        target_type=r.get("target_type", str, "ip", choices=TARGET_TYPES),
    )
    for t in r.tables("targets"):
        target = Target(
            id=t.get("id", str, pattern=re.compile(r"^[a-zA-Z0-9.:-]+$")),
            proxy=t.get("proxy", str, ""),
            port=t.get("port", int, group.port),
            health=t.get("health", str, "healthy", choices=TARGET_HEALTH_STATES),
            reason=t.get("reason", str, "", choices=("", *TARGET_HEALTH_REASONS)),
            availability_zone=t.get("availability_zone", str, ""),
        )
        if not 1 <= target.port <= 65535:
            raise t.fail("port", "must be 1-65535")
        t.done()
        group.targets.append(target)
    if not 1 <= group.port <= 65535:
        raise r.fail("port", "must be 1-65535")
    r.done()
    return group
