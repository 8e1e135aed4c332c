"""Worlds with one real misconfiguration each, for every blocking preflight check (shared by tests).

Each entry: (label, mutate(world), the check that must block). The base world of WORLD_MISCONFIGURATIONS is
plans/worlds/public-to-vpc.toml (SECRET is its simulated proxy's secret); VPC_TO_PUBLIC_MISCONFIGURATIONS
change plans/worlds/vpc-to-public.toml (LEDGER_SECRET), the other direction. `vantage_resolver` is the
tool's vantage point on a running world (the world's own `GET /_rehearsal/vantage` map).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrator.rehearsal.world import model

SECRET = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="  # the simulated proxy's secret (world file)
LEDGER_SECRET = "Pcf6BsY8P4L5FGTs1zX3p6ZLWQjVTItj2OeR7uJSfDw="  # the ledger proxy's (vpc-to-public world)


def vantage_resolver(server: Any, *, private: bool = True) -> Callable[[str], str]:
    """host -> "127.0.0.1:port" as the world's vantage point "inside_vpc" gives it (private DNS names to the
    proxy the NLB routes to, or to a refusing port); private=False: public names only (a laptop outside)."""
    state = server.state

    def resolve(host: str) -> str:
        name = host.lower().rstrip(".")
        public = {h.lower() for p in state.world.proxies for h in p.public_hostnames}
        address = server.vantage().get(name)
        if address is None or (not private and name not in public):
            raise LookupError(f"{host} cannot be reached from this machine")
        return str(address)

    return resolve


def service_of(w: model.World) -> model.EndpointService:
    return w.endpoint_services[0]


def load_balancer_of(w: model.World) -> model.LoadBalancer:
    return w.load_balancers[0]


def add_other_store(w: model.World, **kw: Any) -> None:
    base = dict(id="cks-0000000000000000a", name="other", connectivity="PUBLIC_ENDPOINT",
                uri_endpoint="https://other.xks.example.com", uri_path="/kms/xks/v1",
                access_key_id="XKSPROXYACCESSKEY2345", secret=SECRET, state="CONNECTED")
    base.update(kw)
    w.keystores.append(model.KeyStore(**base))


def no_healthy_target(lb: model.LoadBalancer) -> None:
    """The NLB's only target fails its health checks: nothing listens at its address (world.balancing)."""
    lb.proxy = ""
    lb.target_groups = [model.TargetGroup(name=f"{lb.name}-tg", targets=[
        model.Target(id="10.0.1.20", proxy="", health="unhealthy", reason="Target.Timeout")])]


def proxy_fault(kind: str) -> Callable[[model.World], None]:
    return lambda w: w.faults.append(model.Fault(proxy=w.proxies[0].name, proxy_fault=kind))


def _second_key_manager(w: model.World) -> None:
    w.key_managers.append(model.KeyManager("other-hsm", [model.KeyManagerKey("unrelated-key")]))
    w.proxies.append(model.Proxy(name="other-proxy", key_manager="other-hsm", uri_path_prefix="/payments",
                                 credentials=list(w.proxies[0].credentials)))
    load_balancer_of(w).proxy = "other-proxy"


