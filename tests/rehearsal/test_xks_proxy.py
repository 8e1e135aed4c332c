"""The rehearsal XKS proxy over real loopback HTTPS, signed by botocore and by curl (independent signers).

No mocks: each test starts a proxy on an ephemeral port and talks to it the way the world's KMS does,
connecting to 127.0.0.1 while presenting the proxy's host name for SNI and the certificate check.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from migrator.rehearsal import proxy_main
from migrator.rehearsal.world.ca import WorldCA
from migrator.rehearsal.world.model import KeyManager, KeyManagerKey, Proxy, ProxyCredential
from migrator.rehearsal.xks.api import ciphertext_data_integrity_value, gcm_aad
from migrator.rehearsal.xks.proxy import XksProxyServer
from migrator.rehearsal.xks.sigv4_verify import SigV4Error, canonical_uri, verify_request

HOST = "myproxy.xks.example.com"
REGION = "us-east-1"
AK1, SK1 = "XKSREHEARSALACCESSKEYAAAA", base64.b64encode(b"rehearsal secret number one ....").decode()
AK2, SK2 = "XKSREHEARSALACCESSKEYBBBB", base64.b64encode(b"rehearsal secret number two ....").decode()
BASE = "/kms/xks/v1"
AAD = b"project=nile,department=marketing"


def metadata(operation: str = "Encrypt") -> dict[str, str]:
    return {"awsPrincipalArn": "arn:aws:iam::111122223333:user/Alice", "kmsOperation": operation,
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
            "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}


HEALTH = {"requestMetadata": {"kmsRequestId": "health-1", "kmsOperation": "KmsHealthCheck"}}


def encrypt_body(plaintext: bytes = b"Hello World!", aad: bytes | None = AAD, cdiv: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"requestMetadata": metadata("Encrypt"), "encryptionAlgorithm": "AES_GCM",
                            "plaintext": base64.b64encode(plaintext).decode()}
    if aad is not None:
        body["additionalAuthenticatedData"] = base64.b64encode(aad).decode()
    if cdiv:
        body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
    return body


def decrypt_body(sealed: dict[str, str], aad: bytes | None = AAD) -> dict[str, Any]:
    body: dict[str, Any] = {"requestMetadata": metadata("Decrypt"), "encryptionAlgorithm": "AES_GCM"}
    for name in ("ciphertext", "ciphertextMetadata", "initializationVector", "authenticationTag"):
        if name in sealed:
            body[name] = sealed[name]
    if aad is not None:
        body["additionalAuthenticatedData"] = base64.b64encode(aad).decode()
    return body


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> WorldCA:
    return WorldCA(tmp_path_factory.mktemp("world-ca"))


def make_world(key_manager: str = "ekm-a") -> tuple[Proxy, KeyManager]:
    proxy = Proxy(name="proxy-a", key_manager=key_manager, public_hostnames=[HOST],
                  credentials=[ProxyCredential(AK1, SK1), ProxyCredential(AK2, SK2)], latency_ms=0.0)
    manager = KeyManager(name=key_manager, keys=[
        KeyManagerKey(id="key-1"),
        KeyManagerKey(id="encrypt-only", usage=["ENCRYPT"]),
        KeyManagerKey(id="decrypt-only", usage=["DECRYPT"]),
        KeyManagerKey(id="disabled", status="DISABLED"),
    ])
    return proxy, manager


@pytest.fixture
def start(ca: WorldCA) -> Iterator[Callable[..., XksProxyServer]]:
    servers: list[XksProxyServer] = []

    def _start(proxy: Proxy | None = None, manager: KeyManager | None = None, **kwargs: Any) -> XksProxyServer:
        if proxy is None or manager is None:
            proxy, manager = make_world()
        kwargs.setdefault("ca", ca)
        server = XksProxyServer(proxy, manager, REGION, kwargs.pop("ca"), **kwargs).start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start: Callable[..., XksProxyServer]) -> XksProxyServer:
    return start()


# ------------------------------------------------------------------------------------------ client
@dataclass
class Target:
    """Where `send` connects: a started XksProxyServer has the same three attributes."""

    port: int
    tls: bool
    ca: WorldCA | None


def signed_headers(url: str, payload: bytes, akid: str = AK1, secret: str = SK1, region: str = REGION,
                   service: str = "kms-xks-proxy") -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=payload, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(akid, secret), service, region).add_auth(request)
    return dict(request.headers.items())


def send(server: XksProxyServer | Target, path: str, body: dict[str, Any] | bytes | None = None, *,
         method: str = "POST", host: str = HOST, host_header: str | None = None, sign: bool = True,
         akid: str = AK1, secret: str = SK1, region: str = REGION, service: str = "kms-xks-proxy",
         tamper: Callable[[bytes], bytes] | None = None,
         timeout: float = 10.0, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """One request to `server` at 127.0.0.1, as `host` (SNI, certificate and the signed Host: host:port)."""
    payload = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
    host_header = host_header or f"{host}:{server.port}"
    headers = {"Content-Type": "application/json"}
    if sign:
        headers = signed_headers(f"https://{host_header}{path}", payload, akid, secret, region, service)
    if tamper is not None:
        payload = tamper(payload)
    conn = http.client.HTTPConnection(host, server.port, timeout=timeout)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    conn.sock = (context or server.ca.client_context()).wrap_socket(raw, server_hostname=host) if server.tls \
        else raw
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host_header)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders(payload)
        response = conn.getresponse()
        raw_body = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw_body)
    except ValueError:
        return response.status, raw_body


def error_name(result: tuple[int, Any]) -> tuple[int, str | None]:
    status, body = result
    return status, body.get("errorName") if isinstance(body, dict) else None


# ------------------------------------------------------------------------------------------ SigV4
def test_health_signed_by_botocore(server: XksProxyServer) -> None:
    status, body = send(server, f"{BASE}/health", HEALTH)
    assert status == 200
    assert body["xksProxyFleetSize"] >= 1
    assert all(isinstance(body[k], str) and body[k] for k in ("xksProxyVendor", "xksProxyModel", "ekmVendor"))
    assert 1 <= len(body["ekmFleetDetails"]) <= 10
    assert {e["healthStatus"] for e in body["ekmFleetDetails"]} == {"ACTIVE"}
    entry = server.request_log[-1]
    assert entry["operation"] == "GetHealthStatus" and entry["status"] == 200
    assert entry["access_key_id"] == AK1 and entry["kmsRequestId"] == "health-1" and entry["sni"] == HOST


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(("secret", "expected"), [(SK1, 200), (SK2, 401)])
def test_curl_signed_requests(server: XksProxyServer, secret: str, expected: int) -> None:
    """curl's own SigV4 (it signs content-type;host;x-amz-date, Host with the port) and its hostname check."""
    url = f"https://{HOST}:{server.port}{BASE}/keys/key-1/encrypt"
    result = subprocess.run(
        ["curl", "-sS", "--aws-sigv4", f"aws:amz:{REGION}:kms-xks-proxy", "--user", f"{AK1}:{secret}",
         "--cacert", str(server.ca.ca_bundle_path), "--resolve", f"{HOST}:{server.port}:127.0.0.1",
         "-H", "Content-Type: application/json", "--data-binary", "@-", "-w", "\n%{http_code}", url],
        input=json.dumps(encrypt_body()).encode(), capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    text, _, code = result.stdout.decode().rpartition("\n")
    assert int(code) == expected
    if expected == 200:
        assert set(json.loads(text)) >= {"ciphertext", "initializationVector", "authenticationTag"}
    else:
        assert json.loads(text)["errorName"] == "AuthenticationFailedException"


def test_tampered_body_is_rejected(server: XksProxyServer) -> None:
    result = send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body(),
                  tamper=lambda b: b.replace(b"SGVsbG8gV29ybGQh", b"SGVsbG8gV29ybGQi"))
    assert error_name(result) == (401, "AuthenticationFailedException")
    assert server.request_log[-1]["authError"] == "signature does not match"


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"secret": SK2}, "signature does not match"),
    ({"akid": "XKSUNKNOWNACCESSKEYZZZZZ"}, "unknown access key id"),
    ({"region": "eu-west-1"}, "region"),
    ({"service": "kms"}, "service"),
    ({"sign": False}, "missing Authorization header"),
])
def test_bad_signatures_are_401(server: XksProxyServer, kwargs: dict[str, Any], reason: str) -> None:
    assert error_name(send(server, f"{BASE}/health", HEALTH, **kwargs)) == (401, "AuthenticationFailedException")
    assert reason in server.request_log[-1]["authError"]


