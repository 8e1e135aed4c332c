"""What capture learns from a proxy endpoint itself: the TLS chain's shape, and (with a secret) its answers.

Read-only, like preflight: one TLS handshake (the chain as served, the highest version offered), then, when the
plan gives a secret for the store's credential, GetHealthStatus five times (health, median latency) and
GetKeyMetadata per external key. The chain is judged as KMS would judge it (preflight.tls.judge_chain) only to
name its shape (trusted, via an intermediate, missing its intermediate, untrusted, self-signed, expired); the twin's
CA re-issues a look-alike of that shape. Nothing here keeps the secret: it signs requests and is dropped.
"""

from __future__ import annotations

import datetime as dt
import ssl
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from migrator.aws.secret_refs import SecretValue
from migrator.aws.xks_client import ProxyError, XksProxyClient, parse_hostport
from migrator.preflight.proxy import LATENCY_SAMPLES, PROBE_TIMEOUT
from migrator.preflight.tls import (
    TlsProbeError,
    cert_names,
    fetch_chain,
    judge_chain,
    pem_to_der,
    system_roots,
)

Resolver = Callable[[str], str]


@dataclass
class Chain:
    """The served certificate chain's shape (no key material, nothing the twin could impersonate with)."""

    kind: str  # one of the rehearsal world's certificate kinds
    names: list[str]  # the leaf's SANs (else its CN)
    days_valid: int  # days until the soonest expiry in the chain (1 when expired)
    served: int  # certificates sent
    subjects: list[str] = field(default_factory=list)
    key_type: str = ""


@dataclass
class KeyAnswer:
    found: bool
    status: str = "ENABLED"
    usage: list[str] = field(default_factory=lambda: ["ENCRYPT", "DECRYPT"])


@dataclass
class EndpointProbe:
    """One endpoint host as this machine reached it."""

    host: str
    reach: str  # ok | dns | connect | timeout | handshake_timeout | version | tls
    why: str = ""
    tls_version: str = ""  # "1.2" | "1.3" | "1.1" (below 1.2: what the refusal implies)
    chain: Chain | None = None
    leaf_sha256: str = ""
    probed: bool = False  # signed calls were made
    not_probed_why: str = ""
    health: str = ""  # ACTIVE | DEGRADED | UNAVAILABLE
    error_name: str = ""  # GetHealthStatus's errorName (ThrottlingException, ...)
    auth_failed: bool = False
    latency_ms: float | None = None
    keys: dict[str, KeyAnswer] = field(default_factory=dict)


def _chain_shape(host: str, ders: list[bytes], extra_roots_pem: Sequence[bytes]) -> tuple[Chain, str]:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    now = dt.datetime.now(dt.UTC)
    found = {f.check: f for f in judge_chain(host, ders, now=now, extra_roots_der=pem_to_der(extra_roots_pem),
                                             system_roots_der=system_roots())}
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    leaf = certs[0]
    cns, sans = cert_names(leaf)
    trusted = found.get("tls.trusted_root")
    if leaf.issuer == leaf.subject:
        kind = "self_signed"
    elif trusted is not None and trusted.status == "pass":
        kind = "via_intermediate" if len(certs) > 1 else "valid"
    elif trusted is not None and trusted.status == "unverified":
        kind = "valid"  # named like a KMS root this machine lacks: the twin's is trusted (listed as unseen)
    elif "served" in (trusted.detail if trusted else {}):
        kind = "missing_intermediate" if len(certs) == 1 else "untrusted_ca"
    else:
        kind = "untrusted_ca"
    soonest = min(c.not_valid_after_utc for c in certs)
    days = (soonest - now).total_seconds() / 86400
    if days <= 0 and kind not in ("self_signed", "untrusted_ca"):
        kind = "expired"
    public = leaf.public_key()
    key_type = ("EC " + public.curve.name if isinstance(public, ec.EllipticCurvePublicKey)
                else f"RSA {public.key_size}" if isinstance(public, rsa.RSAPublicKey) else type(public).__name__)
    chain = Chain(kind=kind, names=sans or cns, days_valid=max(1, min(36500, int(days) + 1)), served=len(certs),
                  subjects=[c.subject.rfc4514_string() for c in certs], key_type=key_type)
    return chain, hashlib.sha256(ders[0]).hexdigest()


