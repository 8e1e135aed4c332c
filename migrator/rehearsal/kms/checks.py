"""What the world's KMS checks before it trusts a proxy configuration (facts §1.3, §2.4, §4).

One `Target` is the set of values KMS would use (current ones at connect, new ones at update). Each check
returns an `Outcome` that carries both spellings of the same failure: the `ConnectionErrorCode` a connect
ends with, and the exception Create/UpdateCustomKeyStore raise. Nothing here is a fault flag: every outcome
follows from the world's configuration or from what the proxy really answered over HTTPS.

Order for VPC connectivity (connect: §2.2; create/update: §4.2): service found and KMS allowed ->
service configuration -> the load balancer forwards to a proxy -> GetHealthStatus through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrator.rehearsal.kms import proxy_client as pc
from migrator.rehearsal.world import balancing, model
from migrator.rehearsal.world.state import StoreRuntime, WorldState

PUBLIC = "PUBLIC_ENDPOINT"
VPC = "VPC_ENDPOINT_SERVICE"


@dataclass(frozen=True)
class Target:
    connectivity: str
    uri_endpoint: str
    uri_path: str
    access_key_id: str
    secret: str
    service_name: str = ""
    service_owner: str = ""

    @property
    def host(self) -> str:
        return self.uri_endpoint.removeprefix("https://")

    @classmethod
    def of(cls, ks: model.KeyStore) -> Target:
        return cls(ks.connectivity, ks.uri_endpoint, ks.uri_path, ks.access_key_id, ks.secret,
                   ks.vpc_endpoint_service_name, ks.vpc_endpoint_service_owner)


@dataclass(frozen=True)
class Outcome:
    code: str = ""  # ConnectionErrorCode ("" = fine)
    exception: str = ""  # Create/UpdateCustomKeyStore exception name
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.code


FINE = Outcome()

_NOT_FOUND = ("XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND", "XksProxyVpcEndpointServiceNotFoundException")
_INVALID_SVC = ("XKS_VPC_ENDPOINT_SERVICE_INVALID_CONFIGURATION",
                "XksProxyVpcEndpointServiceInvalidConfigurationException")
_UNREACHABLE = ("XKS_PROXY_NOT_REACHABLE", "XksProxyUriUnreachableException")


def _out(pair: tuple[str, str], message: str) -> Outcome:
    return Outcome(pair[0], pair[1], message)


def find_service(world: model.World, name: str, owner: str) -> model.EndpointService | None:
    """The endpoint service called `name` owned by `owner` ("" = the world's account), if it exists."""
    want_owner = owner or world.account_id
    for svc in world.endpoint_services:
        if svc.service_name(world.region) == name and (svc.owner or world.account_id) == want_owner:
            return svc
    return None


def check_service(world: model.World, target: Target) -> Outcome:
    """The VPC endpoint service requirements of facts §4.1, mapped to NOT_FOUND / INVALID_CONFIGURATION.

    Acceptance required is an invalid configuration here (troubleshooting page); the vpc-connectivity page
    names XksProxyInvalidConfigurationException for it at create and the DG's NOT_FOUND example mentions it
    too (UNCONFIRMED which one real KMS raises).
    """
    svc = find_service(world, target.service_name, target.service_owner)
    if svc is None or svc.state in ("Deleting", "Deleted"):
        return _out(_NOT_FOUND, f"KMS cannot find the VPC endpoint service {target.service_name}.")
    principal = f"cks.kms.{world.region}.amazonaws.com"
    if principal not in svc.allowed_principals and "*" not in svc.allowed_principals:
        return _out(_NOT_FOUND, f"The allowed principals of {target.service_name} do not include {principal}.")
    lb = next((b for b in world.load_balancers if b.name == svc.load_balancer), None)
    problems = []
    if svc.state != "Available":
        problems.append(f"the service state is {svc.state}")
    if svc.service_type != "Interface":
        problems.append(f"the service type is {svc.service_type}, not Interface")
    if lb is None or lb.type != "network":
        problems.append("the service does not use a network load balancer")
    elif len(set(lb.availability_zones)) < 2:
        problems.append("the network load balancer is not in at least two Availability Zones")
    if svc.acceptance_required:
        problems.append("the service requires acceptance of connection requests")
    if not svc.private_dns_name or svc.private_dns_name.lower() != target.host.lower():
        problems.append(f"its private DNS name {svc.private_dns_name!r} does not match the proxy URI endpoint")
    elif svc.private_dns_state != "verified":
        problems.append(f"its private DNS name is {svc.private_dns_state}, not verified")
    if problems:
        return _out(_INVALID_SVC, f"The VPC endpoint service {target.service_name} is not valid for an external "
                                  f"key store: {'; '.join(problems)}.")
    return FINE


def service_world(state: WorldState, owner: str) -> model.World:
    """Where an endpoint service owned by `owner` lives: that account's cell in this Region when the world has
    it (cross-account VPC connectivity), else this cell (whose services may name another `owner`)."""
    cell = state.cells.get((owner, state.region)) if owner and owner != state.account_id else None
    return cell.world if cell is not None else state.world


def resolve(state: WorldState, target: Target) -> tuple[model.Proxy | None, Outcome]:
    """Name resolution inside the world (docs/ARCHITECTURE.md): which proxy the endpoint host reaches."""
    world = state.world if target.connectivity == PUBLIC else service_world(state, target.service_owner)
    if target.connectivity == PUBLIC:
        for proxy in world.proxies:
            if target.host.lower() in (h.lower() for h in proxy.public_hostnames):
                return proxy, FINE
        return None, _out(_UNREACHABLE, f"KMS cannot resolve or reach {target.host} on the internet.")
    svc = find_service(world, target.service_name, target.service_owner)
    lb = next((b for b in world.load_balancers if svc and b.name == svc.load_balancer), None)
    routed = balancing.routed_proxy(lb) if lb is not None else ""
    proxy = next((p for p in world.proxies if routed and p.name == routed), None)
    if svc is None or lb is None or proxy is None or lb.state not in ("active", "active_impaired"):
        # No target answers behind the NLB (none healthy, and none of a failed-open group reaches a proxy).
        # UNCONFIRMED: AWS documents no ConnectionErrorCode for this; XKS_PROXY_NOT_REACHABLE ("KMS can't
        # communicate with your external key store proxy", facts §2.4) is the closest.
        return None, _out(_UNREACHABLE, f"The load balancer behind {target.service_name} has no healthy target.")
    return proxy, FINE


def classify(result: pc.ProxyResult) -> Outcome:
    """A GetHealthStatus result in KMS's terms: facts §1.3 (exceptions) and §2.4 (connection codes).

    403 on GetHealthStatus cannot happen with a spec-conforming proxy (health is excluded from secondary
    authorization); we map it to XKS_PROXY_ACCESS_DENIED for connect and, UNCONFIRMED, to
    XksProxyIncorrectAuthenticationCredentialException for create/update (no documented mapping).
    """
    if result.failure == pc.UNREACHABLE:
        return _out(_UNREACHABLE, f"KMS cannot reach the external key store proxy: {result.detail}.")
    if result.failure == pc.TLS:
        return Outcome("XKS_PROXY_INVALID_TLS_CONFIGURATION", "XksProxyUriUnreachableException",
                       f"KMS cannot establish a TLS connection to the proxy: {result.detail}.")
    if result.failure == pc.TIMEOUT:
        return Outcome("XKS_PROXY_TIMED_OUT", "XksProxyUriUnreachableException",
                       f"The external key store proxy did not respond in time: {result.detail}.")
    if result.failure == pc.MALFORMED:
        return Outcome("XKS_PROXY_INVALID_RESPONSE", "XksProxyInvalidResponseException",
                       "KMS cannot interpret the response from the external key store proxy.")
    if result.failure == pc.HTTP_ERROR:
        name = result.error_name
        if result.status == 401 or name == "AuthenticationFailedException":
            return Outcome("INVALID_CREDENTIALS", "XksProxyIncorrectAuthenticationCredentialException",
                           "The external key store proxy rejected the request because of invalid credentials.")
        if result.status == 403 or name == "AccessDeniedException":
            return Outcome("XKS_PROXY_ACCESS_DENIED", "XksProxyIncorrectAuthenticationCredentialException",
                           "The external key store proxy denied access to KMS.")
        if name == "InvalidUriPathException":
            return Outcome("XKS_PROXY_INVALID_CONFIGURATION", "XksProxyInvalidConfigurationException",
                           "The external key store proxy rejected the request because of an invalid URI path. "
                           "Verify the URI path for your external key store and update if necessary.")
        if name in ("ThrottlingException", "DependencyTimeoutException"):
            # Create/Update: XksProxyUriUnreachableException (facts §1.3, the spec's "KMS Considerations").
            # Connect: UNCONFIRMED, no documented code; XKS_PROXY_NOT_REACHABLE is the connect-side twin.
            return _out(_UNREACHABLE, f"The external key store proxy answered {name}.")
        return Outcome("XKS_PROXY_INVALID_RESPONSE", "XksProxyInvalidResponseException",
                       f"The external key store proxy answered {name}.")
    problem, detail = pc.health_problem(result.body)
    if problem == pc.UNREACHABLE:
        return _out(_UNREACHABLE, f"The external key store proxy reports that {detail}.")
    if problem == pc.MALFORMED:
        return Outcome("XKS_PROXY_INVALID_RESPONSE", "XksProxyInvalidResponseException",
                       "KMS cannot interpret the response from the external key store proxy.")
    return FINE


def full_check(state: WorldState, target: Target, operation: str, keystore: str, *,
               with_proxy: bool = True) -> Outcome:
    """Everything KMS checks for `operation` (Create/Update/ConnectCustomKeyStore) with these values."""
    if target.connectivity == VPC:
        outcome = check_service(service_world(state, target.service_owner), target)
        if not outcome.ok or not with_proxy:
            return outcome
    proxy, outcome = resolve(state, target)
    if proxy is None:
        return outcome
    result = call_proxy(state, proxy, target, "/health", {"requestMetadata": {
        "kmsRequestId": state.new_request_id(), "kmsOperation": operation}}, operation="GetHealthStatus",
        keystore=keystore)
    return classify(result)


def connect_check(state: WorldState, rt: StoreRuntime) -> str:
    """How a due connect of `rt` ends (`world.state.ConnectCheck`): its ConnectionErrorCode, "" = CONNECTED."""
    return full_check(state, Target.of(rt.ks), "ConnectCustomKeyStore", rt.ks.id).code


def call_proxy(state: WorldState, proxy: model.Proxy, target: Target, suffix: str, body: dict[str, Any], *,
               operation: str, keystore: str) -> pc.ProxyResult:
    """One signed HTTPS call to `proxy` as KMS makes it with `target`'s values; logged without payloads."""
    connection = state.proxy_connection(proxy)
    request_id = body.get("requestMetadata", {}).get("kmsRequestId")
    if connection is None:
        result = pc.ProxyResult(pc.UNREACHABLE, detail="proxy is not running")
    else:
        port, context = connection
        result = pc.call_proxy(port=port, host=target.host, path=target.uri_path + suffix, body=body,
                               access_key_id=target.access_key_id, secret=target.secret, region=state.region,
                               context=context)
    state.log.add("proxy", operation, keystore=keystore, error=result.error_name or result.failure,
                  request_id=request_id, detail=None if result.ok else result.detail)
    return result
