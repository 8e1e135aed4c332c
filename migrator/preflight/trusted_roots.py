"""The root CAs AWS KMS trusts for XKS proxy certificates, matched by SHA-256 fingerprint.

KMS accepts a proxy certificate only if its chain ends in one of 130 published roots
(`data/xks-trusted-root-cas.txt`, from aws/aws-kms-xksproxy-api-spec). That list is narrower than a
browser's trust store, so "the browser is happy" proves nothing: we compare the fingerprint of the
root certificate itself. Owner names are kept too, so a chain whose root is not available locally
can at least be matched by name (a weaker, warn-only judgement).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

DATA_FILE = "xks-trusted-root-cas.txt"
EXPECTED_COUNT = 130
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")


@dataclass(frozen=True)
class TrustedRoot:
    alias: str
    owner: str  # subject DN as printed by Java keytool (most specific attribute first)
    sha256: str  # lowercase hex, no colons

    def name_key(self) -> tuple[str, str]:
        """(CN or else OU, O) of the owner, for matching an issuer name when the root itself is not at hand."""
        attrs = parse_dn(self.owner)
        return (attrs.get("CN") or attrs.get("OU", ""), attrs.get("O", ""))


def normalize_fingerprint(text: str) -> str:
    """'9A:6E:...' or '9a6e...' -> '9a6e...'."""
    return re.sub(r"[^0-9a-fA-F]", "", text).lower()


def parse_dn(dn: str) -> dict[str, str]:
    """Parse a keytool-style DN (`CN=x, O="a, b", C=US`) into {attr: first value}; quotes honoured."""
    attrs: dict[str, str] = {}
    for part in re.findall(r'\s*([A-Za-z0-9.]+)=("(?:[^"]*)"|[^,]*)(?:,|$)', dn):
        key, value = part[0].upper(), part[1].strip()
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        attrs.setdefault(key, value)
    return attrs


def parse_roots(text: str) -> list[TrustedRoot]:
    """Parse the published list: one block per root with `Alias name:`, `Owner:` and `SHA256:` lines."""
    roots: list[TrustedRoot] = []
    alias = owner = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Alias name:"):
            alias, owner = stripped.split(":", 1)[1].strip(), None
        elif stripped.startswith("Owner:"):
            owner = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("SHA256:") and alias is not None:
            # Match the 32 colon-separated bytes only: the published file has stray text after one of them.
            match = _FINGERPRINT.search(stripped)
            fingerprint = normalize_fingerprint(match.group(0)) if match else ""
            roots.append(TrustedRoot(alias=alias, owner=owner or "", sha256=fingerprint))
            alias = owner = None
    return roots


@lru_cache(maxsize=1)
def load_trusted_roots() -> tuple[TrustedRoot, ...]:
    """The 130 roots shipped in the package; raises if the data file is damaged (a wrong list is worse than none)."""
    text = resources.files("migrator").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    roots = parse_roots(text)
    if len(roots) != EXPECTED_COUNT or len({r.sha256 for r in roots}) != EXPECTED_COUNT:
        raise RuntimeError(f"{DATA_FILE}: expected {EXPECTED_COUNT} distinct roots, found {len(roots)}")
    if any(len(r.sha256) != 64 for r in roots):
        raise RuntimeError(f"{DATA_FILE}: a SHA-256 fingerprint is not 32 bytes")
    return tuple(roots)


def trusted_fingerprints() -> dict[str, TrustedRoot]:
    """sha256 hex -> root."""
    return {r.sha256: r for r in load_trusted_roots()}


def root_by_name(common_name: str, org: str) -> TrustedRoot | None:
    """A trusted root whose owner has this CN (or OU when it has no CN) and, when both have one, this O."""
    for root in load_trusted_roots():
        rcn, rorg = root.name_key()
        if rcn and rcn == common_name and (not rorg or not org or rorg == org):
            return root
    return None
