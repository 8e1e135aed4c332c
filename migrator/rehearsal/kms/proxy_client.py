"""The world-KMS side of the XKS proxy API: one HTTPS + SigV4 POST, classified the way KMS sees it.

KMS reaches a proxy at `https://<endpoint host>:443`; in the world every proxy listens on a loopback port,
so we connect to 127.0.0.1:<port> but present the endpoint host as SNI, check the certificate against it
(the world CA only) and send `Host: <endpoint host>` exactly as KMS would on port 443. The request is signed
with botocore's SigV4Auth (service `kms-xks-proxy`), so the proxy verifies a real, independent signature.

KMS gives up after 250 ms (real time, facts §7.5) and retries a network timeout once (§7.5, monitoring
page); we do the same, which also keeps a loaded CI machine from turning one slow handshake into a failure.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

KMS_PROXY_TIMEOUT = 0.25  # seconds, real time

# Failure kinds (how KMS classifies what happened on the wire)
OK = ""
UNREACHABLE = "unreachable"  # no route / no TCP / connection dropped before TLS completed
TLS = "tls"  # certificate not trusted, expired, wrong host, protocol mismatch
TIMEOUT = "timeout"  # no answer within 250 ms (twice)
HTTP_ERROR = "http_error"  # the proxy answered with an error status
MALFORMED = "malformed"  # 200 but not the JSON the API promises


@dataclass
class ProxyResult:
    """What one proxy call produced; `body` only on success, never logged (it may carry plaintext)."""

    failure: str = OK
    status: int = 0
    error_name: str = ""
    detail: str = ""
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure == OK


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to 127.0.0.1:port while using `host` for SNI and certificate checks."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__(host, 443, timeout=timeout, context=context)
        self._pinned_port = port
        self._tls_context = context

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self._pinned_port), self.timeout)
        try:
            self.sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def call_proxy(*, port: int, host: str, path: str, body: dict[str, Any], access_key_id: str, secret: str,
               region: str, context: ssl.SSLContext, timeout: float = KMS_PROXY_TIMEOUT,
               retry_timeout: bool = True) -> ProxyResult:
    """POST `body` to https://host<path> (really 127.0.0.1:port), signed as KMS signs, and classify."""
    result = _call_once(port, host, path, body, access_key_id, secret, region, context, timeout)
    if result.failure == TIMEOUT and retry_timeout:
        second = _call_once(port, host, path, body, access_key_id, secret, region, context, timeout)
        second.elapsed_ms += result.elapsed_ms
        return second
    return result


def _call_once(port: int, host: str, path: str, body: dict[str, Any], access_key_id: str, secret: str,
               region: str, context: ssl.SSLContext, timeout: float) -> ProxyResult:
    payload = json.dumps(body, separators=(",", ":")).encode()
    request = AWSRequest(method="POST", url=f"https://{host}{path}", data=payload,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(access_key_id, secret), "kms-xks-proxy", region).add_auth(request)
    started = time.monotonic()
    conn = _PinnedHTTPSConnection(host, port, context, timeout)
    try:
        try:
            conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host)  # what SigV4Auth signed (from the URL), as KMS sends it on 443
            for name, value in request.headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(payload)))
            conn.endheaders(payload)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
        except ssl.SSLCertVerificationError as exc:
            return _fail(TLS, f"certificate verification failed: {exc.verify_message}", started)
        except TimeoutError:
            return _fail(TIMEOUT, f"no response within {int(timeout * 1000)} ms", started)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError, http.client.RemoteDisconnected) as exc:
            return _fail(UNREACHABLE, f"connection closed: {type(exc).__name__}", started)
        except ssl.SSLError as exc:
            return _fail(TLS, f"TLS handshake failed: {exc.reason or exc}", started)
        except (OSError, http.client.HTTPException) as exc:
            return _fail(UNREACHABLE, f"cannot connect: {type(exc).__name__}", started)
    finally:
        conn.close()
    elapsed = (time.monotonic() - started) * 1000
    if elapsed > timeout * 1000:
        return ProxyResult(TIMEOUT, status, detail=f"answered after {elapsed:.0f} ms", elapsed_ms=elapsed)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    if status != 200:
        name = parsed.get("errorName", "") if isinstance(parsed, dict) else ""
        if not isinstance(name, str) or not name:
            return ProxyResult(MALFORMED, status, detail=f"HTTP {status} without an errorName", elapsed_ms=elapsed)
        return ProxyResult(HTTP_ERROR, status, error_name=name, detail=f"HTTP {status} {name}", elapsed_ms=elapsed)
    if not isinstance(parsed, dict):
        return ProxyResult(MALFORMED, status, detail="response is not a JSON object", elapsed_ms=elapsed)
    return ProxyResult(OK, status, body=parsed, elapsed_ms=elapsed)


def _fail(kind: str, detail: str, started: float) -> ProxyResult:
    return ProxyResult(kind, detail=detail, elapsed_ms=(time.monotonic() - started) * 1000)


def health_problem(body: dict[str, Any]) -> tuple[str, str]:
    """Check a GetHealthStatus answer: (failure kind, detail); ("", "") when usable.

    All key manager instances UNAVAILABLE counts as unreachable (facts §4.2); a reply missing the
    spec's required fields is one KMS "cannot interpret" (malformed).
    """
    fleet = body.get("ekmFleetDetails")
    required = ("xksProxyFleetSize", "xksProxyVendor", "xksProxyModel", "ekmVendor")
    if any(k not in body for k in required) or not isinstance(fleet, list) or not fleet:
        return MALFORMED, "GetHealthStatus response lacks required fields"
    states = [e.get("healthStatus") for e in fleet if isinstance(e, dict)]
    if len(states) != len(fleet) or any(s not in ("ACTIVE", "DEGRADED", "UNAVAILABLE") for s in states):
        return MALFORMED, "GetHealthStatus response has an invalid ekmFleetDetails entry"
    if all(s == "UNAVAILABLE" for s in states):
        return UNREACHABLE, "all external key manager instances are UNAVAILABLE"
    return OK, ""