WORLD_MISCONFIGURATIONS: list[tuple[str, Callable[[model.World], None], str]] = [
    ("principal missing", lambda w: setattr(service_of(w), "allowed_principals", ["arn:aws:iam::111122223333:root"]),
     "vpc.allowed_principal"),
    ("acceptance required", lambda w: setattr(service_of(w), "acceptance_required", True), "vpc.acceptance_required"),
    ("one AZ", lambda w: setattr(load_balancer_of(w), "availability_zones", ["us-east-1a"]), "vpc.availability_zones"),
    ("gateway LB", lambda w: setattr(load_balancer_of(w), "type", "gateway"), "vpc.load_balancer"),
    ("application LB", lambda w: setattr(load_balancer_of(w), "type", "application"), "vpc.load_balancer"),
    ("gateway endpoint service", lambda w: setattr(service_of(w), "service_type", "Gateway"), "vpc.service_type"),
    ("service pending", lambda w: setattr(service_of(w), "state", "Pending"), "vpc.service_state"),
    ("DNS pendingVerification", lambda w: setattr(service_of(w), "private_dns_state", "pendingVerification"),
     "vpc.private_dns_verified"),
    ("DNS verification failed", lambda w: setattr(service_of(w), "private_dns_state", "failed"),
     "vpc.private_dns_verified"),
    ("DNS name mismatch", lambda w: setattr(service_of(w), "private_dns_name", "elsewhere.xks.example.com"),
     "vpc.private_dns_name"),
    ("service missing", lambda w: setattr(service_of(w), "service_id", "vpce-svc-0ffffffffffffffff"),
     "vpc.endpoint_service"),
    ("endpoint in use by another store",
     lambda w: add_other_store(w, uri_endpoint="https://myproxy-private.xks.example.com"),
     "target.endpoint_unique"),
    ("service in use by another store", lambda w: add_other_store(
        w, connectivity="VPC_ENDPOINT_SERVICE", uri_endpoint="https://other-private.xks.example.com",
        vpc_endpoint_service_name="com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"),
     "target.vpc_service_unique"),
    ("endpoint+path in use", lambda w: add_other_store(
        w, uri_endpoint="https://myproxy-private.xks.example.com", uri_path="/payments/kms/xks/v1"),
     "target.uri_unique"),
    ("expired certificate", lambda w: setattr(w.proxies[0], "certificate", "expired"), "tls.expiry"),
    ("wrong-host certificate", lambda w: setattr(w.proxies[0], "certificate", "wrong_host"), "tls.hostname"),
    ("untrusted CA", lambda w: setattr(w.proxies[0], "certificate", "untrusted_ca"), "tls.trusted_root"),
    ("self-signed certificate", lambda w: setattr(w.proxies[0], "certificate", "self_signed"), "tls.trusted_root"),
    ("all UNAVAILABLE", lambda w: setattr(w.proxies[0], "health", "UNAVAILABLE"), "proxy.health"),
    ("target proxy fronts another key manager", _second_key_manager, "proxy.key_metadata"),
    ("IAM denies UpdateCustomKeyStore", lambda w: w.iam.denied_actions.append("kms:UpdateCustomKeyStore"),
     "permissions.iam"),
    ("IAM denies the rollback's connect", lambda w: w.iam.denied_actions.append("kms:ConnectCustomKeyStore"),
     "permissions.iam"),
    ("no Enabled key", lambda w: [setattr(k, "state", "Disabled") for k in w.keys if k.state == "Enabled"],
     "keys.verifiable"),
    # Issue 12, block do not warn: each of these made the real run fail after the disconnect.
    ("proxy refuses connections", lambda w: setattr(w.proxies[0], "down", True), "tls.reachable"),
    ("proxy slower than KMS's 250 ms", lambda w: setattr(w.proxies[0], "latency_ms", 320.0), "proxy.latency"),
    ("proxy throttles", proxy_fault("throttling"), "proxy.health"),
    ("key manager times out behind the proxy", proxy_fault("dependency_timeout"), "proxy.health"),
    ("NLB without a healthy target", lambda w: no_healthy_target(load_balancer_of(w)), "vpc.nlb_targets"),
    ("NLB still provisioning", lambda w: setattr(load_balancer_of(w), "state", "provisioning"), "vpc.nlb_state"),
    ("leaf served without its intermediate", lambda w: setattr(w.proxies[0], "certificate", "missing_intermediate"),
     "tls.trusted_root"),
    ("proxy offers only TLS 1.1", lambda w: setattr(w.proxies[0], "tls_max_version", "1.1"), "tls.version"),
    ("original public name no longer resolves", lambda w: setattr(w.proxies[0], "public_hostnames", []),
     "rollback.tls.reachable"),
]

# The causes that used to pass `plan` with a warning (issue 12); also run through the CLI (test_blocking_worlds).
ISSUE_12 = {label for label, _, _ in WORLD_MISCONFIGURATIONS[WORLD_MISCONFIGURATIONS.index(next(
    m for m in WORLD_MISCONFIGURATIONS if m[0] == "proxy refuses connections")):]}

# The other direction: a VPC store (ledger-xks) moving to its public endpoint.
VPC_TO_PUBLIC_MISCONFIGURATIONS: list[tuple[str, Callable[[model.World], None], str]] = [
    ("public name does not resolve", lambda w: setattr(w.proxies[0], "public_hostnames", []), "tls.reachable"),
    ("proxy refuses connections", lambda w: setattr(w.proxies[0], "down", True), "tls.reachable"),
    ("proxy slower than KMS's 250 ms", lambda w: setattr(w.proxies[0], "latency_ms", 320.0), "proxy.latency"),
    ("proxy throttles", proxy_fault("throttling"), "proxy.health"),
    ("key manager times out behind the proxy", proxy_fault("dependency_timeout"), "proxy.health"),
    ("leaf served without its intermediate", lambda w: setattr(w.proxies[0], "certificate", "missing_intermediate"),
     "tls.trusted_root"),
    ("proxy offers only TLS 1.0", lambda w: setattr(w.proxies[0], "tls_max_version", "1.0"), "tls.version"),
    ("original NLB without a healthy target", lambda w: no_healthy_target(load_balancer_of(w)),
     "rollback.vpc.nlb_targets"),
]
