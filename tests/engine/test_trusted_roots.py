"""The packaged list of roots KMS trusts: exactly the 130 published, parsed by fingerprint."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from migrator.preflight.trusted_roots import (
    load_trusted_roots,
    normalize_fingerprint,
    parse_dn,
    parse_roots,
    root_by_name,
    trusted_fingerprints,
)

# ../shared beside the checkout (as on developer machines and in CI); the check is skipped without it.
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "xks-trusted-root-cas.txt"


def test_exactly_130_distinct_roots():
    roots = load_trusted_roots()
    assert len(roots) == 130
    assert len({r.sha256 for r in roots}) == 130
    assert all(len(r.sha256) == 64 and set(r.sha256) <= set("0123456789abcdef") for r in roots)


def test_known_roots_by_fingerprint():
    fps = trusted_fingerprints()
    isrg = "96bcec06264976f37460779acf28c5a7cfe8a3c0aae11a8ffcee05c0bddf08c6"  # ISRG Root X1
    assert fps[isrg].alias == "isrgrootx1"
    amazon1 = normalize_fingerprint("8E:CD:E6:88:4F:3D:87:B1:12:5B:A3:1A:C3:FC:B1:3D:"
                                    "70:16:DE:7F:57:CC:90:4F:E1:CB:97:C6:AE:98:19:6E")
    assert fps[amazon1].alias == "amazonrootca1"


def test_stray_text_after_a_fingerprint_is_ignored():
    """The published file has '.7' after one SHA256 line; the 32 bytes are still read correctly."""
    fps = trusted_fingerprints()
    fp = "04048028bf1f2864d48f9ad4d83294366a828856553f3b14303f90147f5d40ef"
    assert fps[fp].alias.startswith("autoridaddecertificacionfirmaprofesional")


def test_packaged_copy_matches_the_reference():
    if REFERENCE.exists():
        packaged = Path(__file__).parents[2] / "migrator" / "data" / "xks-trusted-root-cas.txt"
        assert packaged.read_bytes() == REFERENCE.read_bytes()


def test_parse_small_sample():
    text = """Alias name: one
Owner: CN=Root One, O="Acme, Inc.", C=US
Issuer: CN=Root One
Certificate fingerprints:
\t SHA1: 00
\t SHA256: AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99
"""
    [root] = parse_roots(text)
    assert root.alias == "one"
    assert root.sha256 == "aabbccddeeff00112233445566778899" * 2
    assert parse_dn(root.owner) == {"CN": "Root One", "O": "Acme, Inc.", "C": "US"}


def test_root_by_name():
    assert root_by_name("ISRG Root X1", "Internet Security Research Group").alias == "isrgrootx1"
    assert root_by_name("Go Daddy Class 2 Certification Authority", "The Go Daddy Group, Inc.") is not None
    assert root_by_name("xksmigrate rehearsal root CA", "") is None


def test_os_store_has_roots_kms_does_not_trust():
    """Why fingerprints matter: the OS/browser store and KMS's list differ (when an OS store is present)."""
    fps = trusted_fingerprints()
    roots = ssl.create_default_context().get_ca_certs(binary_form=True)
    if not roots:
        return
    inside = [r for r in roots if hashlib.sha256(r).hexdigest() in fps]
    outside = [r for r in roots if hashlib.sha256(r).hexdigest() not in fps]
    assert inside and outside
