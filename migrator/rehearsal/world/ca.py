"""The rehearsal world's certificate authority.

Real KMS only talks to a proxy whose certificate chains to a public CA and names the endpoint host.
The world needs the failure cases too (expired, wrong host, unknown CA, self-signed, a chain that lacks
its intermediate), so one CA here issues every kind on demand, and `client_context()` is the one trust
anchor the world's KMS uses. Keys are EC P-256 because they are fast to generate; trustme cannot
back-date certificates.

Intermediates: "via_intermediate" and "missing_intermediate" leaves are signed by an intermediate CA
(itself signed by the root); the first is served as leaf + intermediate, the second as the leaf alone, so a
client that trusts only the root cannot build the chain ("unable to get local issuer certificate"), the
"incorrect certificate chaining" of the KMS troubleshooting page (aws-xks-facts.md §5).

`server_tls_context()` also makes the TLS-version-limited servers of `Proxy.tls_max_version`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import secrets
import ssl
import tempfile
import threading
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from migrator.rehearsal.world.model import CERTIFICATE_KINDS, TLS_VERSIONS

WRONG_HOST = "wrong-host.invalid.example"
_ROOT_NAME = "xksmigrate rehearsal root CA"
_UNTRUSTED_NAME = "xksmigrate rehearsal untrusted CA"
_INTERMEDIATE_NAME = "xksmigrate rehearsal intermediate CA"
_VIA_INTERMEDIATE = ("via_intermediate", "missing_intermediate")
_CN_MAX = 64  # X.520 upper bound on commonName; longer names live only in the SAN


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_atomic(path: Path, data: bytes, private: bool = False) -> None:
    """Write via rename so a second process reusing the directory never reads half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _name(common_name: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xksmigrate rehearsal")]
    if 0 < len(common_name) <= _CN_MAX:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


class _Authority:
    """One CA key and certificate, loaded from `directory` or created there."""

    def __init__(self, directory: Path, stem: str, common_name: str, parent: _Authority | None = None):
        self.cert_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}.key"
        self.key: ec.EllipticCurvePrivateKey
        if self.cert_path.exists() and key_path.exists():
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC private key")
            self.key = loaded
            return
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        # A root may sign one intermediate (path length 1); an intermediate signs leaves only.
        issuer_name = parent.cert.subject if parent else _name(common_name)
        signer = parent.key if parent else self.key
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(issuer_name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0 if parent else 1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
        )
        if parent is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)
        self.cert = builder.sign(signer, hashes.SHA256())
        _write_atomic(key_path, _key_pem(self.key), private=True)
        _write_atomic(self.cert_path, self.cert.public_bytes(serialization.Encoding.PEM))


