"""TLS preflight: the proxy's certificate as KMS will judge it (facts §5, §7.1, XKS_PROXY_INVALID_TLS_CONFIGURATION).

KMS trusts only 130 roots (trusted_roots.py), not the browser/OS store, so the chain is judged by
the SHA-256 fingerprint of the root it ends in. The handshake accepts any certificate on purpose
(verification would stop at the first problem); every judgement is then made here, on the DER
chain the server sent, with `cryptography`: chain path and signatures, root fingerprint, host name
(CN or SAN, wildcards), validity dates, TLS version.

Where the root is not sent by the server (usual), it is looked up among the extra roots and the
local OS store by subject and signature; if it is nowhere at hand, a name match against the 130
owners is the best available and is reported as `unverified` (not a pass): the fingerprint was not checked.

Fail closed: an endpoint that refuses the connection, resets it, fails or refuses the handshake, or whose
public name does not resolve blocks (KMS could not connect either). Only what this machine cannot judge is
`unverified`: a private DNS name with no vantage point (no probe, no --resolve), or a TCP connect that times
out on the way out of here (our egress firewall and KMS's path differ). Timeouts: 5 s for the TCP connect
and again for the handshake; a proxy that accepts TCP but does not finish a handshake in 5 s is far beyond
KMS's 250 ms request timeout, so that blocks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from migrator.aws.xks_client import parse_hostport
from migrator.plan import VPC
from migrator.preflight.base import (
    BLOCK,
    PASS,
    Finding,
    PreflightContext,
    address_for,
    block,
    host_of,
    ok,
    unverified,
    warn,
)
from migrator.preflight.trusted_roots import TrustedRoot, root_by_name, trusted_fingerprints

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

EXPIRY_WARN_DAYS = 30
KMS_TLS12_CIPHERS = {"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"}
_VERSION_REASONS = {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "WRONG_VERSION_NUMBER",
                    "NO_PROTOCOLS_AVAILABLE", "TLSV1_ALERT_INSUFFICIENT_SECURITY"}


@dataclass
class TlsObservation:
    version: str
    cipher: str
    chain: list[bytes] = field(default_factory=list)  # DER as served, leaf first


class TlsProbeError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # dns | connect | timeout (TCP) | handshake_timeout | version | tls


# Seconds for the TCP connect, then for the handshake (see the module doc).
CONNECT_TIMEOUT = 5.0
VANTAGE_REMEDY = ("run `xksmigrate plan` from inside the VPC, or reach {host} through a port forward and say so: "
                  "probe = \"ip:port\" for the store in the plan, or --resolve {host}=IP:PORT "
                  "(RUNBOOK.md#vantage-point)")


def fetch_chain(host: str, dial: tuple[str, int], timeout: float = CONNECT_TIMEOUT) -> TlsObservation:
    """Handshake with `host` as SNI over a socket to `dial`; TLS 1.2 minimum, certificate not verified here."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        raw = socket.create_connection(dial, timeout=timeout)
    except socket.gaierror as exc:
        raise TlsProbeError("dns", f"cannot resolve {dial[0]} ({exc.strerror or exc})") from None
    except TimeoutError:
        raise TlsProbeError("timeout", f"no TCP answer from {dial[0]}:{dial[1]} within {timeout:g}s") from None
    except OSError as exc:
        raise TlsProbeError("connect", f"cannot connect to {dial[0]}:{dial[1]} ({exc.strerror or exc})") from None
    try:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            chain = _served_chain(tls)
            cipher = (tls.cipher() or ("", "", 0))[0]
            return TlsObservation(version=tls.version() or "", cipher=cipher, chain=chain)
    except ssl.SSLError as exc:
        if exc.reason in _VERSION_REASONS:
            raise TlsProbeError("version", f"no TLS 1.2 or newer handshake with {host} ({exc.reason})") from None
        raise TlsProbeError("tls", f"TLS handshake with {host} failed ({exc.reason or exc})") from None
    except TimeoutError:
        raise TlsProbeError("handshake_timeout", f"{dial[0]}:{dial[1]} accepted TCP but the TLS handshake with "
                            f"{host} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise TlsProbeError("connect", f"connection to {host} dropped during TLS ({exc})") from None
    finally:
        raw.close()


def _served_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The certificates the server sent. Python 3.11 exposes them only privately (public in 3.13)."""
    sslobj = getattr(tls, "_sslobj", None)
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is not None:
        try:
            certs = getter() or []
            return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in certs]  # type: ignore[attr-defined]
        except Exception:  # fall back to the leaf alone
            pass
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


@lru_cache(maxsize=1)
def system_roots() -> tuple[bytes, ...]:
    """DER roots of the local OS store (used only to find a root the server did not send)."""
    try:
        return tuple(ssl.create_default_context().get_ca_certs(binary_form=True))
    except Exception:
        return ()


@lru_cache(maxsize=4)
def _parse_lenient(ders: tuple[bytes, ...]) -> tuple[Certificate, ...]:
    """Parse store certificates, skipping any this `cryptography` refuses (some OS roots break RFC 5280)."""
    import warnings

    from cryptography import x509

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for der in ders:
            try:
                out.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
    return tuple(out)


def pem_to_der(pems: Sequence[bytes]) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    out: list[bytes] = []
    for pem in pems:
        for cert in x509.load_pem_x509_certificates(pem):
            out.append(cert.public_bytes(Encoding.DER))
    return out


# -- pure judgement -----------------------------------------------------------------------------------

def hostname_matches(host: str, names: list[str]) -> bool:
    """RFC 6125 style: exact, or `*.rest` matching exactly one left-most label."""
    host = host.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "*" not in name[2:]:
            head, _, rest = host.partition(".")
            if head and rest == name[2:] and rest.count(".") >= 1:
                return True
    return False


def cert_names(cert: Certificate) -> tuple[list[str], list[str]]:
    """(CN values, SAN DNS names)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = list(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = []
    return cns, sans


def _issued_by(cert: Certificate, issuer: Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False


def _name(cert: Certificate) -> str:
    cns, _ = cert_names(cert)
    return cns[0] if cns else cert.subject.rfc4514_string()


def judge_chain(host: str, chain_der: list[bytes], *, now: dt.datetime | None = None,
                extra_roots_der: Sequence[bytes] = (), system_roots_der: Sequence[bytes] = (),
                trusted: Mapping[str, TrustedRoot] | None = None, prefix: str = "tls") -> list[Finding]:
    """Judge a served chain the way KMS will: trusted root by fingerprint, host name, dates."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    now = now or dt.datetime.now(dt.UTC)
    trusted = trusted_fingerprints() if trusted is None else trusted
    if not chain_der:
        return [block(f"{prefix}.trusted_root", f"{host} sent no certificate")]
    served = [x509.load_der_x509_certificate(d) for d in chain_der]
    extras = [x509.load_der_x509_certificate(d) for d in extra_roots_der]
    extra_fps = {hashlib.sha256(d).hexdigest() for d in extra_roots_der}
    pool = served[1:] + extras + list(_parse_lenient(tuple(system_roots_der)))

    def fp(cert: Certificate) -> str:
        return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()

    path, root = [served[0]], None
    while len(path) < 10:
        cur = path[-1]
        if fp(cur) in trusted or fp(cur) in extra_fps or (cur.issuer == cur.subject and _issued_by(cur, cur)):
            root = cur
            break
        candidates = [c for c in pool if c not in path and _issued_by(cur, c)]
        if not candidates:
            break
        # Prefer a root KMS (or the operator) trusts, as a path builder with that trust store would.
        candidates.sort(key=lambda c: (fp(c) not in trusted and fp(c) not in extra_fps, c.issuer != c.subject))
        path.append(candidates[0])

    findings: list[Finding] = []
    detail = {"chain": [_name(c) for c in path]}
    if root is not None:
        rfp = fp(root)
        if rfp in trusted:
            findings.append(ok(f"{prefix}.trusted_root", f"chain ends in {trusted[rfp].alias}, one of the roots "
                               "AWS KMS trusts for XKS proxies", root_sha256=rfp, **detail))
        elif rfp in extra_fps:
            findings.append(ok(f"{prefix}.trusted_root", f"chain ends in the configured extra root {_name(root)} "
                               "(not one of KMS's 130: valid for rehearsals only)", root_sha256=rfp, **detail))
        else:
            findings.append(block(f"{prefix}.trusted_root", f"chain ends in {_name(root)!r} (sha256 {rfp[:16]}...), "
                                  "which is not one of the 130 root CAs AWS KMS trusts for XKS proxies (even if "
                                  "browsers trust it)", "reissue the proxy certificate from a CA in "
                                  "https://github.com/aws/aws-kms-xksproxy-api-spec/blob/main/TrustedCertificateAuthorities",
                                  root_sha256=rfp, **detail))
    else:
        last = path[-1]
        icn = [str(a.value) for a in last.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)] or \
              [str(a.value) for a in last.issuer.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
        iorg = [str(a.value) for a in last.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        named = root_by_name(icn[0] if icn else "", iorg[0] if iorg else "")
        if named is not None:
            findings.append(unverified(f"{prefix}.trusted_root", f"chain ends at an issuer named like the "
                                       f"KMS-trusted root {named.alias}, but that root is not available here, so "
                                       "its fingerprint was NOT checked", "add the root's PEM to the plan's "
                                       "extra_trusted_roots (or the OS trust store) so its SHA-256 can be compared "
                                       "with the TrustedCertificateAuthorities list",
                                       issuer=last.issuer.rfc4514_string(), **detail))
        else:
            # Either a missing intermediate (the server sent the leaf without the CA that signed it: KMS's
            # "incorrect certificate chaining") or a CA KMS does not know; both fail KMS's connect.
            findings.append(block(f"{prefix}.trusted_root", f"chain is incomplete or untrusted: the server did not "
                                  f"send the certificate of the issuer {last.issuer.rfc4514_string()!r} (a missing "
                                  "intermediate?), and it is not among KMS's 130 trusted roots",
                                  "serve the full chain (leaf + intermediates) from a KMS-trusted CA",
                                  issuer=last.issuer.rfc4514_string(), served=len(chain_der), **detail))

    cns, sans = cert_names(served[0])
    if hostname_matches(host, cns + sans):
        findings.append(ok(f"{prefix}.hostname", f"certificate matches {host}", names=sans or cns))
    else:
        findings.append(block(f"{prefix}.hostname", f"certificate is for {', '.join(sans or cns) or '(no names)'}, "
                              f"not {host}", f"reissue the certificate with {host} (or a wildcard for its parent) in "
                              "the SAN and CN", names=sans or cns))
    findings.append(_expiry(path, now, prefix))
    return findings


def _expiry(path: Sequence[Certificate], now: dt.datetime, prefix: str) -> Finding:
    soonest = min(path, key=lambda c: c.not_valid_after_utc)
    leaf = path[0]
    for cert in path:
        if cert.not_valid_after_utc <= now:
            return block(f"{prefix}.expiry", f"certificate {_name(cert)!r} expired on "
                         f"{cert.not_valid_after_utc:%Y-%m-%d}", "renew the proxy certificate",
                         not_after=cert.not_valid_after_utc.isoformat())
        if cert.not_valid_before_utc > now:
            return block(f"{prefix}.expiry", f"certificate {_name(cert)!r} is not valid before "
                         f"{cert.not_valid_before_utc:%Y-%m-%d}", "check the certificate dates and the clocks",
                         not_before=cert.not_valid_before_utc.isoformat())
    days = (soonest.not_valid_after_utc - now).total_seconds() / 86400
    if days < EXPIRY_WARN_DAYS:
        return warn(f"{prefix}.expiry", f"certificate {_name(soonest)!r} expires in {days:.0f} days "
                    f"({soonest.not_valid_after_utc:%Y-%m-%d})", "renew the proxy certificate before migrating",
                    days_left=round(days, 1))
    return ok(f"{prefix}.expiry", f"certificate valid until {leaf.not_valid_after_utc:%Y-%m-%d} "
              f"({days:.0f} days for the soonest in the chain)", days_left=round(days, 1))


# -- checks ----------------------------------------------------------------------------------------------

def probe_tls(ctx: PreflightContext, uri_endpoint: str, *, private: bool, use_probe: bool,
              prefix: str = "tls") -> list[Finding]:
    """Reach `uri_endpoint` from here and judge its TLS; not reached -> one block, or one unverified finding
    when only this machine's position is in the way (module doc)."""
    host = host_of(uri_endpoint)
    address, how = address_for(ctx, host, use_probe=use_probe)
    if address == "":
        why = f"the {how.split(' ')[0]} cannot map {host} to an address"
        return [_unreachable(prefix, host, private=private, kind="dns", why=why, vantage=True, mapped=False)]
    dial = parse_hostport(address) if address else (host, 443)
    # A probe or a --resolve entry names another address: a vantage point chosen to reach this host.
    vantage = bool(address) and dial[0].lower().rstrip(".") != host.lower().rstrip(".")
    try:
        seen = fetch_chain(host, dial)
    except TlsProbeError as exc:
        if exc.kind == "version":
            return [block(f"{prefix}.version", f"{host}: {exc}; KMS needs TLS 1.2 or 1.3",
                          "enable TLS 1.2/1.3 on the proxy (KMS never offers TLS 1.0/1.1)")]
        if exc.kind == "tls":
            return [block(f"{prefix}.handshake", f"{host}: {exc}", "check the proxy's TLS configuration")]
        return [_unreachable(prefix, host, private=private, kind=exc.kind, why=str(exc), vantage=vantage,
                             mapped=True)]
    extras = pem_to_der(ctx.extra_roots_pem)
    findings = [ok(f"{prefix}.reachable", f"reached {host} via {how} ({dial[0]}:{dial[1]})")]
    if seen.version in ("TLSv1.2", "TLSv1.3"):
        if seen.version == "TLSv1.2" and seen.cipher not in KMS_TLS12_CIPHERS:
            findings.append(warn(f"{prefix}.version", f"{host} negotiated TLS 1.2 with {seen.cipher}, not one of the "
                                 "suites KMS offers for TLS 1.2 (ECDHE with AES-256-GCM)",
                                 "enable ECDHE-RSA/ECDSA-AES256-GCM-SHA384 or TLS 1.3", cipher=seen.cipher))
        else:
            findings.append(ok(f"{prefix}.version", f"{seen.version} ({seen.cipher})", version=seen.version))
    else:
        findings.append(block(f"{prefix}.version", f"{host} negotiated {seen.version or 'an unknown version'}",
                              "enable TLS 1.2/1.3 on the proxy"))
    findings += judge_chain(host, seen.chain, extra_roots_der=extras, system_roots_der=system_roots(), prefix=prefix)
    return findings


def _unreachable(prefix: str, host: str, *, private: bool, kind: str, why: str, vantage: bool,
                 mapped: bool) -> Finding:
    """Not reached: block when KMS could not connect either; unverified when only our position is in the way.

    `vantage`: the address came from a probe or a resolver (not plain DNS); `mapped`: it named an address at all
    (False: the vantage point cannot map the host)."""
    check = f"{prefix}.reachable"
    detail: dict[str, object] = {"host": host, "kind": kind, "private": private}
    if private and (not mapped or (not vantage and kind in ("dns", "timeout"))):
        # A private DNS name resolves only inside its VPC: from here it says nothing about KMS's path.
        return unverified(check, f"{host} is a private DNS name that cannot be reached from here ({why}): its "
                          "certificate and the proxy were NOT checked; KMS checks them only at connect time, after "
                          "the disconnect", VANTAGE_REMEDY.format(host=host), **detail)
    if not mapped:  # a public name the vantage point does not know: it does not resolve from there
        return block(check, f"{host} does not resolve from this vantage point ({why}): KMS must resolve it from "
                     "the internet", f"publish a public DNS record for {host}, or fix uri_endpoint in the plan",
                     **detail)
    if kind == "timeout" and not vantage:
        # A SYN that times out may be our own egress firewall; a refusal or a reset is an answer.
        return unverified(check, f"no TCP answer from {host}:443 from here ({why}): not known whether KMS can "
                          "reach it; its certificate and the proxy were NOT checked",
                          "check from a machine whose egress allows TCP 443 to the proxy, or give a probe "
                          f"address / --resolve {host}=IP:PORT (RUNBOOK.md#vantage-point)", **detail)
    if kind == "dns":
        return block(check, f"{host} does not resolve ({why}): KMS could not reach the proxy",
                     f"publish a DNS record for {host} (public for PUBLIC_ENDPOINT; the endpoint service's private "
                     "DNS name for VPC_ENDPOINT_SERVICE), or fix uri_endpoint / the probe address", **detail)
    return block(check, f"{host} cannot be reached ({why}): KMS's connect would fail (XKS_PROXY_NOT_REACHABLE)",
                 "start the proxy and let it accept TLS on 443 from KMS (security groups, NLB targets); if a probe or "
                 "--resolve address was given, check that it forwards to the proxy", **detail)


def check_tls(ctx: PreflightContext) -> list[Finding]:
    """The target endpoint's TLS."""
    t = ctx.keystore.target
    findings = probe_tls(ctx, t.uri_endpoint, private=t.connectivity == VPC, use_probe=True)
    ctx.cache.tls_findings = findings  # the proxy probe skips a target whose TLS already failed
    return findings


def tls_ok(findings: Sequence[Finding]) -> bool:
    return not any(f.status == BLOCK for f in findings) and any(f.check.endswith(".reachable") and f.status == PASS
                                                                 for f in findings)