def test_host_header_is_part_of_the_signature(server: XksProxyServer) -> None:
    # Host without a port (as KMS sends to :443) verifies when signed that way ...
    assert send(server, f"{BASE}/health", HEALTH, host_header=HOST)[0] == 200
    # ... but a request signed for one Host and sent with another does not.
    payload = json.dumps(HEALTH).encode()
    headers = signed_headers(f"https://{HOST}:{server.port}{BASE}/health", payload)
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    conn.sock = server.ca.client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port)), server_hostname=HOST)
    conn.putrequest("POST", f"{BASE}/health", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", f"other.example.com:{server.port}")
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(payload)))
    conn.endheaders(payload)
    assert conn.getresponse().status == 401
    conn.close()


@pytest.mark.parametrize(("offset", "expected"), [(0, 200), (240, 200), (-240, 200), (360, 401), (-360, 401)])
def test_replay_window_is_five_minutes(start: Callable[..., XksProxyServer], offset: float, expected: int) -> None:
    server = start(clock=lambda: time.time() + offset)
    assert send(server, f"{BASE}/health", HEALTH)[0] == expected


def test_rotation_accepts_both_credentials_and_reads_them_live(server: XksProxyServer) -> None:
    assert send(server, f"{BASE}/health", HEALTH, akid=AK2, secret=SK2)[0] == 200
    assert server.request_log[-1]["access_key_id"] == AK2
    server.proxy.credentials = [c for c in server.proxy.credentials if c.access_key_id != AK1]
    assert send(server, f"{BASE}/health", HEALTH)[0] == 401
    assert send(server, f"{BASE}/health", HEALTH, akid=AK2, secret=SK2)[0] == 200