class WorldCA:
    """Issues proxy certificates of every `CERTIFICATE_KINDS` kind; trusted by `client_context()` only.

    `directory` is reused when it already holds the CA (so a proxy in another process can share the
    trust anchor); None means a private temporary directory removed with this object.
    """

    def __init__(self, directory: Path | None = None):
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="xksmigrate-ca-")
            directory = Path(self._tmp.name)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "issued").mkdir(exist_ok=True)
        self._root = _Authority(self.directory, "root-ca", _ROOT_NAME)
        self._untrusted = _Authority(self.directory, "untrusted-ca", _UNTRUSTED_NAME)
        self.ca_pem: bytes = self._root.cert.public_bytes(serialization.Encoding.PEM)
        self.ca_bundle_path: Path = self.directory / "ca-bundle.pem"
        if not self.ca_bundle_path.exists() or self.ca_bundle_path.read_bytes() != self.ca_pem:
            _write_atomic(self.ca_bundle_path, self.ca_pem)
        self._intermediate: _Authority | None = None  # made on first use (older CA directories lack it)
        self._issued: dict[tuple[tuple[str, ...], str, int], tuple[Path, Path]] = {}
        self._server_contexts: dict[tuple[tuple[str, ...], str, int, str], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    @property
    def intermediate_pem(self) -> bytes:
        """The intermediate CA certificate (PEM): what a "missing_intermediate" proxy fails to send."""
        with self._lock:
            return self._intermediate_authority().cert.public_bytes(serialization.Encoding.PEM)

    def _intermediate_authority(self) -> _Authority:
        """The intermediate signed by the root (call under `_lock`)."""
        if self._intermediate is None:
            constraints = self._root.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if constraints.path_length == 0:
                raise ValueError(f"{self._root.cert_path}: this root CA (from an older xksmigrate) cannot sign an "
                                 f"intermediate; use a new CA directory for intermediate certificate kinds")
            self._intermediate = _Authority(self.directory, "intermediate-ca", _INTERMEDIATE_NAME, self._root)
        return self._intermediate

    def issue(self, hosts: list[str], kind: str = "valid", days_valid: int = 365) -> tuple[Path, Path]:
        """(certificate chain PEM, private key PEM) for `hosts`; cached per (hosts, kind, days)."""
        if kind not in CERTIFICATE_KINDS:
            raise ValueError(f"certificate kind must be one of {', '.join(CERTIFICATE_KINDS)}; got {kind!r}")
        if not hosts:
            raise ValueError("a certificate needs at least one host")
        cache_key = (tuple(hosts), kind, int(days_valid))
        with self._lock:
            if cache_key not in self._issued:
                self._issued[cache_key] = self._issue(list(hosts), kind, int(days_valid))
            return self._issued[cache_key]

    def server_context(self, hosts: list[str], kind: str = "valid", days_valid: int = 365,
                       tls_max_version: str = "1.3") -> ssl.SSLContext:
        """A server-side TLS context presenting the certificate `issue()` makes (see `server_tls_context`); cached."""
        cache_key = (tuple(hosts), kind, int(days_valid), tls_max_version)
        chain, key = self.issue(hosts, kind, days_valid)
        with self._lock:
            ctx = self._server_contexts.get(cache_key)
            if ctx is None:
                ctx = self._server_contexts[cache_key] = server_tls_context(chain, key, tls_max_version)
            return ctx

    def client_context(self) -> ssl.SSLContext:
        """What the world's KMS trusts: this root only, TLS >= 1.2, hostname checked."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem.decode("ascii"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def cleanup(self) -> None:
        """Remove the temporary directory (only when this object created it)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _issue(self, hosts: list[str], kind: str, days_valid: int) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=days_valid)
        if kind == "expired":
            not_before, not_after = now - dt.timedelta(days=days_valid + 1), now - dt.timedelta(days=1)
        names = [WRONG_HOST] if kind == "wrong_host" else hosts
        subject = _name(names[0])
        if kind == "self_signed":
            issuer_name, signer, issuer_public = subject, key, key.public_key()
        else:
            authority = (self._untrusted if kind == "untrusted_ca" else
                         self._intermediate_authority() if kind in _VIA_INTERMEDIATE else self._root)
            issuer_name, signer, issuer_public = authority.cert.subject, authority.key, authority.key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
            .sign(signer, hashes.SHA256())
        )
        # The chain is the leaf (plus the intermediate for "via_intermediate"): like a proxy behind a public
        # CA, it never sends the root, so a client that lacks the issuer reports "unable to get local issuer
        # certificate" -- which is also what "missing_intermediate" (leaf alone) earns.
        digest = hashlib.sha256(repr((hosts, kind, days_valid)).encode()).hexdigest()[:12]
        stem = f"{kind}-{digest}-{secrets.token_hex(3)}"
        chain_path = self.directory / "issued" / f"{stem}.pem"
        key_path = self.directory / "issued" / f"{stem}.key"
        _write_atomic(key_path, _key_pem(key), private=True)
        chain = cert.public_bytes(serialization.Encoding.PEM)
        if kind == "via_intermediate":
            chain += self._intermediate_authority().cert.public_bytes(serialization.Encoding.PEM)
        _write_atomic(chain_path, chain)
        return chain_path, key_path


_TLS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
        "1.3": ssl.TLSVersion.TLSv1_3}


def server_tls_context(chain: Path, key: Path, tls_max_version: str = "1.3") -> ssl.SSLContext:
    """A server context offering TLS 1.2 up to `tls_max_version` (one of TLS_VERSIONS).

    "1.0"/"1.1" make a real TLS 1.0(-1.1)-only server: OpenSSL 3 refuses those versions at security level
    1 and above, so this one context drops to level 0 (old SHA-1 suites); every client that insists on
    TLS >= 1.2, as KMS does ("Verify that the XKS proxy supports TLS 1.2 or 1.3", aws-xks-facts.md §2.4),
    fails the handshake with a protocol-version alert.
    """
    if tls_max_version not in TLS_VERSIONS:
        raise ValueError(f"tls_max_version must be one of {', '.join(TLS_VERSIONS)}; got {tls_max_version!r}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # ssl.TLSVersion.TLSv1/TLSv1_1 are deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        if tls_max_version in ("1.0", "1.1"):
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = _TLS[tls_max_version]
    ctx.load_cert_chain(chain, key)
    return ctx
