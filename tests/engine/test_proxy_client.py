"""migrator.proxy.XksProxyClient against the rehearsal XKS proxy over real loopback HTTPS.

The proxy verifies SigV4 independently (migrator/rehearsal/sigv4_verify.py), so an accepted request
proves the signature shape; the client dials 127.0.0.1 while presenting the endpoint host for SNI,
Host and the certificate check, as it must for a `probe` address or a rehearsal world.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from migrator.aws.secret_refs import SecretValue
from migrator.aws.xks_client import ProxyError, XksProxyClient, _parse, parse_hostport
from migrator.rehearsal.world.ca import WorldCA
from migrator.rehearsal.world.model import KeyManager, KeyManagerKey, Proxy, ProxyCredential
from migrator.rehearsal.xks.proxy import XksProxyServer
from migrator.rehearsal.xks.sigv4_verify import SigV4Error, verify_request

HOST = "myproxy.xks.example.com"
REGION = "us-east-1"
AK = "XKSPROXYACCESSKEY2345"
SK = base64.b64encode(b"preflight probe secret, 32 bytes").decode()
PATH = "/payments/kms/xks/v1"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> WorldCA:
    return WorldCA(tmp_path_factory.mktemp("proxy-client-ca"))


@pytest.fixture(scope="module")
def proxy(ca: WorldCA) -> Iterator[XksProxyServer]:
    model = Proxy(name="p", key_manager="km", public_hostnames=[HOST], uri_path_prefix="/payments",
                  credentials=[ProxyCredential(AK, SK)])
    km = KeyManager(name="km", keys=[KeyManagerKey(id="key-1"),
                                     KeyManagerKey(id="key-off", status="DISABLED")])
    server = XksProxyServer(model, km, REGION, ca, certificate_hosts=[HOST]).start()
    yield server
    server.stop()


def client(ca: WorldCA, proxy: XksProxyServer, secret: str = SK, path: str = PATH, **kw) -> XksProxyClient:
    return XksProxyClient(f"https://{HOST}", path, REGION, AK, SecretValue(secret, "env:XKS_SECRET"),
                          ssl_context=ca.client_context(), connect_to=f"127.0.0.1:{proxy.port}", **kw)


def test_health_is_accepted_and_reports_the_fleet(ca, proxy):
    resp = client(ca, proxy).health()
    assert resp.ok, resp
    assert resp.status == 200 and resp.error_name == ""
    assert resp.body["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE"
    assert resp.latency_ms > 0


def test_wrong_secret_is_judged_by_error_name(ca, proxy):
    resp = client(ca, proxy, secret=base64.b64encode(b"x" * 32).decode()).health()
    assert not resp.ok
    assert resp.error_name == "AuthenticationFailedException"


def test_wrong_path_gives_invalid_uri_path(ca, proxy):
    resp = client(ca, proxy, path="/other/kms/xks/v1").health()
    assert resp.error_name == "InvalidUriPathException"


@pytest.mark.parametrize(("fault", "status", "error_name"), [("throttling", 429, "ThrottlingException"),
                                                          ("dependency_timeout", 503, "DependencyTimeoutException")])
def test_throttling_and_dependency_timeout_are_judged_by_error_name(ca, proxy, fault, status, error_name):
    """Preflight blocks on these (KMS: XksProxyUriUnreachableException); the client only reports them."""
    proxy.set_fault(fault)
    try:
        resp = client(ca, proxy).health()
    finally:
        proxy.clear_fault(fault)
    assert (resp.status, resp.error_name, resp.ok) == (status, error_name, False)
    assert client(ca, proxy).health().ok


def test_key_metadata(ca, proxy):
    c = client(ca, proxy)
    enabled = c.key_metadata("key-1")
    assert enabled.ok and enabled.body["keyStatus"] == "ENABLED"
    assert set(enabled.body["keyUsage"]) == {"ENCRYPT", "DECRYPT"}
    assert c.key_metadata("key-off").body["keyStatus"] == "DISABLED"
    missing = c.key_metadata("no-such-key")
    assert missing.error_name == "KeyNotFoundException" and not missing.ok


def test_hostname_is_checked_against_the_endpoint_host_not_the_dialled_ip(ca, proxy):
    other = XksProxyClient("https://not-this-host.example.com", PATH, REGION, AK, SecretValue(SK, "env:X"),
                           ssl_context=ca.client_context(), connect_to=f"127.0.0.1:{proxy.port}")
    with pytest.raises(ProxyError) as err:
        other.health()
    assert err.value.kind == "tls"


def test_connection_refused_is_a_proxy_error_without_the_secret(ca, proxy):
    c = XksProxyClient(f"https://{HOST}", PATH, REGION, AK, SecretValue(SK, "env:X"),
                       ssl_context=ca.client_context(), connect_to="127.0.0.1:1", timeout=1.0)
    with pytest.raises(ProxyError) as err:
        c.health()
    assert err.value.kind in {"connect", "timeout"}
    assert SK not in str(err.value) and SK not in repr(err.value)


def test_secret_never_in_repr(ca, proxy):
    c = client(ca, proxy)
    assert SK not in repr(c) and "redacted" in repr(c)
    assert SK not in repr(c.health())


def test_signature_shape_verified_independently():
    c = XksProxyClient(f"https://{HOST}", PATH, REGION, AK, SecretValue(SK, "env:X"))
    payload = json.dumps({"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "KmsHealthCheck"}}).encode()
    url = f"https://{HOST}{PATH}/health"
    headers = c._sign(url, payload)
    auth = headers["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AK}/")
    assert f"/{REGION}/kms-xks-proxy/aws4_request" in auth
    assert "host" in auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert SK not in json.dumps(headers)
    # The proxy's own verifier (a separate implementation) accepts it; a changed body is rejected.
    wire = [("Host", HOST), *headers.items()]
    verify_request("POST", urlsplit(url).path, wire, payload, [(AK, SK)], REGION)
    with pytest.raises(SigV4Error):
        verify_request("POST", urlsplit(url).path, wire, payload + b" ", [(AK, SK)], REGION)


def test_parse_rules():
    assert _parse(200, b'{"errorName": "InternalException"}', 1).ok is False
    assert _parse(200, b'{"errorName": "InternalException"}', 1).error_name == "InternalException"
    assert _parse(500, b"<html>", 1).malformed
    assert _parse(200, b"[]", 1).malformed
    assert _parse(200, b'{"xksProxyFleetSize": 1}', 1).ok
    assert parse_hostport("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_hostport("host") == ("host", 443)
    assert parse_hostport("[::1]:9") == ("::1", 9)


def test_endpoint_must_be_https():
    with pytest.raises(ValueError):
        XksProxyClient("http://h.example.com", PATH, REGION, AK, SecretValue(SK, "env:X"))