def test_verifier_checks_the_declared_payload_hash() -> None:
    payload = b'{"a": 1}'
    url = f"https://{HOST}:8443{BASE}/health"
    request = AWSRequest(method="POST", url=url, data=payload,
                         headers={"X-Amz-Content-SHA256": hashlib.sha256(payload).hexdigest()})
    SigV4Auth(Credentials(AK1, SK1), "kms-xks-proxy", REGION).add_auth(request)
    headers = [("Host", f"{HOST}:8443"), *request.headers.items()]
    assert verify_request("POST", f"{BASE}/health", headers, payload, [(AK1, SK1)], REGION).access_key_id == AK1
    with pytest.raises(SigV4Error, match="x-amz-content-sha256"):
        verify_request("POST", f"{BASE}/health", headers, b'{"a": 2}', [(AK1, SK1)], REGION)


@pytest.mark.parametrize("path", ["/kms/xks/v1/keys/a.b_c-d/encrypt", "/p/../kms//xks/./v1/health", "/a b/%41", ""])
def test_canonical_uri_matches_botocore(path: str) -> None:
    assert canonical_uri(path) == SigV4Auth(Credentials("a", "b"), "s", "r")._normalize_url_path(path)


# ------------------------------------------------------------------------------------------ routing and errors
def test_get_is_405(server: XksProxyServer) -> None:
    for path in (f"{BASE}/health", f"{BASE}/keys/key-1/metadata"):
        assert send(server, path, method="GET")[0] == 405


@pytest.mark.parametrize("path", [f"{BASE}/healthz", "/other/kms/xks/v1/health", f"{BASE}/keys/key-1/sign",
                                  "/kms/xks/v2/health", f"{BASE}/keys//metadata", "/"])
def test_unknown_paths_are_invalid_uri_path(server: XksProxyServer, path: str) -> None:
    assert error_name(send(server, path, HEALTH)) == (404, "InvalidUriPathException")


def test_uri_path_prefix_is_honoured(start: Callable[..., XksProxyServer]) -> None:
    proxy, manager = make_world()
    proxy.uri_path_prefix = "/keystores/ks-1"
    server = start(proxy, manager)
    assert send(server, f"/keystores/ks-1{BASE}/health", HEALTH)[0] == 200
    assert error_name(send(server, f"{BASE}/health", HEALTH)) == (404, "InvalidUriPathException")


def test_unknown_key_is_key_not_found(server: XksProxyServer) -> None:
    body = {"requestMetadata": metadata("DescribeKey")}
    assert error_name(send(server, f"{BASE}/keys/nope/metadata", body)) == (404, "KeyNotFoundException")
    assert error_name(send(server, f"{BASE}/keys/nope/encrypt", encrypt_body())) == (404, "KeyNotFoundException")


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    target = copy
    for name in path[:-1]:
        target = target[name]
    del target[path[-1]]
    return copy


