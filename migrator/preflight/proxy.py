"""Preflight checks that talk to the XKS proxy, and rollback readiness.

The proxy is probed the way KMS will probe it (GetHealthStatus, then GetKeyMetadata of the keys we
will verify with), with the credential the store will use after the update. Errors are judged by
the spec's `errorName` (facts §7.4) and mapped to what KMS would do with them (facts §1.3).
"""

from __future__ import annotations

import ssl
import statistics
from collections.abc import Sequence

from migrator.aws.secret_refs import SecretValue
from migrator.aws.xks_client import ProxyError, ProxyResponse, XksProxyClient
from migrator.plan import VPC
from migrator.preflight.base import (
    BLOCK,
    PASS,
    UNVERIFIED,
    WARN,
    Finding,
    PreflightContext,
    address_for,
    block,
    caller_identity,
    host_of,
    is_aws_or_network_error,
    ok,
    resolve_secret_safely,
    target_path,
    unverified,
    warn,
)
from migrator.preflight.tls import VANTAGE_REMEDY, probe_tls, tls_ok

# KMS gives up on a proxy request after 250 ms (facts §1.3: XksProxyUriUnreachableException / XKS_PROXY_TIMED_OUT).
LATENCY_LIMIT_MS = 250.0
# Above this share of the limit a verified, passing latency is still worth a warning: little headroom.
LATENCY_WARN_FRACTION = 0.8
# Signed GetHealthStatus calls measured per probe; the median decides (one slow call or GC pause does not).
# Always this many on a healthy answer (a rehearsal fault with `after = N` can count on it): the target's
# probe and the rollback's each make LATENCY_SAMPLES calls.
LATENCY_SAMPLES = 5
# Seconds the client waits for a whole answer: 8x KMS's limit, so "no answer" is a latency block, not a guess.
PROBE_TIMEOUT = 2.0
SECRET_REMEDY = ("add [keystores.original_credential] secret = \"secretsmanager:arn:aws:secretsmanager:...\" "
                 "(or env:/file:) to the plan: the current proxy secret, never inline")

# errorName -> (status, what KMS does with it, remedy)
_ERRORS: dict[str, tuple[str, str, str]] = {
    "AuthenticationFailedException": (BLOCK, "the proxy rejected the credential (KMS: "
                                      "XksProxyIncorrectAuthenticationCredentialException / INVALID_CREDENTIALS)",
                                      "give the access key id and secret the proxy accepts"),
    "InvalidUriPathException": (BLOCK, "the proxy does not serve this URI path (KMS: "
                                "XksProxyInvalidConfigurationException)", "fix uri_path in the plan"),
    "AccessDeniedException": (BLOCK, "the proxy's authorization denied the request (KMS: XKS_PROXY_ACCESS_DENIED)",
                              "allow KMS in the proxy's authorization rules"),
    "ValidationException": (BLOCK, "the proxy called the request invalid (KMS: XksProxyInvalidResponseException)",
                            "check the proxy version against XKS spec 1.0"),
    "InvalidStateException": (BLOCK, "the proxy reports an invalid state", "check the proxy and key manager"),
    "UnsupportedOperationException": (BLOCK, "the proxy does not support the operation", "upgrade the proxy"),
    # KMS's connect sends GetHealthStatus too: any of these answers makes it fail, so they block.
    "InternalException": (BLOCK, "the proxy had an internal error (KMS: XksProxyInvalidResponseException)",
                          "check the proxy logs and fix the error before migrating"),
    "ThrottlingException": (BLOCK, "the proxy throttled the probe: KMS's connect and requests would fail too "
                            "(KMS: XksProxyUriUnreachableException)", "raise the proxy's rate limit (or lower the "
                            "load on it) until GetHealthStatus answers, then run preflight again"),
    "DependencyTimeoutException": (BLOCK, "the external key manager did not answer the proxy in time: KMS's connect "
                                   "would fail (KMS: XksProxyUriUnreachableException)", "bring the external key "
                                   "manager back (or fix the proxy's connection to it), then run preflight again"),
}


def _ssl_context(ctx: PreflightContext) -> ssl.SSLContext:
    """OS roots plus the extra roots: certificate trust itself is judged by the tls.* checks."""
    context = ssl.create_default_context()
    for pem in ctx.extra_roots_pem:
        context.load_verify_locations(cadata=pem.decode("ascii", "replace"))
    return context


def _error_finding(check: str, what: str, resp: ProxyResponse) -> Finding:
    if resp.malformed:
        return block(check, f"{what}: HTTP {resp.status} without a JSON body (KMS: XksProxyInvalidResponseException)",
                     "check that the endpoint and path reach an XKS proxy", status=resp.status)
    status, meaning, remedy = _ERRORS.get(resp.error_name, (BLOCK, "unknown error", "check the proxy logs"))
    make = block if status == BLOCK else warn
    return make(check, f"{what}: {resp.error_name or 'HTTP ' + str(resp.status)}: {meaning}", remedy,
                status=resp.status, error_name=resp.error_name)


