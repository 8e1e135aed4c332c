"""Preflight checks on the key store itself, the target configuration, and the quota.

These need only the snapshot and DescribeCustomKeyStores: they catch what KMS would reject at
UpdateCustomKeyStore (facts §1.1-1.3, §5: uniqueness, connectivity rules) before the disconnect.
"""

from __future__ import annotations

import re

from migrator.aws.store_config import Observation, StoreConfig
from migrator.plan import PUBLIC, VPC
from migrator.preflight.base import (
    Finding,
    PreflightContext,
    block,
    host_of,
    ok,
    store_id,
    target_owner,
    target_path,
    unverified,
    warn,
)

_ENDPOINT = re.compile(r"^https://[a-zA-Z0-9.-]+$")
_PATH = re.compile(r"^(/[a-zA-Z0-9/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$")
_SERVICE = re.compile(r"^(com|eu)\.amazonaws\.vpce\.(([a-z]+-){2,3}\d+)\.vpce-svc-[0-9a-z]+$")
_OWNER = re.compile(r"^[0-9]{12}$")
_ACCESS_KEY = re.compile(r"^[A-Z2-7]{20,30}$")

STATE_MEANING = {
    "DISCONNECTED": ("is already DISCONNECTED: its keys are Unavailable now, before the run; the run skips the "
                     "disconnect and its keys become usable only when the new configuration connects"),
    "FAILED": ("is FAILED (a connect attempt failed): its keys are Unavailable; the run disconnects it first, "
               "and rolling back restores a configuration that did not connect last time"),
    "CONNECTING": ("is CONNECTING (transient): the run waits for it to settle before the disconnect, which "
                   "lengthens the run but not the window"),
    "DISCONNECTING": ("is DISCONNECTING (transient): its keys are already becoming Unavailable; the run waits "
                      "for DISCONNECTED and continues from there"),
}


def check_keystore(ctx: PreflightContext) -> list[Finding]:
    """The store exists, is an external key store, its state is understood, and the plan changes something."""
    snap, ks = ctx.snapshot, ctx.keystore
    if snap is None:
        return [block("keystore.exists", f"custom key store {ks.ref!r} not found in {ctx.plan.region}",
                      "aws kms describe-custom-key-stores --region " + ctx.plan.region
                      + "  # check the id/name and the Region in the plan", keystore=ks.ref)]
    sid = store_id(ctx)
    found = [ok("keystore.exists", f"key store {sid} ({snap.name}) found", keystore=sid)]
    kind = snap.type
    if not snap.is_external:
        found.append(block("keystore.type", f"{sid} is {kind or 'of unknown type'}, not EXTERNAL_KEY_STORE: "
                           "there is no proxy connectivity to switch", "use an external key store id in the plan",
                           type=kind))
        return found
    found.append(ok("keystore.type", f"{sid} is an external key store"))
    state = snap.state
    if state == "CONNECTED":
        found.append(ok("keystore.state", f"{sid} is CONNECTED", state=state))
    elif state in STATE_MEANING:
        detail: dict[str, object] = {"state": state}
        extra = ""
        if state == "FAILED" and snap.error_code:
            detail["connection_error_code"] = snap.error_code
            extra = f" (ConnectionErrorCode {snap.error_code})"
        found.append(warn("keystore.state", f"{sid} {STATE_MEANING[state]}{extra}",
                          "" if state != "FAILED" else "fix the cause of the failed connect if it was the "
                          "current configuration, or proceed: the run replaces it", **detail))
    else:
        found.append(warn("keystore.state", f"{sid} reports an unknown connection state {state!r}", state=state))
    found.append(_target_differs(ctx, snap))
    return found