@pytest.mark.parametrize(("operation", "body"), [
    ("encrypt", _without(encrypt_body(), "requestMetadata")),
    ("encrypt", _without(encrypt_body(), "requestMetadata", "kmsRequestId")),
    ("encrypt", _without(encrypt_body(), "requestMetadata", "kmsOperation")),
    ("encrypt", _without(encrypt_body(), "plaintext")),
    ("encrypt", {**encrypt_body(), "plaintext": "not base64!"}),
    ("encrypt", {**encrypt_body(), "additionalAuthenticatedData": "abc"}),
    ("encrypt", {**encrypt_body(), "encryptionAlgorithm": "AES_CBC"}),
    ("encrypt", {**encrypt_body(), "ciphertextDataIntegrityValueAlgorithm": "MD5"}),
    ("encrypt", {**encrypt_body(), "requestMetadata": "x"}),
    ("encrypt", b"not json"),
    ("metadata", {"requestMetadata": {"kmsOperation": "DescribeKey"}}),
    ("metadata", [1, 2]),
])
def test_validation_exception(server: XksProxyServer, operation: str, body: dict[str, Any] | bytes) -> None:
    result = send(server, f"{BASE}/keys/key-1/{operation}", body if isinstance(body, bytes) else
                  json.dumps(body).encode())
    assert error_name(result) == (400, "ValidationException")


@pytest.mark.parametrize("body", [b"not json", {}, {"requestMetadata": {}},
                                  {"requestMetadata": {"kmsRequestId": "r-1"}},
                                  {"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": ""}}])
def test_health_without_its_request_metadata_is_a_validation_exception(server: XksProxyServer,
                                                                       body: dict[str, Any] | bytes) -> None:
    """The spec's GetHealthStatus request schema requires requestMetadata.kmsRequestId and .kmsOperation."""
    assert error_name(send(server, f"{BASE}/health", body)) == (400, "ValidationException")


def test_unknown_kms_operation_is_accepted(server: XksProxyServer) -> None:
    body = {"requestMetadata": {**metadata(), "kmsOperation": "BulkDescribeKey"}}
    assert send(server, f"{BASE}/keys/key-1/metadata", body) == (
        200, {"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})


# ------------------------------------------------------------------------------------------ crypto
def test_cdiv_known_answer_from_the_spec() -> None:
    cdiv = ciphertext_data_integrity_value(
        AAD, base64.b64decode("a2V5X3ZlcnNpb249MQ=="), base64.b64decode("HMrlRw85cAJUd5Ax"),
        base64.b64decode("ghxkK1txeDNn3q8Y"), base64.b64decode("vBxN2ncH1oEkR8WVXpmyYQ=="))
    assert cdiv == "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="


def test_gcm_aad_carries_both_lengths() -> None:
    assert gcm_aad(b"ab", b"xyz") == b"\x00\x02ab\x03xyz"
    assert gcm_aad(b"", b"") == b"\x00\x00\x00"
    assert gcm_aad(b"abc", b"") != gcm_aad(b"", b"abc")


@pytest.mark.parametrize(("aad", "plaintext"), [(AAD, b"Hello World!"), (None, os.urandom(4300)), (b"", b"x")])
def test_encrypt_decrypt_round_trip_with_cdiv(server: XksProxyServer, aad: bytes | None, plaintext: bytes) -> None:
    status, sealed = send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body(plaintext, aad))
    assert status == 200
    ciphertext, iv, tag, ctm = (base64.b64decode(sealed[k]) for k in
                                ("ciphertext", "initializationVector", "authenticationTag", "ciphertextMetadata"))
    assert len(ciphertext) == len(plaintext) and len(iv) == 12 and len(tag) == 16 and 0 < len(ctm) <= 20
    # The test's own CDIV (spec Appendix C), independent of the proxy's function.
    expected = hashlib.sha256((aad or b"") + ctm + iv + ciphertext + tag).digest()
    assert base64.b64decode(sealed["ciphertextDataIntegrityValue"]) == expected
    assert send(server, f"{BASE}/keys/key-1/decrypt", decrypt_body(sealed, aad)) == (
        200, {"plaintext": base64.b64encode(plaintext).decode()})


def test_no_cdiv_unless_asked(server: XksProxyServer) -> None:
    status, sealed = send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body(cdiv=False))
    assert status == 200 and "ciphertextDataIntegrityValue" not in sealed