def _transport_finding(check: str, what: str, exc: ProxyError) -> Finding:
    """A signed call that failed in transport, moments after the TLS probe reached the same proxy: KMS would
    fail the same way, so it blocks (no answer within PROBE_TIMEOUT is far past KMS's 250 ms)."""
    meaning = {"timeout": f"no answer within {PROBE_TIMEOUT:g}s (KMS gives up after {LATENCY_LIMIT_MS:.0f} ms)",
               "protocol": "the endpoint does not speak HTTP like an XKS proxy"}.get(exc.kind, "KMS's connect would "
                                                                                          "fail the same way")
    return block(check, f"{what} failed ({exc.kind}): {exc}: {meaning}", "check the proxy (and the load balancer in "
                 "front of it) from where KMS connects; see the tls.* findings", kind=exc.kind)


def probe_proxy(ctx: PreflightContext, *, uri_endpoint: str, uri_path: str, access_key_id: str,
                secret: SecretValue, key_ids: Sequence[str], use_probe: bool, prefix: str) -> list[Finding]:
    """GetHealthStatus LATENCY_SAMPLES times (its answer and its latency), then GetKeyMetadata per external key."""
    host = host_of(uri_endpoint)
    address, _how = address_for(ctx, host, use_probe=use_probe)
    if address == "":
        return [unverified(f"{prefix}.reachable", f"{host} cannot be reached from here: the proxy was NOT probed",
                           VANTAGE_REMEDY.format(host=host), host=host)]
    client = XksProxyClient(uri_endpoint, uri_path, ctx.plan.region, access_key_id, secret,
                            ssl_context=_ssl_context(ctx), connect_to=address or None, timeout=PROBE_TIMEOUT)
    what = f"GetHealthStatus {host}{uri_path}"
    samples: list[float] = []
    for _ in range(LATENCY_SAMPLES):
        try:
            resp = client.health()
        except ProxyError as exc:
            if exc.kind == "tls":  # tls.* judged the chain and passed: this machine's trust store is what differs
                return [unverified(f"{prefix}.reachable", f"{what}: {exc}; the proxy was NOT probed (its chain "
                                   "passed the tls.* checks, but this machine's trust store does not verify it)",
                                   "add the chain's root CA (PEM) to the plan's extra_trusted_roots, then run "
                                   "preflight again", kind=exc.kind)]
            check = f"{prefix}.latency" if exc.kind == "timeout" else f"{prefix}.reachable"
            return [_transport_finding(check, what, exc)]
        if not resp.ok:
            check = f"{prefix}.auth" if resp.error_name == "AuthenticationFailedException" else (
                f"{prefix}.uri_path" if resp.error_name == "InvalidUriPathException" else f"{prefix}.health")
            return [_error_finding(check, what, resp)]
        samples.append(resp.latency_ms)
        if _health(prefix, resp).status == BLOCK:
            break  # an answer that already blocks needs no more samples
    found = [ok(f"{prefix}.auth", f"the proxy accepted credential {access_key_id} on {uri_path}"),
             _health(prefix, resp), latency_finding(prefix, samples)]
    principal = _principal(ctx)
    for key_id in key_ids:
        found.append(_key_metadata(client, key_id, principal, prefix))
    return found


def latency_finding(prefix: str, samples_ms: Sequence[float]) -> Finding:
    """Judge the median of the signed GetHealthStatus round trips (connection setup excluded) against KMS's limit."""
    ordered = sorted(samples_ms)
    median = statistics.median(ordered)
    figures = (f"median {median:.0f} ms of {len(ordered)} signed GetHealthStatus calls from here "
               f"(min {ordered[0]:.0f}, max {ordered[-1]:.0f}); KMS gives up after {LATENCY_LIMIT_MS:.0f} ms")
    detail: dict[str, object] = {"median_ms": round(median, 1), "samples_ms": [round(x, 1) for x in ordered],
                                 "limit_ms": LATENCY_LIMIT_MS}
    if median > LATENCY_LIMIT_MS:
        return block(f"{prefix}.latency", f"the proxy is too slow: {figures}", "bring the proxy and key manager "
                     "latency under 250 ms (KMS would fail with XKS_PROXY_TIMED_OUT); if this machine is far from the "
                     "proxy, measure from a vantage point near KMS's path (RUNBOOK.md#vantage-point)", **detail)
    if median > LATENCY_LIMIT_MS * LATENCY_WARN_FRACTION:
        return warn(f"{prefix}.latency", f"the proxy is close to KMS's timeout: {figures}",
                    "check the proxy and key manager latency: little headroom is left", **detail)
    return ok(f"{prefix}.latency", figures, **detail)


