"""The vantage point: which proxy hosts the machine running the tool can reach, and at which loopback port.

KMS reaches a store's proxy by the world's own rules (`kms.checks.resolve`); the operator's machine is
somewhere else. `[world] vantage` says where:
- "inside_vpc" (the default, and what the example and derived worlds use): the machine is in the VPC of the
  endpoint services, or has an SSM port forward to their NLBs (RUNBOOK.md#vantage-point), so it reaches every
  public hostname and every endpoint service's private DNS name. A private name reaches the proxy its NLB
  routes to (`balancing.routed_proxy`); an NLB with no target that answers, or not active, gives a port that
  refuses connections (the name resolves inside the VPC, nothing answers behind it). Inside the VPC a
  private hosted zone wins over public DNS, so a private name also served publicly goes to the NLB.
- "outside": the machine is on the internet: public hostnames only; a private DNS name does not resolve.

The map is computed on every call, so a world changed at run time (`/_rehearsal/mutate`) is seen at once.
Served at `GET /_rehearsal/vantage` and used by `migrator.dryrun`; the tool meets it only as data.
"""

from __future__ import annotations

from collections.abc import Mapping

from migrator.rehearsal.world import balancing, model

LOOPBACK = "127.0.0.1"


def reachable(world: model.World, ports: Mapping[str, int], refused_port: int) -> dict[str, str]:
    """{host (lower case): "127.0.0.1:port"} this machine can dial; `ports` maps proxy name -> its port."""
    found: dict[str, str] = {}
    for proxy in world.proxies:
        port = ports.get(proxy.name)
        for host in proxy.public_hostnames:
            if port is not None:
                found.setdefault(host.lower(), f"{LOOPBACK}:{port}")
    if world.vantage != "inside_vpc":
        return found
    lbs = {lb.name: lb for lb in world.load_balancers}
    for svc in world.endpoint_services:
        if not svc.private_dns_name or svc.state in ("Deleting", "Deleted"):  # no endpoint, no name
            continue
        lb = lbs.get(svc.load_balancer)
        routed = balancing.routed_proxy(lb) if lb is not None and lb.state in ("active", "active_impaired") else ""
        port = ports.get(routed) if routed else None
        found[svc.private_dns_name.lower()] = f"{LOOPBACK}:{port if port is not None else refused_port}"
    return found