def _target_differs(ctx: PreflightContext, snap: Observation) -> Finding:
    t, current = ctx.keystore.target, snap.config
    found = {c.field: [c.before, c.after] for c in current.diff(StoreConfig.for_target(t, current))}
    # `diff` ignores an empty owner (KMS fills in the caller's account), but naming one for a store that
    # reports none is still a field the update sends.
    owner = t.vpc_endpoint_service_owner
    if owner and owner != current.vpc_endpoint_service_owner:
        found.setdefault("vpc_endpoint_service_owner", [current.vpc_endpoint_service_owner, owner])
    changes = {name: found[name] for name in StoreConfig.FIELDS if name in found}
    if not changes and not t.credential:
        return block("keystore.target_differs", f"the target equals the current configuration of {store_id(ctx)}: "
                     "a run would disconnect the store for nothing", "change [keystores.target] or drop the store "
                     "from the plan")
    disruptive = {"connectivity", "uri_endpoint", "vpc_endpoint_service_name", "vpc_endpoint_service_owner"}
    if not disruptive & set(changes):
        return warn("keystore.target_differs", "only the URI path or the credential changes: UpdateCustomKeyStore "
                    "accepts those while CONNECTED, so a disconnect is not needed for this change",
                    "aws kms update-custom-key-store --custom-key-store-id " + store_id(ctx)
                    + " ...  # without disconnecting", changes=changes)
    return ok("keystore.target_differs", "changes: " + ", ".join(sorted(changes)), changes=changes)


def check_target(ctx: PreflightContext) -> list[Finding]:
    """Patterns and connectivity rules of UpdateCustomKeyStore, then uniqueness in the Region."""
    t, region = ctx.keystore.target, ctx.plan.region
    problems: list[str] = []
    if not _ENDPOINT.match(t.uri_endpoint) or not 10 <= len(t.uri_endpoint) <= 128:
        problems.append(f"uri_endpoint {t.uri_endpoint!r} must be https://host (no port, no path), 10-128 chars")
    path = target_path(ctx)
    if not _PATH.match(path) or not 10 <= len(path) <= 128:
        problems.append(f"uri_path {path!r} must end in /kms/xks/v<N>")
    if t.vpc_endpoint_service_name:
        m = _SERVICE.match(t.vpc_endpoint_service_name)
        if not m:
            problems.append(f"vpc_endpoint_service_name {t.vpc_endpoint_service_name!r} is not a service name")
        elif m.group(2) != region:
            problems.append(f"the endpoint service is in {m.group(2)}, the plan in {region}: a service cannot "
                            "be used from another Region")
    if t.vpc_endpoint_service_owner and not _OWNER.match(t.vpc_endpoint_service_owner):
        problems.append("vpc_endpoint_service_owner must be a 12-digit account id")
    if t.credential and t.credential.access_key_id and not _ACCESS_KEY.match(t.credential.access_key_id):
        problems.append("credential access_key_id must be 20-30 characters of A-Z and 2-7")
    found = [block("target.valid", "; ".join(problems), "fix [keystores.target] in the plan")] if problems \
        else [ok("target.valid", "target values match the KMS model's patterns")]

    if t.connectivity == VPC and not t.vpc_endpoint_service_name:
        found.append(block("target.connectivity", "VPC_ENDPOINT_SERVICE needs vpc_endpoint_service_name",
                           "add vpc_endpoint_service_name to [keystores.target]"))
    elif t.connectivity == PUBLIC and t.vpc_endpoint_service_name:
        found.append(block("target.connectivity", "PUBLIC_ENDPOINT must not name a VPC endpoint service",
                           "remove vpc_endpoint_service_name from [keystores.target]"))
    elif t.connectivity not in (PUBLIC, VPC):
        found.append(block("target.connectivity", f"unknown connectivity {t.connectivity!r}"))
    else:
        cur = ctx.snapshot.config if ctx.snapshot else None
        if cur and cur.connectivity != t.connectivity and cur.uri_endpoint == t.uri_endpoint:
            # UpdateCustomKeyStore API reference: "If you change the XksProxyConnectivity to VPC_ENDPOINT_SERVICE,
            # you must also change the XksProxyUriEndpoint" - a rejected update, so to VPC it blocks.
            make = block if t.connectivity == VPC else warn
            found.append(make("target.connectivity", "connectivity changes but the endpoint stays the same; KMS "
                              "documents that a change to VPC_ENDPOINT_SERVICE must also change XksProxyUriEndpoint",
                              "use the private DNS name (to VPC) or the public name (to public) as uri_endpoint"))
        else:
            found.append(ok("target.connectivity", f"{t.connectivity} with the required fields"))
    found.extend(_uniqueness(ctx))
    return found