def _principal(ctx: PreflightContext) -> str:
    try:
        return caller_identity(ctx).get("Arn") or "AWS Internal"
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return "AWS Internal"


def _health(prefix: str, resp: ProxyResponse) -> Finding:
    fleet = resp.body.get("ekmFleetDetails")
    if not isinstance(fleet, list) or not fleet:
        return block(f"{prefix}.health", "GetHealthStatus has no ekmFleetDetails (KMS: "
                     "XksProxyInvalidResponseException)", "check the proxy against XKS spec 1.0")
    states = [str(e.get("healthStatus", "")) for e in fleet if isinstance(e, dict)]
    detail = {"ekm_states": states, "vendor": str(resp.body.get("xksProxyVendor", ""))}
    if states and all(s == "UNAVAILABLE" for s in states):
        return block(f"{prefix}.health", f"all {len(states)} external key manager instance(s) are UNAVAILABLE: KMS "
                     "would fail with XKS_PROXY_NOT_REACHABLE", "bring the external key manager back", **detail)
    if any(s in ("UNAVAILABLE", "DEGRADED") for s in states):
        return warn(f"{prefix}.health", "key manager fleet is degraded: " + ", ".join(states),
                    "check the external key manager", **detail)
    return ok(f"{prefix}.health", f"key manager fleet ACTIVE ({len(states)} instance(s))", **detail)


def _key_metadata(client: XksProxyClient, key_id: str, principal: str, prefix: str) -> Finding:
    check = f"{prefix}.key_metadata"
    try:
        resp = client.key_metadata(key_id, principal_arn=principal)
    except ProxyError as exc:
        return unverified(check, f"GetKeyMetadata {key_id} failed ({exc.kind}): {exc}; the key was NOT checked",
                          "check that the proxy answers GetKeyMetadata, then run preflight again",
                          external_key_id=key_id, kind=exc.kind)
    if resp.error_name == "KeyNotFoundException":
        return block(check, f"the target proxy does not know external key {key_id!r}: it may front a different key "
                     "manager, and the store's keys would be lost behind it", "point the target at a proxy for the "
                     "same external key manager", external_key_id=key_id)
    if not resp.ok:
        return _error_finding(check, f"GetKeyMetadata {key_id}", resp)
    status, usage = resp.body.get("keyStatus"), resp.body.get("keyUsage") or []
    if status != "ENABLED":
        return block(check, f"external key {key_id} is {status} in the key manager: verification would fail",
                     "enable the key in the external key manager", external_key_id=key_id, key_status=status)
    if not {"ENCRYPT", "DECRYPT"} <= set(usage):
        return block(check, f"external key {key_id} allows {usage}, not ENCRYPT and DECRYPT",
                     "use a key with both usages", external_key_id=key_id, key_usage=usage)
    return ok(check, f"external key {key_id} is ENABLED for ENCRYPT and DECRYPT", external_key_id=key_id)


def _target_credential(ctx: PreflightContext) -> tuple[str, str | None]:
    """(access key id, secret ref or None) of the credential the store will use after the update."""
    ks = ctx.keystore
    current = ctx.snapshot.config.access_key_id if ctx.snapshot else ""
    if ks.target.credential:
        return ks.target.credential.access_key_id or current, ks.target.credential.secret_ref
    if ks.original_credential:
        return ks.original_credential.access_key_id or current, ks.original_credential.secret_ref
    return current, None


def check_proxy(ctx: PreflightContext) -> list[Finding]:
    """The target proxy with the credential that will be in use after the update."""
    from migrator.preflight.keys import external_ids_to_verify

    t = ctx.keystore.target
    access_key_id, ref = _target_credential(ctx)
    if ref is None:
        return [unverified("proxy.credential", "the plan gives no secret for the proxy credential, so the target "
                           "proxy was NOT probed (authentication, path, health, latency, keys); KMS tests them only "
                           "after the disconnect", SECRET_REMEDY)]
    secret, why = resolve_secret_safely(ctx, ref)
    if secret is None:
        # The target credential is needed by UpdateCustomKeyStore itself; the original one only for this probe.
        if t.credential:
            return [block("proxy.credential", f"cannot resolve {ref}: {why}", "make the secret reference resolvable "
                          "where xksmigrate runs", ref=ref)]
        return [unverified("proxy.credential", f"cannot resolve {ref}: {why}; the target proxy was NOT probed",
                           "make the secret reference resolvable where xksmigrate runs (or fix it in the plan)",
                           ref=ref)]
    found = [ok("proxy.credential", f"secret {ref} resolved for access key id {access_key_id}")]
    tls = [f for f in ctx.cache.tls_findings or [] if f.check.startswith("tls.")]
    if tls and not tls_ok(tls):
        unreachable = any(f.check == "tls.reachable" and f.status != PASS for f in tls)
        why = ("it cannot be reached from here (see tls.reachable)" if unreachable
               else "its TLS did not pass (see tls.*)")
        found.append(unverified("proxy.reachable", f"the target proxy was NOT probed: {why}",
                                "fix the tls.* findings, or probe it from where it is reachable: "
                                + VANTAGE_REMEDY.format(host=host_of(t.uri_endpoint))))
        return found
    found += probe_proxy(ctx, uri_endpoint=t.uri_endpoint, uri_path=target_path(ctx), access_key_id=access_key_id,
                         secret=secret, key_ids=external_ids_to_verify(ctx), use_probe=True, prefix="proxy")
    return found


