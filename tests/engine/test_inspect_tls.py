"""TLS judgement on certificates made here with `cryptography`: chain to a KMS root by fingerprint,
host name (CN/SAN, wildcards), dates. No network: judge_chain takes the DER chain a server would send."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from migrator.preflight.tls import hostname_matches, judge_chain
from migrator.preflight.trusted_roots import TrustedRoot

NOW = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
HOST = "myproxy.xks.example.com"


def _name(cn: str, org: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


class Authority:
    def __init__(self, cn: str, org: str = "", signer: Authority | None = None, *, days: int = 3650):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(cn, org)
        issuer = signer or self
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(issuer.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=30)).not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer.key, hashes.SHA256())
        )

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def leaf(self, *, sans: list[str] | None = None, cn: str = HOST, not_before: dt.datetime | None = None,
             not_after: dt.datetime | None = None) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(not_before or NOW - dt.timedelta(days=1))
             .not_valid_after(not_after or NOW + dt.timedelta(days=365)))
        if sans is not None:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
        return b.sign(self.key, hashes.SHA256()).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def kms_root() -> Authority:
    return Authority("Pretend KMS Root", "Acme Trust")


@pytest.fixture(scope="module")
def trusted(kms_root: Authority) -> dict[str, TrustedRoot]:
    """The judgement with a trust list that contains our test root, as if it were one of the 130."""
    return {kms_root.fingerprint: TrustedRoot("pretendkmsroot", "CN=Pretend KMS Root, O=Acme Trust",
                                              kms_root.fingerprint)}


def by_check(findings):
    return {f.check: f for f in findings}


def test_chain_via_intermediate_to_a_kms_root_passes(kms_root, trusted):
    inter = Authority("Acme Issuing CA", "Acme Trust", signer=kms_root)
    leaf = inter.leaf(sans=[HOST])
    got = by_check(judge_chain(HOST, [leaf, inter.der], now=NOW, system_roots_der=[kms_root.der], trusted=trusted))
    assert got["tls.trusted_root"].status == "pass"
    assert got["tls.trusted_root"].detail["chain"] == [HOST, "Acme Issuing CA", "Pretend KMS Root"]
    assert got["tls.hostname"].status == "pass"
    assert got["tls.expiry"].status == "pass"


def test_root_sent_by_the_server_is_judged_by_fingerprint_too(kms_root, trusted):
    leaf = kms_root.leaf(sans=[HOST])
    got = by_check(judge_chain(HOST, [leaf, kms_root.der], now=NOW, trusted=trusted))
    assert got["tls.trusted_root"].status == "pass"


def test_browser_trusted_root_that_kms_does_not_trust_blocks(trusted):
    browser_root = Authority("Browser Trusted Root", "Other CA")  # in the OS store, not in KMS's list
    leaf = browser_root.leaf(sans=[HOST])
    got = by_check(judge_chain(HOST, [leaf], now=NOW, system_roots_der=[browser_root.der], trusted=trusted))
    assert got["tls.trusted_root"].status == "block"
    assert "not one of the 130" in got["tls.trusted_root"].message


def test_real_os_root_not_in_kms_list_blocks():
    """With the real 130 fingerprints: a root the OS trusts but KMS does not is still a block."""
    import ssl

    from migrator.preflight.trusted_roots import trusted_fingerprints

    fps = trusted_fingerprints()
    outside = [r for r in ssl.create_default_context().get_ca_certs(binary_form=True)
               if hashlib.sha256(r).hexdigest() not in fps]
    inside = [r for r in ssl.create_default_context().get_ca_certs(binary_form=True)
              if hashlib.sha256(r).hexdigest() in fps]
    if not outside or not inside:
        pytest.skip("no OS trust store here")
    # A root served alone: its own fingerprint decides (hostname/expiry are not the point here).
    assert by_check(judge_chain(HOST, [outside[0]]))["tls.trusted_root"].status == "block"
    assert by_check(judge_chain(HOST, [inside[0]]))["tls.trusted_root"].status == "pass"


def test_extra_root_is_trusted_and_says_so(trusted):
    rehearsal = Authority("xksmigrate rehearsal root CA")
    leaf = rehearsal.leaf(sans=[HOST])
    f = by_check(judge_chain(HOST, [leaf], now=NOW, extra_roots_der=[rehearsal.der], trusted=trusted))
    assert f["tls.trusted_root"].status == "pass" and "extra root" in f["tls.trusted_root"].message
    # Without the extra root the same chain is untrusted.
    assert by_check(judge_chain(HOST, [leaf], now=NOW, trusted=trusted))["tls.trusted_root"].status == "block"


def test_self_signed_leaf_blocks(trusted):
    me = Authority(HOST)
    assert by_check(judge_chain(HOST, [me.der], now=NOW, trusted=trusted))["tls.trusted_root"].status == "block"


def test_issuer_named_like_a_kms_root_but_absent_is_unverified():
    """A name is not a fingerprint: the check could not be made, which holds the run (fail closed)."""
    fake = Authority("ISRG Root X1", "Internet Security Research Group")  # name only; the real root is absent
    f = by_check(judge_chain(HOST, [fake.leaf(sans=[HOST])], now=NOW, system_roots_der=[]))
    assert f["tls.trusted_root"].status == "unverified"
    assert "isrgrootx1" in f["tls.trusted_root"].message and "NOT checked" in f["tls.trusted_root"].message
    assert "extra_trusted_roots" in f["tls.trusted_root"].remedy


def test_leaf_served_without_its_intermediate_blocks(kms_root, trusted):
    """The intermediate exists and chains to a KMS root, but the server does not send it: KMS cannot build
    the chain ("incorrect certificate chaining"), even though the root is at hand."""
    inter = Authority("Acme Issuing CA", "Acme Trust", signer=kms_root)
    leaf = inter.leaf(sans=[HOST])
    f = by_check(judge_chain(HOST, [leaf], now=NOW, system_roots_der=[kms_root.der], trusted=trusted))
    root = f["tls.trusted_root"]
    assert root.status == "block"
    assert "missing intermediate" in root.message and "Acme Issuing CA" in root.message
    assert f["tls.trusted_root"].detail["served"] == 1
    # The same leaf with its intermediate passes (the judgement is about what is served).
    served = by_check(judge_chain(HOST, [leaf, inter.der], now=NOW, system_roots_der=[kms_root.der], trusted=trusted))
    assert served["tls.trusted_root"].status == "pass"


def test_wrong_host_blocks(kms_root, trusted):
    leaf = kms_root.leaf(sans=["other.example.com"], cn="other.example.com")
    f = by_check(judge_chain(HOST, [leaf], now=NOW, system_roots_der=[kms_root.der], trusted=trusted))
    assert f["tls.hostname"].status == "block"
    assert HOST in f["tls.hostname"].remedy


def test_cn_only_and_wildcard_san(kms_root, trusted):
    cn_only = kms_root.leaf(cn=HOST)
    assert by_check(judge_chain(HOST, [cn_only], now=NOW, system_roots_der=[kms_root.der],
                                trusted=trusted))["tls.hostname"].status == "pass"
    wild = kms_root.leaf(sans=["*.xks.example.com"], cn="*.xks.example.com")
    assert by_check(judge_chain(HOST, [wild], now=NOW, system_roots_der=[kms_root.der],
                                trusted=trusted))["tls.hostname"].status == "pass"
    assert by_check(judge_chain("a.b.xks.example.com", [wild], now=NOW, system_roots_der=[kms_root.der],
                                trusted=trusted))["tls.hostname"].status == "block"


@pytest.mark.parametrize(("not_before", "not_after", "status"), [
    (NOW - dt.timedelta(days=400), NOW - dt.timedelta(days=1), "block"),
    (NOW - dt.timedelta(days=300), NOW + dt.timedelta(days=10), "warn"),
    (NOW + dt.timedelta(days=2), NOW + dt.timedelta(days=300), "block"),
    (NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=31), "pass"),
])
def test_expiry(kms_root, trusted, not_before, not_after, status):
    leaf = kms_root.leaf(sans=[HOST], not_before=not_before, not_after=not_after)
    f = by_check(judge_chain(HOST, [leaf], now=NOW, system_roots_der=[kms_root.der], trusted=trusted))
    assert f["tls.expiry"].status == status


def test_expiring_intermediate_warns(kms_root, trusted):
    inter = Authority("Short Intermediate", signer=kms_root, days=5)
    leaf = inter.leaf(sans=[HOST])
    f = by_check(judge_chain(HOST, [leaf, inter.der], now=NOW, system_roots_der=[kms_root.der], trusted=trusted))
    assert f["tls.expiry"].status == "warn" and "Short Intermediate" in f["tls.expiry"].message


def test_prefix_names_the_checks(kms_root, trusted):
    leaf = kms_root.leaf(sans=[HOST])
    checks = {f.check for f in judge_chain(HOST, [leaf], now=NOW, system_roots_der=[kms_root.der],
                                           trusted=trusted, prefix="rollback.tls")}
    assert checks == {"rollback.tls.trusted_root", "rollback.tls.hostname", "rollback.tls.expiry"}


@pytest.mark.parametrize(("host", "names", "expected"), [
    ("myproxy.xks.example.com", ["myproxy.xks.example.com"], True),
    ("MyProxy.XKS.example.com", ["myproxy.xks.example.com"], True),
    ("myproxy.xks.example.com", ["*.xks.example.com"], True),
    ("xks.example.com", ["*.xks.example.com"], False),
    ("a.b.xks.example.com", ["*.xks.example.com"], False),
    ("myproxy.xks.example.com", ["*.com"], False),
    ("myproxy.xks.example.com", ["my*.xks.example.com"], False),
    ("myproxy.xks.example.com", [], False),
])
def test_hostname_matches(host, names, expected):
    assert hostname_matches(host, names) is expected


# -- reaching the endpoint: what blocks, and what only this machine's position leaves unverified ---------------

@pytest.mark.parametrize(("private", "kind", "vantage", "mapped", "status"), [
    (True, "dns", False, True, "unverified"),    # a private DNS name from outside its VPC
    (True, "timeout", False, True, "unverified"),
    (True, "dns", True, False, "unverified"),    # the vantage point cannot map it
    (True, "connect", True, True, "block"),      # a vantage point reached the NLB: nothing answers there
    (True, "dns", True, True, "block"),          # the probe address itself does not resolve
    (True, "connect", False, True, "block"),     # it resolved here and refused
    (False, "dns", False, True, "block"),        # a public name that does not resolve
    (False, "dns", True, False, "block"),        # ... nor from the vantage point
    (False, "connect", False, True, "block"),    # refused or reset
    (False, "handshake_timeout", False, True, "block"),  # TCP accepted, no TLS within 5 s: far past 250 ms
    (False, "timeout", False, True, "unverified"),  # a SYN timing out may be our own egress firewall
    (False, "timeout", True, True, "block"),     # ... but not through the vantage point chosen to reach it
])
def test_unreachable_is_a_block_unless_only_our_position_is_in_the_way(private, kind, vantage, mapped, status):
    from migrator.preflight.tls import _unreachable

    f = _unreachable("rollback.tls", HOST, private=private, kind=kind, why="why", vantage=vantage, mapped=mapped)
    assert (f.check, f.status) == ("rollback.tls.reachable", status)
    assert f.remedy and f.detail["kind"] == kind
    if status == "unverified" and private:
        assert f"--resolve {HOST}=IP:PORT" in f.remedy and "probe" in f.remedy


def test_fetch_chain_tells_refused_from_a_silent_handshake():
    import socket

    from migrator.preflight.tls import TlsProbeError, fetch_chain

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: the kernel refuses
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel accepts TCP; nobody ever speaks TLS
    try:
        with pytest.raises(TlsProbeError) as refused:
            fetch_chain(HOST, closed.getsockname(), timeout=2.0)
        assert refused.value.kind == "connect"
        with pytest.raises(TlsProbeError) as quiet:
            fetch_chain(HOST, silent.getsockname(), timeout=0.3)
        assert quiet.value.kind == "handshake_timeout" and "accepted TCP" in str(quiet.value)
    finally:
        closed.close()
        silent.close()