def _dial(host: str, resolve: Resolver | None) -> tuple[str, int] | None:
    if resolve is None:
        return host, 443
    try:
        address = resolve(host)
    except Exception:  # a resolver that does not know the host: not reachable from here
        return None
    return parse_hostport(address) if address else (host, 443)


def probe_endpoint(uri_endpoint: str, *, resolve: Resolver | None, extra_roots_pem: Sequence[bytes]) -> EndpointProbe:
    """The TLS handshake and the chain's shape; `sign` adds the proxy's answers."""
    host = uri_endpoint.removeprefix("https://").split("/")[0].split(":")[0]
    dial = _dial(host, resolve)
    if dial is None:
        return EndpointProbe(host, "dns", f"{host} does not resolve from here")
    try:
        seen = fetch_chain(host, dial)
    except TlsProbeError as exc:
        probe = EndpointProbe(host, exc.kind, str(exc))
        if exc.kind == "version":
            probe.tls_version = "1.1"
        return probe
    chain, leaf_fp = _chain_shape(host, seen.chain, extra_roots_pem) if seen.chain else (None, "")
    return EndpointProbe(host, "ok", tls_version=seen.version.removeprefix("TLSv"), chain=chain, leaf_sha256=leaf_fp)


def sign_probe(probe: EndpointProbe, *, uri_endpoint: str, uri_path: str, region: str, access_key_id: str,
               secret: SecretValue, external_key_ids: Sequence[str], principal: str, resolve: Resolver | None,
               extra_roots_pem: Sequence[bytes]) -> None:
    """GetHealthStatus (health, latency) and GetKeyMetadata per key, as preflight makes them."""
    if probe.reach != "ok":
        probe.not_probed_why = f"not reached ({probe.reach})"
        return
    context = ssl.create_default_context()
    for pem in extra_roots_pem:
        context.load_verify_locations(cadata=pem.decode("ascii", "replace"))
    dial = _dial(probe.host, resolve)
    address = f"{dial[0]}:{dial[1]}" if dial else None
    client = XksProxyClient(uri_endpoint, uri_path, region, access_key_id, secret, ssl_context=context,
                            connect_to=address, timeout=PROBE_TIMEOUT)
    samples: list[float] = []
    try:
        for _ in range(LATENCY_SAMPLES):
            resp = client.health()
            if not resp.ok:
                probe.probed = True
                probe.error_name = resp.error_name or f"HTTP {resp.status}"
                probe.auth_failed = resp.error_name == "AuthenticationFailedException"
                return
            samples.append(resp.latency_ms)
        probe.probed = True
        probe.latency_ms = statistics.median(samples)
        fleet = resp.body.get("ekmFleetDetails") or []
        states = [str(e.get("healthStatus", "")) for e in fleet if isinstance(e, dict)]
        probe.health = ("UNAVAILABLE" if states and all(s == "UNAVAILABLE" for s in states) else
                        "DEGRADED" if any(s in ("UNAVAILABLE", "DEGRADED") for s in states) else "ACTIVE")
        for key_id in external_key_ids:
            answer = client.key_metadata(key_id, principal_arn=principal)
            if answer.error_name == "KeyNotFoundException":
                probe.keys[key_id] = KeyAnswer(found=False)
            elif answer.ok:
                probe.keys[key_id] = KeyAnswer(True, str(answer.body.get("keyStatus", "ENABLED")),
                                               [str(u) for u in answer.body.get("keyUsage") or []])
    except ProxyError as exc:
        probe.not_probed_why = f"signed call failed ({exc.kind}): {exc}"