def check_rollback(ctx: PreflightContext) -> list[Finding]:
    """The recorded configuration must still work, and the run must be able to put it back."""
    ks = ctx.keystore
    if ctx.snapshot is None:
        return []
    original = ctx.snapshot.config
    found: list[Finding] = []
    old_secret: SecretValue | None = None
    if ks.target.credential:
        if ks.original_credential is None:
            found.append(_no_rollback(ctx, "the credential changes and the plan gives no original_credential: "
                                      "KMS never returns the secret, so rollback could not restore it"))
        else:
            old_secret, why = resolve_secret_safely(ctx, ks.original_credential.secret_ref)
            if old_secret is None:
                found.append(_no_rollback(ctx, f"the original secret {ks.original_credential.secret_ref} cannot be "
                                          f"resolved ({why}): rollback could not restore the credential"))
            else:
                found.append(ok("rollback.original_secret", f"original secret {ks.original_credential.secret_ref} "
                                "resolved"))
    else:
        found.append(ok("rollback.original_secret", "the credential does not change: rollback needs no secret"))
        if ks.original_credential:
            old_secret, why = resolve_secret_safely(ctx, ks.original_credential.secret_ref)
            if old_secret is None:
                found.append(unverified("rollback.proxy.credential", f"cannot resolve "
                                        f"{ks.original_credential.secret_ref} ({why}): the original proxy was NOT "
                                        "probed with a signed request", "make the secret reference resolvable where "
                                        "xksmigrate runs", ref=ks.original_credential.secret_ref))
        else:
            found.append(unverified("rollback.proxy.credential", "the plan gives no current proxy secret, so the "
                                    "original proxy (the rollback's) was NOT probed with a signed request "
                                    "(authentication, health, latency)", SECRET_REMEDY))

    endpoint, path = original.uri_endpoint, original.uri_path or "/kms/xks/v1"
    if not endpoint:
        return found
    private = original.connectivity == VPC
    tls = probe_tls(ctx, endpoint, private=private, use_probe=False, prefix="rollback.tls")
    found += [_soften(ctx, f) for f in tls]  # softened here: tls_ok below judges the raw findings
    if old_secret is not None and tls_ok(tls):
        access = (ks.original_credential.access_key_id if ks.original_credential else "") or original.access_key_id
        found += probe_proxy(ctx, uri_endpoint=endpoint, uri_path=path, access_key_id=access, secret=old_secret,
                             key_ids=[], use_probe=False, prefix="rollback.proxy")
    elif old_secret is not None:
        found.append(unverified("rollback.proxy.reachable", "the original proxy was NOT probed: its TLS did not pass "
                                "or it cannot be reached from here (see rollback.tls.*)", "fix the rollback.tls.* "
                                "findings, or probe it from where it is reachable: "
                                + VANTAGE_REMEDY.format(host=host_of(endpoint))))
    return [f if f.check.startswith("rollback.tls.") or f.check == "rollback.original_secret" else _soften(ctx, f)
            for f in found]


def _no_rollback(ctx: PreflightContext, message: str) -> Finding:
    if ctx.keystore.accept_no_rollback:
        return warn("rollback.original_secret", message + " (accepted: accept_no_rollback = true)")
    return block("rollback.original_secret", message, "add [keystores.original_credential] secret = \"env:...\" "
                 "to the plan, or set accept_no_rollback = true to run without a way back")


def _soften(ctx: PreflightContext, f: Finding) -> Finding:
    """A broken original configuration blocks (rollback would fail), unless the operator accepted no rollback:
    then neither a broken nor an unchecked way back holds the run."""
    if f.status in (BLOCK, UNVERIFIED) and ctx.keystore.accept_no_rollback:
        return Finding(f.check, WARN, f.message + " (accepted: accept_no_rollback = true)", f.remedy, f.detail)
    if f.status == BLOCK:
        return Finding(f.check, BLOCK, "rollback target: " + f.message, f.remedy, f.detail)
    return f
