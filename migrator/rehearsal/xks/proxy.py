"""The rehearsal world's XKS proxy: an HTTP(S) server that follows the XKS proxy API spec v1.0.3.

The world's KMS calls it exactly as real KMS calls a proxy (HTTPS, SigV4 with service `kms-xks-proxy`),
so a migration rehearsed against it meets the same failures it would meet in production: a wrong path
prefix, stale credentials, an expired or wrong-host certificate, a chain without its intermediate, a
server that offers only TLS below 1.2, an unhealthy key manager, a proxy that is down, slow, throttling
(429) or timing out on its key manager (503). The proxy reads its `Proxy` and `KeyManager` objects live
on every request because the world changes them while a rehearsal runs.

Key material is derived from the key manager's name and the key id, so every proxy in front of the same
key manager (even in another process) decrypts what another one encrypted; that is what makes "the
target proxy fronts the same key manager" checkable.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from migrator.rehearsal.world.ca import WorldCA, server_tls_context
from migrator.rehearsal.world.model import PROXY_FAULT_KINDS, KeyManager, Proxy
from migrator.rehearsal.xks.api import API_PATH, OPERATIONS, XksError, handle_api
from migrator.rehearsal.xks.sigv4_verify import SigV4Error, parse_authorization, verify_request

__all__ = ["API_PATH", "XksProxyServer"]

MAX_BODY = 1 << 20
_ROUTE = re.compile(r"^/(?:(health)|keys/([A-Za-z0-9\-._]{1,128})/(metadata|encrypt|decrypt))$")
_TLS_HANDSHAKE_TIMEOUT = 10.0
FaultHook = Callable[[str], Mapping[str, float]]


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), so the client sees a connection reset rather than a clean EOF."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _remember_sni(ssl_socket: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    """Keep the SNI name for the log: which host name did the client believe it was calling?"""
    ssl_socket.xks_sni = server_name


class _Response:
    __slots__ = ("body", "content_type", "reset", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "application/json",
                 reset: bool = False):
        self.status, self.body, self.content_type, self.reset = status, body, content_type, reset


class XksProxyServer:
    """One simulated XKS proxy listening on loopback; start()/stop(), or use it as a context manager.

    `fault_hook`, when given, is asked once per request (with the API name, e.g. "Encrypt") for extra
    faults `{kind: latency_ms}` that apply to that request only; the world uses it for counted or
    probabilistic faults. Faults set with `set_fault` apply until cleared.
    """

    def __init__(self, proxy: Proxy, key_manager: KeyManager, region: str, ca: WorldCA | None, *,
                 host: str = "127.0.0.1", port: int = 0, tls: bool = True,
                 certificate_hosts: list[str] | None = None, clock: Callable[[], float] = time.time,
                 fault_hook: FaultHook | None = None):
        if tls and ca is None:
            raise ValueError("a TLS proxy needs a WorldCA to issue its certificate")
        self.proxy, self.key_manager, self.region, self.ca = proxy, key_manager, region, ca
        self.host, self.tls, self.clock, self.fault_hook = host, tls, clock, fault_hook
        self._requested_port = port
        self._certificate_hosts = list(certificate_hosts) if certificate_hosts is not None else None
        self._faults: dict[str, float] = {}
        self._log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._contexts: dict[tuple[tuple[str, ...], str, int, str], ssl.SSLContext] = {}
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> XksProxyServer:
        if self._httpd is not None:
            raise RuntimeError("proxy already started")
        httpd = _HTTPServer((self.host, self._requested_port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"xks-proxy-{self.proxy.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> XksProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd is not None else self._requested_port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def certificate_hosts(self) -> list[str]:
        """Names in the served certificate: explicit, else the proxy's (live), else the bind address."""
        if self._certificate_hosts:
            return list(self._certificate_hosts)
        return list(self.proxy.certificate_hosts or self.proxy.public_hostnames or [self.host or "127.0.0.1"])

    # ----------------------------------------------------------------------------- faults and log
    def set_fault(self, kind: str, latency_ms: float = 0.0) -> None:
        if kind not in PROXY_FAULT_KINDS:
            raise ValueError(f"proxy fault must be one of {', '.join(PROXY_FAULT_KINDS)}; got {kind!r}")
        with self._lock:
            self._faults[kind] = float(latency_ms)

    def clear_fault(self, kind: str) -> None:
        with self._lock:
            self._faults.pop(kind, None)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> dict[str, float]:
        with self._lock:
            return dict(self._faults)

    @property
    def request_log(self) -> list[dict[str, Any]]:
        """A snapshot of every request (and refused connection); never secrets or plaintext."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)

    def _is_down(self) -> bool:
        with self._lock:
            return self.proxy.down or "down" in self._faults

    # ----------------------------------------------------------------------------- connections
    def _server_ssl_context(self) -> ssl.SSLContext:
        assert self.ca is not None
        proxy = self.proxy
        key = (tuple(self.certificate_hosts), proxy.certificate, int(proxy.certificate_days_valid),
               proxy.tls_max_version)
        with self._lock:
            ctx = self._contexts.get(key)
        if ctx is None:
            chain, private_key = self.ca.issue(list(key[0]), key[1], key[2])
            ctx = server_tls_context(chain, private_key, key[3])
            ctx.sni_callback = _remember_sni
            with self._lock:
                self._contexts[key] = ctx
        return ctx

    def _serve_connection(self, raw: socket.socket, client_address: Any, httpd: _HTTPServer) -> None:
        """Runs in the connection's own thread: the down check and the TLS handshake happen here so a
        slow client never stalls the accept loop."""
        if self._is_down():
            self._record(self._entry(None, None, client_address, note="down: connection reset"))
            _reset(raw)
            return
        conn: socket.socket = raw
        if self.tls:
            try:
                raw.settimeout(_TLS_HANDSHAKE_TIMEOUT)
                conn = self._server_ssl_context().wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self._record(self._entry(None, None, client_address, note=f"TLS handshake failed: {exc}"[:300]))
                raw.close()
                return
        with self._lock:
            self._connections.add(conn)
        try:
            _Handler(conn, client_address, httpd)
        except OSError:
            pass  # the client went away; nothing to answer
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _entry(self, method: str | None, target: str | None, client_address: Any, **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": self.clock(), "proxy": self.proxy.name, "method": method,
            "path": urlsplit(target).path if target else None, "operation": None, "status": None,
            "errorName": None, "access_key_id": None, "kmsRequestId": None, "kmsOperation": None,
            "client": f"{client_address[0]}:{client_address[1]}" if client_address else None,
        }
        entry.update(extra)
        return entry

    # ----------------------------------------------------------------------------- one request
    def respond(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                *, client_address: Any = None, sni: str | None = None) -> tuple[_Response, float]:
        """Answer one request: (response, seconds to wait before sending it). Also logs the request."""
        entry = self._entry(method, target, client_address, sni=sni,
                            host=next((v for k, v in headers if k.lower() == "host"), None))
        _peek_metadata(body, entry)
        try:
            response = self._respond(method, target, headers, body, entry)
        except XksError as exc:
            entry["errorName"] = exc.name
            response = _Response(exc.status, exc.body())
        except Exception as exc:  # a bug in the simulation must still produce a spec-shaped answer
            entry["errorName"], entry["internalError"] = "InternalException", repr(exc)[:300]
            response = _Response(500, XksError(500, "InternalException", "internal error").body())
        entry["status"] = None if response.reset else response.status
        with self._lock:
            faults = dict(self._faults)
        delay_ms = float(self.proxy.latency_ms) + faults.get("slow", 0.0) + entry.pop("_extra_latency_ms", 0.0)
        self._record(entry)
        return response, max(delay_ms, 0.0) / 1000.0

    def _respond(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                 entry: dict[str, Any]) -> _Response:
        path = urlsplit(target).path
        base = self.proxy.uri_path_prefix + API_PATH
        match = _ROUTE.match(path[len(base):]) if path.startswith(base + "/") else None
        if match is None:
            raise XksError(404, "InvalidUriPathException", "The request was rejected because the specified "
                                                           "URI path is not valid.")
        action = "health" if match.group(1) else match.group(3)
        key_id = match.group(2)
        entry["operation"], entry["key_id"] = OPERATIONS[action], key_id

        with self._lock:
            faults = dict(self._faults)
        if self.fault_hook is not None:
            extra = dict(self.fault_hook(OPERATIONS[action]) or {})
            unknown = set(extra) - set(PROXY_FAULT_KINDS)
            if unknown:
                raise ValueError(f"fault_hook returned unknown fault kinds {sorted(unknown)}")
            entry["_extra_latency_ms"] = extra.get("slow", 0.0)
            faults.update(extra)
        if faults:
            entry["faults"] = sorted(faults)
        if "down" in faults or self.proxy.down:
            entry["note"] = "down: connection reset"
            return _Response(0, reset=True)

        if method != "POST":
            return _Response(405, json.dumps({"errorMessage": "The XKS proxy API accepts only POST."}).encode())
        if "reject_credentials" in faults:
            entry["authError"], entry["access_key_id"] = "fault: reject_credentials", _access_key_from(headers)
            raise _auth_failed()
        try:
            result = verify_request(method, target, headers, body,
                                    [(c.access_key_id, c.secret) for c in list(self.proxy.credentials)],
                                    self.region, now=self.clock())
        except SigV4Error as exc:
            entry["authError"], entry["access_key_id"] = exc.reason, exc.access_key_id
            raise _auth_failed() from None
        entry["access_key_id"] = result.access_key_id

        if "invalid_response" in faults:
            return _Response(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if "throttling" in faults:  # spec error table: 429, all APIs
            raise XksError(429, "ThrottlingException", "The request was rejected because the request rate is "
                                                       "too high.")
        if "dependency_timeout" in faults:  # spec error table: 503, all APIs
            raise XksError(503, "DependencyTimeoutException", "The external key manager did not respond in time.")
        if "access_denied" in faults and action != "health":
            raise XksError(403, "AccessDeniedException", "The request was rejected because the operation is not "
                                                         "authorized based on request metadata.")
        answer = handle_api(action, key_id, body, self.key_manager, self.proxy,
                            unhealthy="unhealthy" in faults)
        return _Response(200, json.dumps(answer).encode())


def _auth_failed() -> XksError:
    return XksError(401, "AuthenticationFailedException",
                    "The request was rejected due to invalid AWS SigV4 signature.")


def _peek_metadata(body: bytes, entry: dict[str, Any]) -> None:
    """Copy kmsRequestId/kmsOperation into the log entry when the body carries them (nothing else)."""
    try:
        metadata = json.loads(body).get("requestMetadata")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return
    if isinstance(metadata, dict):
        for name in ("kmsRequestId", "kmsOperation"):
            if isinstance(metadata.get(name), str):
                entry[name] = metadata[name][:256]


def _access_key_from(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "authorization":
            try:
                return parse_authorization(value).access_key_id
            except SigV4Error as exc:
                return exc.access_key_id
    return None


class _HTTPServer(ThreadingHTTPServer):
    """Accepts on one thread; handshake and requests run on a daemon thread per connection."""

    daemon_threads = True
    owner: XksProxyServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.owner._serve_connection(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # per-request failures are answered (500) and logged by the handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as KMS reuses connections
    disable_nagle_algorithm = True  # see rehearsal.server: avoids 40 ms delayed-ACK stalls per request
    server_version = "xksmigrate-rehearsal-xks-proxy/1.0"
    sys_version = ""
    timeout = 60.0  # an idle keep-alive connection releases its thread eventually
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the owner keeps a structured request log instead

    def _dispatch(self) -> None:
        owner = self.server.owner
        headers = list(self.headers.items())
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            err = XksError(400, "ValidationException", "bad or too large Content-Length")
            self._send(_Response(400, err.body()))
            return
        body = self.rfile.read(length) if length else b""
        response, delay = owner.respond(self.command, self.path, headers, body,
                                        client_address=self.client_address,
                                        sni=getattr(self.connection, "xks_sni", None))
        if response.reset:
            self.close_connection = True
            _reset(self.connection)
            return
        if delay:
            time.sleep(delay)
        self._send(response)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if response.status == 405:
            self.send_header("Allow", "POST")
        self.end_headers()
        self.wfile.write(response.body)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _dispatch