def _flip(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("change", [
    lambda b: {**b, "ciphertext": _flip(b["ciphertext"])},
    lambda b: {**b, "authenticationTag": _flip(b["authenticationTag"])},
    lambda b: {**b, "initializationVector": _flip(b["initializationVector"])},
    lambda b: {**b, "additionalAuthenticatedData": base64.b64encode(b"project=nile").decode()},
    lambda b: {**b, "ciphertextMetadata": base64.b64encode(b"key_version=2").decode()},
    lambda b: {k: v for k, v in b.items() if k != "ciphertextMetadata"},
    # The spec's own example of why lengths are in the AAD: metadata moved into the AAD must not decrypt.
    lambda b: {**{k: v for k, v in b.items() if k != "ciphertextMetadata"},
               "additionalAuthenticatedData": b["ciphertextMetadata"]},
    lambda b: {**b, "initializationVector": base64.b64encode(b"short").decode()},
])
def test_tampered_ciphertext_is_invalid_ciphertext(server: XksProxyServer, change: Callable[..., Any]) -> None:
    sealed = send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body())[1]
    body = change(decrypt_body(sealed))
    assert error_name(send(server, f"{BASE}/keys/key-1/decrypt", body)) == (400, "InvalidCiphertextException")


def test_key_usage_and_state(server: XksProxyServer) -> None:
    sealed = send(server, f"{BASE}/keys/encrypt-only/encrypt", encrypt_body())[1]
    assert "ciphertext" in sealed
    assert error_name(send(server, f"{BASE}/keys/encrypt-only/decrypt", decrypt_body(sealed))) == (
        400, "InvalidKeyUsageException")
    assert error_name(send(server, f"{BASE}/keys/decrypt-only/encrypt", encrypt_body())) == (
        400, "InvalidKeyUsageException")
    assert error_name(send(server, f"{BASE}/keys/disabled/encrypt", encrypt_body())) == (400, "InvalidStateException")
    body = {"requestMetadata": metadata("DescribeKey")}
    assert send(server, f"{BASE}/keys/disabled/metadata", body)[1]["keyStatus"] == "DISABLED"
    # Key status is read live: enabling the key in the key manager takes effect on the next call.
    next(k for k in server.key_manager.keys if k.id == "disabled").status = "ENABLED"
    assert send(server, f"{BASE}/keys/disabled/encrypt", encrypt_body())[0] == 200


def test_proxies_on_the_same_key_manager_share_keys(start: Callable[..., XksProxyServer]) -> None:
    first, second = start(*make_world("ekm-shared")), start(*make_world("ekm-shared"))
    other = start(*make_world("ekm-other"))
    sealed = send(first, f"{BASE}/keys/key-1/encrypt", encrypt_body())[1]
    assert send(second, f"{BASE}/keys/key-1/decrypt", decrypt_body(sealed))[1] == {"plaintext": "SGVsbG8gV29ybGQh"}
    sealed = send(second, f"{BASE}/keys/key-1/encrypt", encrypt_body())[1]
    assert send(first, f"{BASE}/keys/key-1/decrypt", decrypt_body(sealed))[0] == 200
    assert error_name(send(other, f"{BASE}/keys/key-1/decrypt", decrypt_body(sealed))) == (
        400, "InvalidCiphertextException")


def test_log_holds_no_secret_and_no_plaintext(server: XksProxyServer) -> None:
    plaintext = b"top secret data key material...."
    sealed = send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body(plaintext))[1]
    send(server, f"{BASE}/keys/key-1/decrypt", decrypt_body(sealed))
    send(server, f"{BASE}/health", HEALTH, secret=SK2)
    text = json.dumps(server.request_log, default=str)
    assert [e["operation"] for e in server.request_log] == ["Encrypt", "Decrypt", "GetHealthStatus"]
    for forbidden in (SK1, SK2, base64.b64encode(plaintext).decode(), plaintext.decode()):
        assert forbidden not in text


def test_plain_http_mode(start: Callable[..., XksProxyServer]) -> None:
    server = start(tls=False, ca=None)
    assert server.url.startswith("http://127.0.0.1:")
    assert send(server, f"{BASE}/health", HEALTH)[0] == 200


