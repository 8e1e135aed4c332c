"""An independent AWS Signature Version 4 *verifier* for the simulated XKS proxy.

The rehearsal must catch signing bugs, so the proxy checks signatures with its own code, written from
the SigV4 rules, never with botocore (which would then agree with itself). botocore and curl are the
independent signers in the tests. Every failure raises `SigV4Error` with a reason for the proxy log;
on the wire the answer is always 401 AuthenticationFailedException, as a real proxy gives nothing away.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "kms-xks-proxy"
MAX_SKEW_SECONDS = 300.0  # the spec: requests more than 5 minutes in the past or future SHOULD fail
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class SigV4Error(Exception):
    """Authentication failed; `reason` is for the log only. `access_key_id` is set when it was parsed."""

    def __init__(self, reason: str, access_key_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.access_key_id = access_key_id


@dataclass(frozen=True)
class SigV4Result:
    """Who signed the request, and under which scope."""

    access_key_id: str
    date: str  # yyyymmdd of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    amz_date: str


@dataclass(frozen=True)
class _Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> _Authorization:
    """Split `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error(f"unsupported authorization scheme {algorithm[:32]!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, field_value = part.strip().partition("=")
        if not sep or name in fields:
            raise SigV4Error("malformed Authorization header")
        fields[name] = field_value.strip()
    missing = {"Credential", "SignedHeaders", "Signature"} - fields.keys()
    if missing:
        raise SigV4Error(f"Authorization header lacks {', '.join(sorted(missing))}")
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise SigV4Error("malformed credential scope")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if not all(signed) or list(signed) != sorted(set(signed)) or any(h != h.lower() for h in signed):
        raise SigV4Error("SignedHeaders must be lowercase, sorted and unique", scope[0])
    return _Authorization(scope[0], scope[1], scope[2], scope[3], scope[4], signed, fields["Signature"])


def canonical_uri(path: str) -> str:
    """The URI as botocore signs it for non-S3 services: dot segments and empty segments dropped, then
    percent-encoded once more (so an already encoded path is encoded twice, as AWS expects)."""
    if not path:
        return "/"
    segments = [s for s in path.split("/") if s and s != "."]
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    normalized = ("/" if path.startswith("/") else "") + "/".join(out) + ("/" if path.endswith("/") and out else "")
    return quote(normalized or "/", safe="/~")


def canonical_query(query: str) -> str:
    """Sorted, RFC 3986-encoded `name=value` pairs (the XKS API sends none, but be exact anyway)."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _header_values(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(" ".join(str(value).split()))
    return values


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _amz_epoch(amz_date: str) -> float:
    return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))


def verify_request(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    credentials: Iterable[tuple[str, str]],
    region: str,
    *,
    service: str = SERVICE,
    now: float | None = None,
    max_skew: float = MAX_SKEW_SECONDS,
) -> SigV4Result:
    """Check one request's SigV4 signature; return who signed it or raise SigV4Error.

    `target` is the raw request target (path and optional query), `headers` every (name, value) pair as
    received (duplicates allowed), `credentials` the (access key id, secret) pairs currently accepted
    (several at once, for rotation), `now` the verifier's clock in epoch seconds.
    """
    values = _header_values(headers)
    auth_values = values.get("authorization", [])
    if len(auth_values) != 1:
        raise SigV4Error("missing Authorization header" if not auth_values else "several Authorization headers")
    auth = parse_authorization(auth_values[0])
    akid = auth.access_key_id

    if auth.service != service:
        raise SigV4Error(f"credential scope service is {auth.service!r}, expected {service!r}", akid)
    if auth.region != region:
        raise SigV4Error(f"credential scope region is {auth.region!r}, expected {region!r}", akid)
    if auth.terminator != "aws4_request":
        raise SigV4Error("credential scope does not end with aws4_request", akid)
    for required in ("host", "x-amz-date"):
        if required not in auth.signed_headers:
            raise SigV4Error(f"{required} is not a signed header", akid)
    for name in auth.signed_headers:
        if name not in values:
            raise SigV4Error(f"signed header {name} is absent from the request", akid)

    amz_date = values["x-amz-date"][0]
    if len(values["x-amz-date"]) != 1 or not _AMZ_DATE.match(amz_date):
        raise SigV4Error("X-Amz-Date is not one yyyymmddThhmmssZ value", akid)
    if amz_date[:8] != auth.date:
        raise SigV4Error("credential scope date differs from X-Amz-Date", akid)
    try:
        skew = _amz_epoch(amz_date) - (time.time() if now is None else now)
    except ValueError:
        raise SigV4Error("X-Amz-Date is not a valid time", akid) from None
    if abs(skew) > max_skew:
        raise SigV4Error(f"X-Amz-Date is {skew:+.0f}s from the proxy clock (limit {max_skew:.0f}s)", akid)

    payload_hash = hashlib.sha256(body).hexdigest()
    declared = values.get("x-amz-content-sha256")
    if declared is not None and declared != [payload_hash]:
        raise SigV4Error("x-amz-content-sha256 does not match the body", akid)

    secrets = [secret for key_id, secret in credentials if hmac.compare_digest(key_id.encode(), akid.encode())]
    if not secrets:
        raise SigV4Error("unknown access key id", akid)

    split = urlsplit(target)
    canonical_headers = "".join(f"{name}:{','.join(values[name])}\n" for name in auth.signed_headers)
    canonical_request = "\n".join([
        method.upper(), canonical_uri(split.path), canonical_query(split.query),
        canonical_headers, ";".join(auth.signed_headers), payload_hash,
    ])
    scope = f"{auth.date}/{auth.region}/{auth.service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    if not _HEX64.match(auth.signature):
        raise SigV4Error("signature is not 64 lowercase hex digits", akid)
    matched = False
    for secret in secrets:  # no early exit: the time taken does not depend on which secret matched
        key = _signing_key(secret, auth.date, auth.region, auth.service)
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        matched |= hmac.compare_digest(expected, auth.signature)
    if not matched:
        raise SigV4Error("signature does not match", akid)
    return SigV4Result(akid, auth.date, auth.region, auth.service, auth.signed_headers, amz_date)
