"""The world CA: each certificate kind fails (or passes) verification for the right reason."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from migrator.rehearsal.world.ca import WRONG_HOST, WorldCA

HOSTS = ["myproxy.xks.example.com", "*.vpce.example.com"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> WorldCA:
    return WorldCA(tmp_path_factory.mktemp("ca"))


def _handshake(ca: WorldCA, server_ctx: ssl.SSLContext, server_hostname: str) -> ssl.SSLSocket:
    """Handshake over a loopback socket pair; returns the client side (caller closes it)."""
    server_sock, client_sock = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True):
                pass
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        return ca.client_context().wrap_socket(client_sock, server_hostname=server_hostname)
    except BaseException:
        client_sock.close()
        raise
    finally:
        thread.join(timeout=10)
        server_sock.close()


@pytest.mark.parametrize("server_hostname", ["myproxy.xks.example.com", "abc.vpce.example.com"])
def test_valid_certificate_verifies_for_every_san(ca: WorldCA, server_hostname: str) -> None:
    with _handshake(ca, ca.server_context(HOSTS, "valid"), server_hostname) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        names = [v for k, v in tls.getpeercert()["subjectAltName"]]
    assert names == HOSTS


@pytest.mark.parametrize(("kind", "code", "words"), [
    ("expired", 10, "expired"),
    ("wrong_host", 62, "Hostname mismatch"),
    ("untrusted_ca", 20, "unable to get local issuer certificate"),
    ("self_signed", 18, "self-signed certificate"),
])
def test_bad_certificate_kinds_fail_verification_with_the_right_reason(
        ca: WorldCA, kind: str, code: int, words: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _handshake(ca, ca.server_context(HOSTS, kind), HOSTS[0])
    assert info.value.verify_code == code
    assert words in info.value.verify_message


def test_certificate_contents(ca: WorldCA) -> None:
    chain, key = ca.issue(HOSTS, "expired", days_valid=30)
    cert = x509.load_pem_x509_certificate(chain.read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_after_utc < now - dt.timedelta(hours=23)
    assert cert.not_valid_after_utc > now - dt.timedelta(days=2)
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.stat().st_mode & 0o077 == 0

    wrong = x509.load_pem_x509_certificate(ca.issue(HOSTS, "wrong_host")[0].read_bytes())
    san = wrong.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [WRONG_HOST]

    valid = x509.load_pem_x509_certificate(ca.issue(HOSTS, "valid", days_valid=10)[0].read_bytes())
    cn = valid.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == HOSTS[0]
    assert valid.not_valid_after_utc - now < dt.timedelta(days=10, minutes=1)


def test_ip_address_host_gets_an_ip_san(ca: WorldCA) -> None:
    with _handshake(ca, ca.server_context(["127.0.0.1"]), "127.0.0.1") as tls:
        assert ("IP Address", "127.0.0.1") in tls.getpeercert()["subjectAltName"]


def test_issue_is_cached_per_hosts_kind_and_days(ca: WorldCA) -> None:
    first = ca.issue(HOSTS, "valid", 365)
    assert ca.issue(list(HOSTS), "valid", 365) == first
    assert ca.issue(HOSTS, "valid", 30) != first
    assert ca.issue(HOSTS, "self_signed", 365) != first


def test_bad_kind_or_no_host_is_refused(ca: WorldCA) -> None:
    with pytest.raises(ValueError, match="certificate kind"):
        ca.issue(HOSTS, "revoked")
    with pytest.raises(ValueError, match="at least one host"):
        ca.issue([])


def test_directory_is_reused_and_bundle_holds_only_the_root(tmp_path: Path) -> None:
    first = WorldCA(tmp_path)
    second = WorldCA(tmp_path)
    assert second.ca_pem == first.ca_pem
    bundle = first.ca_bundle_path.read_bytes()
    assert bundle == first.ca_pem
    assert bundle.count(b"BEGIN CERTIFICATE") == 1
    # A certificate from the first instance verifies with the second instance's trust anchor.
    with _handshake(second, first.server_context(["reuse.example.com"]), "reuse.example.com"):
        pass


def test_client_context_does_not_trust_system_roots(ca: WorldCA) -> None:
    ctx = ca.client_context()
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(ctx.get_ca_certs()) == 1


def test_temporary_directory_is_removed_on_cleanup() -> None:
    ca = WorldCA()
    directory = ca.directory
    assert ca.ca_bundle_path.exists()
    ca.cleanup()
    assert not directory.exists()