# ------------------------------------------------------------------------------------------ faults
def _connection_fails(server: XksProxyServer) -> None:
    with pytest.raises((ConnectionError, ssl.SSLError, http.client.RemoteDisconnected)):
        send(server, f"{BASE}/health", HEALTH)


def test_down_fault_and_down_flag_reset_connections(server: XksProxyServer) -> None:
    server.set_fault("down")
    _connection_fails(server)
    assert server.request_log[-1]["note"].startswith("down")
    # Down means no TLS handshake either: the connection is reset before any certificate is shown.
    with pytest.raises((ConnectionError, ssl.SSLError)), \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        server.ca.client_context().wrap_socket(raw, server_hostname=HOST).close()
    server.clear_fault("down")
    assert send(server, f"{BASE}/health", HEALTH)[0] == 200
    server.proxy.down = True
    _connection_fails(server)
    server.proxy.down = False
    assert send(server, f"{BASE}/health", HEALTH)[0] == 200


def test_down_also_cuts_an_open_keep_alive_connection(server: XksProxyServer) -> None:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    conn.sock = server.ca.client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port)), server_hostname=HOST)

    def health() -> int:
        payload = json.dumps(HEALTH).encode()
        conn.request("POST", f"{BASE}/health", body=payload,
                     headers=signed_headers(f"https://{HOST}:{server.port}{BASE}/health", payload))
        response = conn.getresponse()
        response.read()
        return response.status

    try:
        assert health() == 200
        assert health() == 200  # same connection (HTTP/1.1 keep-alive)
        server.set_fault("down")
        with pytest.raises((ConnectionError, ssl.SSLError, http.client.RemoteDisconnected)):
            health()
    finally:
        conn.close()


def test_fault_hook_can_take_the_proxy_down_for_one_request(start: Callable[..., XksProxyServer]) -> None:
    budget = ["down"]
    server = start(fault_hook=lambda operation: {budget.pop(): 0.0} if budget else {})
    _connection_fails(server)
    assert send(server, f"{BASE}/health", HEALTH)[0] == 200


@pytest.mark.parametrize("how", ["fault", "latency_ms"])
def test_slow_proxy_misses_a_client_deadline(server: XksProxyServer, how: str) -> None:
    if how == "fault":
        server.set_fault("slow", latency_ms=3000)
    else:
        server.proxy.latency_ms = 3000
    with pytest.raises(TimeoutError):
        send(server, f"{BASE}/health", HEALTH, timeout=0.3)
    server.clear_faults()
    server.proxy.latency_ms = 0.0
    assert send(server, f"{BASE}/health", HEALTH)[0] == 200


def test_health_status_follows_proxy_and_unhealthy_fault(server: XksProxyServer) -> None:
    server.proxy.health = "DEGRADED"
    fleet = send(server, f"{BASE}/health", HEALTH)[1]["ekmFleetDetails"]
    assert {e["healthStatus"] for e in fleet} == {"DEGRADED"}
    server.set_fault("unhealthy")
    fleet = send(server, f"{BASE}/health", HEALTH)[1]["ekmFleetDetails"]
    assert {e["healthStatus"] for e in fleet} == {"UNAVAILABLE"}


def test_reject_credentials_fault(server: XksProxyServer) -> None:
    server.set_fault("reject_credentials")
    assert error_name(send(server, f"{BASE}/health", HEALTH)) == (401, "AuthenticationFailedException")
    assert error_name(send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body()))[0] == 401
    assert server.request_log[-1]["access_key_id"] == AK1
    server.clear_faults()
    assert send(server, f"{BASE}/health", HEALTH)[0] == 200


def test_invalid_response_fault(server: XksProxyServer) -> None:
    server.set_fault("invalid_response")
    status, body = send(server, f"{BASE}/health", HEALTH)
    assert status == 200 and isinstance(body, bytes)
    with pytest.raises(ValueError):
        json.loads(body)


def test_access_denied_fault_spares_health(server: XksProxyServer) -> None:
    server.set_fault("access_denied")
    assert error_name(send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body())) == (403, "AccessDeniedException")
    assert send(server, f"{BASE}/health", HEALTH)[0] == 200
    assert server.faults == {"access_denied": 0.0}


