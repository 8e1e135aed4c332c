"""Worlds with one real misconfiguration each, for every blocking preflight check (shared by tests).

Each entry: (label, mutate(world), the check that must block). The base world is
plans/worlds/public-to-vpc.toml; SECRET is its simulated proxy's secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrator.rehearsal.world import model

SECRET = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="  # the simulated proxy's secret (world file)


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
]