def _uniqueness(ctx: PreflightContext) -> list[Finding]:
    """facts §5: endpoint+path unique; VPC endpoint and service per store; public != any VPC endpoint."""
    t, sid = ctx.keystore.target, store_id(ctx)
    others: list[tuple[str, StoreConfig]] = []
    for page in ctx.clients.client("kms").get_paginator("describe_custom_key_stores").paginate():
        for entry in page.get("CustomKeyStores", []):
            other = Observation.from_describe(entry)
            if other.id != sid and other.is_external:
                others.append((other.id, other.config))
    uri = t.uri_endpoint.rstrip("/") + target_path(ctx)
    same_uri = [oid for oid, c in others if (c.uri_endpoint + c.uri_path) == uri]
    if t.connectivity == VPC:
        same_host = [oid for oid, c in others if c.uri_endpoint == t.uri_endpoint]
        host_rule = "each VPC-connected store needs its own private DNS name"
    else:
        same_host = [oid for oid, c in others if c.connectivity == VPC and c.uri_endpoint == t.uri_endpoint]
        host_rule = "a public endpoint cannot equal a VPC-connected store's endpoint"
    found = [
        block("target.uri_unique", f"{uri} is already used by {', '.join(same_uri)} (XksProxyUriInUseException)",
              "choose another uri_path prefix or endpoint", stores=same_uri) if same_uri
        else ok("target.uri_unique", f"{uri} is not used by another store ({len(others)} others in the Region)"),
        block("target.endpoint_unique", f"{host_of(t.uri_endpoint)} is already the endpoint of "
              f"{', '.join(same_host)}: {host_rule} (XksProxyUriEndpointInUseException)",
              "use a different hostname for this store", stores=same_host) if same_host
        else ok("target.endpoint_unique", f"{host_of(t.uri_endpoint)} is not used by a conflicting store"),
    ]
    if t.connectivity == VPC:
        owner = target_owner(ctx)
        # Service ids are unique; an owner only tells two services apart when both sides name one.
        same_svc = [oid for oid, c in others if c.vpc_endpoint_service_name == t.vpc_endpoint_service_name
                    and not (owner and c.vpc_endpoint_service_owner and c.vpc_endpoint_service_owner != owner)]
        found.append(
            block("target.vpc_service_unique", f"{t.vpc_endpoint_service_name} is already used by "
                  f"{', '.join(same_svc)}: each store needs its own endpoint service "
                  "(XksProxyVpcEndpointServiceInUseException)", "create a separate endpoint service for this store",
                  stores=same_svc) if same_svc
            else ok("target.vpc_service_unique", "the endpoint service is not used by another store"))
    return found


def check_quota(ctx: PreflightContext) -> list[Finding]:
    """DescribeCustomKeyStores is 5 requests/s per account and Region, shared by everyone (facts §8.1)."""
    interval, stores = ctx.plan.poll_interval, max(1, len(ctx.plan.keystores))
    rate = stores / interval if interval > 0 else float("inf")
    found: list[Finding] = []
    if interval < 2.0:
        found.append(warn("quota.poll_interval", f"poll_interval {interval:g}s polls DescribeCustomKeyStores "
                          f"{rate:.1f}/s against a 5/s account-wide quota shared with every other caller",
                          "set poll_interval = \"5s\" (connect and disconnect take minutes)",
                          poll_interval=interval, requests_per_second=round(rate, 2)))
    else:
        found.append(ok("quota.poll_interval", f"poll_interval {interval:g}s: about {rate:.2f} "
                        "DescribeCustomKeyStores/s of the 5/s quota", requests_per_second=round(rate, 2)))
    if ctx.unfinished_runs is None:
        found.append(unverified("quota.concurrent_runs", "the journal could not say whether other runs are "
                                "unfinished in this account and Region",
                                "make the journal readable (xksmigrate status), then run preflight again"))
    elif ctx.unfinished_runs:
        found.append(warn("quota.concurrent_runs", f"{len(ctx.unfinished_runs)} other unfinished run(s) in this "
                          "account and Region share the same quotas: " + ", ".join(ctx.unfinished_runs[:5]),
                          "xksmigrate status  # finish or roll back the other runs first",
                          runs=list(ctx.unfinished_runs)))
    else:
        found.append(ok("quota.concurrent_runs", "no other unfinished runs in this account and Region"))
    return found
