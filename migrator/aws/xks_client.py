"""XKS proxy client for preflight: SigV4-signed GetHealthStatus and GetKeyMetadata.

Why a client of our own: KMS tests the proxy only when it updates or connects the store, i.e. after
the disruptive disconnect. Calling the proxy the way KMS does (POST JSON over HTTPS, SigV4 with
botocore's signer, service `kms-xks-proxy`, the KMS Region; spec §7) finds a wrong credential, a
wrong URI path, an unhealthy key manager or a missing key before anything changes.

`connect_to` dials another address ("ip:port") while keeping the endpoint host for SNI, the Host
header and the signature, so a rehearsal world on loopback or a `probe` address is reached exactly
as KMS would reach the real name. The secret is revealed only inside `_sign`; it never appears in a
repr, an exception or a response object.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from migrator.aws.secret_refs import SecretValue

SERVICE = "kms-xks-proxy"


class ProxyError(Exception):
    """The proxy could not be reached or spoke no HTTP (no secret in the message, by construction)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "dns" | "connect" | "tls" | "timeout" | "protocol"


@dataclass
class ProxyResponse:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    error_name: str = ""  # the spec's errorName ("" on success or when the body has none)
    latency_ms: float = 0.0
    malformed: bool = False  # body was not a JSON object

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.error_name and not self.malformed


class _DialingHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `host` (SNI, Host, certificate name) over a socket dialled to another address."""

    def __init__(self, host: str, port: int, dial: tuple[str, int], context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self._dial = dial
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection(self._dial, self.timeout)
        # Headers and body leave in separate writes: with Nagle and the peer's delayed ACK that is a 40 ms stall
        # per request, which would be measured as the proxy's latency.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def parse_hostport(value: str, default_port: int = 443) -> tuple[str, int]:
    """'1.2.3.4:8443' / 'host' / '[::1]:443' -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


class XksProxyClient:
    """Calls one proxy the way KMS does; read-only operations only."""

    def __init__(self, base_url: str, uri_path: str, region: str, access_key_id: str, secret: SecretValue, *,
                 ssl_context: ssl.SSLContext | None = None, connect_to: str | None = None, timeout: float = 2.0):
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"proxy endpoint must be https://host, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.base_url = f"https://{parts.netloc}"
        self.uri_path = "/" + uri_path.strip("/")
        self.region = region
        self.access_key_id = access_key_id
        self._secret = secret
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.connect_to = connect_to
        self.timeout = timeout

    def __repr__(self) -> str:
        return (f"XksProxyClient(base_url={self.base_url!r}, uri_path={self.uri_path!r}, region={self.region!r}, "
                f"access_key_id={self.access_key_id!r}, secret={self._secret!r}, connect_to={self.connect_to!r})")

    # -- operations -------------------------------------------------------------------------------

    def health(self, kms_operation: str = "KmsHealthCheck") -> ProxyResponse:
        """GetHealthStatus (spec: POST <path>/health)."""
        body = {"requestMetadata": {"kmsRequestId": str(uuid.uuid4()), "kmsOperation": kms_operation}}
        return self._post("/health", body)

    def key_metadata(self, external_key_id: str, principal_arn: str = "AWS Internal",
                     kms_operation: str = "CreateKey") -> ProxyResponse:
        """GetKeyMetadata (spec: POST <path>/keys/<id>/metadata). KMS sends it for CreateKey, the only
        documented kmsOperation, so a proxy with secondary authorization sees a familiar request."""
        body = {"requestMetadata": {"awsPrincipalArn": principal_arn, "kmsOperation": kms_operation,
                                    "kmsRequestId": str(uuid.uuid4())}}
        return self._post(f"/keys/{external_key_id}/metadata", body)

    # -- transport --------------------------------------------------------------------------------

    def _sign(self, url: str, payload: bytes) -> dict[str, str]:
        """SigV4 headers for one POST; the only place the secret is revealed."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(method="POST", url=url, data=payload, headers={"Content-Type": "application/json"})
        try:
            SigV4Auth(Credentials(self.access_key_id, self._secret.reveal()), SERVICE, self.region).add_auth(request)
        except Exception as exc:  # never let a botocore message carry signing material
            raise ProxyError("protocol", f"could not sign the request ({type(exc).__name__})") from None
        return {k: str(v) for k, v in request.headers.items()}

    def _post(self, suffix: str, body: dict[str, Any]) -> ProxyResponse:
        path = self.uri_path + suffix
        url = self.base_url + path
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = self._sign(url, payload)
        dial = parse_hostport(self.connect_to, self.port) if self.connect_to else (self.host, self.port)
        conn = _DialingHTTPSConnection(self.host, self.port, dial, self.ssl_context, self.timeout)
        try:
            # The latency is the request's round trip, not TCP + TLS setup (KMS keeps its connections).
            conn.connect()
            started = time.perf_counter()
            conn.request("POST", path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except socket.gaierror as exc:
            raise ProxyError("dns", f"cannot resolve {dial[0]}: {exc.strerror or exc}") from None
        except TimeoutError:
            raise ProxyError("timeout", f"no answer from {dial[0]}:{dial[1]} within {self.timeout:g}s") from None
        except ssl.SSLError as exc:
            raise ProxyError("tls", f"TLS with {self.host} failed: {exc.reason or exc}") from None
        except ConnectionError as exc:
            raise ProxyError("connect", f"cannot connect to {dial[0]}:{dial[1]}: {exc.strerror or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ProxyError("protocol", f"{self.host}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        latency = (time.perf_counter() - started) * 1000.0
        return _parse(status, raw, latency)


def _parse(status: int, raw: bytes, latency_ms: float) -> ProxyResponse:
    """Judge by the spec's errorName, not the status code: a 200 with an errorName is still an error."""
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        return ProxyResponse(status=status, body={}, latency_ms=latency_ms, malformed=True)
    error_name = data.get("errorName")
    return ProxyResponse(status=status, body=data, latency_ms=latency_ms,
                         error_name=error_name if isinstance(error_name, str) else "")