def test_fault_hook_applies_per_request(start: Callable[..., XksProxyServer]) -> None:
    calls: list[str] = []

    def hook(operation: str) -> dict[str, float]:
        calls.append(operation)
        return {"access_denied": 0.0} if operation == "Encrypt" else {}

    server = start(fault_hook=hook)
    assert send(server, f"{BASE}/keys/key-1/encrypt", encrypt_body())[0] == 403
    assert send(server, f"{BASE}/keys/key-1/metadata", {"requestMetadata": metadata()})[0] == 200
    assert calls == ["Encrypt", "GetKeyMetadata"]


def test_unknown_fault_kind_is_refused(server: XksProxyServer) -> None:
    with pytest.raises(ValueError, match="proxy fault"):
        server.set_fault("flaky")


# ------------------------------------------------------------------------------------------ certificates
@pytest.mark.parametrize(("kind", "code"), [
    ("valid", None), ("expired", 10), ("wrong_host", 62), ("untrusted_ca", 20), ("self_signed", 18)])
def test_certificate_kinds_seen_by_the_world_client(start: Callable[..., XksProxyServer], kind: str,
                                                    code: int | None) -> None:
    proxy, manager = make_world()
    proxy.certificate = kind
    server = start(proxy, manager)
    if code is None:
        assert send(server, f"{BASE}/health", HEALTH)[0] == 200
        return
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        send(server, f"{BASE}/health", HEALTH)
    assert info.value.verify_code == code


def test_certificate_and_hosts_are_read_live(start: Callable[..., XksProxyServer]) -> None:
    server = start(certificate_hosts=[HOST, "vpce.private.example.com"])
    assert send(server, f"{BASE}/health", HEALTH, host="vpce.private.example.com")[0] == 200
    server.proxy.certificate = "expired"
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        send(server, f"{BASE}/health", HEALTH)
    assert info.value.verify_code == 10


def test_certificate_hosts_default_to_public_hostnames(start: Callable[..., XksProxyServer]) -> None:
    server = start()
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        send(server, f"{BASE}/health", HEALTH, host="vpce.private.example.com")
    assert info.value.verify_code == 62


# ------------------------------------------------------------------------------------------ process
def _env(secret: str) -> dict[str, str]:
    return {**os.environ, "XKS_TEST_SECRET": secret, "PYTHONUNBUFFERED": "1"}


def test_proxy_main_process_serves_signed_health(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "migrator.rehearsal.proxy_main", "--credential", f"{AK1}=env:XKS_TEST_SECRET",
           "--key", "key-1:ENCRYPT,DECRYPT", "--hostname", HOST, "--ca-dir", str(tmp_path / "ca"),
           "--uri-path-prefix", "/ks"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(SK1))
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["tls"] is True and ready["uri_path_prefix"] == "/ks" and ready["port"] > 0
        assert ready["url"] == f"https://127.0.0.1:{ready['port']}"
        target = Target(ready["port"], True, WorldCA(Path(ready["ca_bundle"]).parent))  # reuses its CA
        status, body = send(target, f"/ks{BASE}/health", HEALTH)
        assert status == 200 and body["ekmFleetDetails"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("argv", [
    ["--bogus"],
    ["--port", "x", "--credential", f"{AK1}=env:XKS_TEST_SECRET"],
    ["--credential", f"{AK1}=env:XKS_NOT_SET_ANYWHERE"],
    ["--credential", "lowercase=env:XKS_TEST_SECRET"],
    ["--credential", f"{AK1}=env:XKS_TEST_SECRET", "--key", "k1:SIGN"],
    ["--credential", f"{AK1}=env:XKS_TEST_SECRET", "--uri-path-prefix", "no-slash"],
    [],
])
def test_proxy_main_bad_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "migrator.rehearsal.proxy_main", *argv],
                            capture_output=True, timeout=60, env=_env(SK1), check=False)
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xksmigrate sim proxy: error:"), lines


def test_run_proxy_resolves_file_secrets_and_rejects_bad_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    short = tmp_path / "short"
    short.write_text("too-short\n")
    assert proxy_main.run_proxy("127.0.0.1", 0, "", REGION, [(AK1, f"file:{short}")], [], True, [HOST], None,
                                "ekm") == 2
    assert capsys.readouterr().err.count("\n") == 1
    good = tmp_path / "good"
    good.write_text(SK1 + "\n")
    assert proxy_main.resolve_secret(f"file:{good}") == SK1
    with pytest.raises(proxy_main.UsageError):
        proxy_main.resolve_secret("plain-text-secret")
