"""Pseudonyms for a scrubbed capture: a keyed hash per identifier, so relationships survive and names do not.

The same real value always gives the same pseudonym under the same key (the private DNS name still equals the
endpoint host, a shared proxy stays shared, a plan written against real names translates to the twin's), and
each pseudonym keeps its identifier's shape (12 digits for an account, `cks-` and 17 hex digits for a key store,
a UUID for a KMS key, label-by-label host names so a wildcard certificate name still covers its hosts), so the
rehearsal world and the tool accept it exactly as they accept a real one. Without the key the pseudonyms cannot
be linked back to real names by guessing (an HMAC, not a plain hash: 10^12 account ids are easy to try).

`Pseudonyms(None)` is the identity (`capture --no-scrub`: a private twin with real names).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

KEY_BYTES = 32
_KEY_CHECK_LABEL = b"xksmigrate capture key check"
_SERVICE_NAME = re.compile(r"^(com\.amazonaws\.vpce\.[a-z0-9-]+\.)(vpce-svc-[0-9a-z]+)$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")


class CaptureKeyError(ValueError):
    """The capture key cannot be read or made; one line."""


def key_check(key: bytes) -> str:
    """What the world file records of the key: enough to tell the right key from a wrong one, nothing more."""
    return hmac.new(key, _KEY_CHECK_LABEL, hashlib.sha256).hexdigest()[:16]


def load_or_create_key(path: Path) -> bytes:
    """The capture key kept beside the journal (mode 0600), made on the first scrubbed capture."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise CaptureKeyError(f"capture key {path}: cannot read it ({exc})") from None
    key = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
    except FileExistsError:
        return load_or_create_key(path)  # another capture made it first
    except OSError as exc:
        raise CaptureKeyError(f"capture key {path}: cannot create it ({exc.strerror})") from None
    return key


def key_from_text(text: str, source: str) -> bytes:
    """A key given as a secret reference's value: 64 hex digits, or any text of 16+ characters (hashed)."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    if len(text) < 16:
        raise CaptureKeyError(f"{source}: a capture key needs 64 hex digits or at least 16 characters")
    return hashlib.sha256(text.encode()).digest()


class Pseudonyms:
    """Real identifier -> pseudonym of the same shape; the identity when `key` is None."""

    def __init__(self, key: bytes | None):
        self.key = key

    @property
    def scrubbed(self) -> bool:
        return self.key is not None

    def _digest(self, kind: str, value: str) -> bytes:
        assert self.key is not None
        return hmac.new(self.key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def _hex(self, kind: str, value: str, n: int) -> str:
        return self._digest(kind, value).hex()[:n]

    def account(self, value: str) -> str:
        if not self.scrubbed or not _ACCOUNT.match(value):
            return value
        return f"{int.from_bytes(self._digest('account', value)[:8], 'big') % 10**12:012d}"

    def keystore_id(self, value: str) -> str:
        return value if not self.scrubbed or not value else "cks-" + self._hex("keystore", value, 17)

    def key_id(self, value: str) -> str:
        """A KMS key id (a UUID); an alias or ARN through `alias`/`arn`."""
        if not self.scrubbed or not value:
            return value
        if value.startswith("arn:"):
            return self.arn(value)
        if value.startswith("alias/"):
            return "alias/" + self.name("alias", value.removeprefix("alias/"))
        h = self._hex("key", value, 32)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def name(self, kind: str, value: str) -> str:
        """A store, load balancer, role, secret or alias name: `kind` keeps two kinds' names apart."""
        return value if not self.scrubbed or not value else f"{kind[:2]}-{self._hex(kind, value, 10)}"

    def xks_key_id(self, value: str) -> str:
        return value if not self.scrubbed or not value else "k-" + self._hex("xks_key", value, 16)

    def access_key_id(self, value: str) -> str:
        """An XKS proxy credential's access key id (not a secret, but an identifier): 20 base32 characters."""
        if not self.scrubbed or not value:
            return value
        return "XKS" + base64.b32encode(self._digest("access_key", value)).decode()[:17]

    def external_id(self, value: str) -> str:
        return value if not self.scrubbed or not value else "x-" + self._hex("external_id", value, 20)

    def host(self, value: str) -> str:
        """Label by label, so `*.example.com` still covers `a.example.com` and a parent stays a parent."""
        if not self.scrubbed or not value:
            return value
        labels = value.lower().rstrip(".").split(".")
        return ".".join(label if label == "*" else "h" + self._hex("host", label, 8) for label in labels)

    def uri_endpoint(self, value: str) -> str:
        if not self.scrubbed or not value.startswith("https://"):
            return value
        rest = value.removeprefix("https://")
        host, sep, port = rest.partition(":")
        return "https://" + self.host(host) + sep + port

    def path_prefix(self, value: str) -> str:
        """`/payments` -> `/p-…`: each segment before `/kms/xks/v1`."""
        if not self.scrubbed or not value:
            return value
        return "".join("/p" + self._hex("path", seg, 8) for seg in value.strip("/").split("/") if seg)

    def uri_path(self, value: str) -> str:
        if not self.scrubbed or not value:
            return value
        prefix, sep, tail = value.rpartition("/kms/xks/")
        return self.path_prefix(prefix) + sep + tail if sep else value

    def service_id(self, value: str) -> str:
        return value if not self.scrubbed or not value else "vpce-svc-" + self._hex("service", value, 17)

    def service_name(self, value: str) -> str:
        m = _SERVICE_NAME.match(value or "")
        return m.group(1) + self.service_id(m.group(2)) if m and self.scrubbed else value

    def arn(self, value: str) -> str:
        """arn:partition:service:region:account:resource with the account and every resource name replaced
        (the resource type, e.g. `role/` or `secret:`, and `root` kept)."""
        if not self.scrubbed or not value.startswith("arn:"):
            return value
        parts = value.split(":", 5)
        if len(parts) < 6:
            return value
        parts[4] = self.account(parts[4])
        pieces = re.split(r"([/:])", parts[5])
        kind = pieces[0] if len(pieces) > 1 else ""
        out = [kind] if kind else []
        for piece in pieces[1:] if kind else pieces:
            out.append(piece if piece in ("/", ":", "root", "*") or not piece else self.name(kind or "arn", piece))
        parts[5] = "".join(out)
        return ":".join(parts)

    def principal(self, value: str) -> str:
        """An allowed principal: an ARN, an account id, or a service principal (kept: it names AWS, not you)."""
        if value.startswith("arn:"):
            return self.arn(value)
        return self.account(value)

    def secret_ref(self, value: str) -> str:
        """A plan's secret reference: a `secretsmanager:` ARN is the twin's; env:/file: stay as they are."""
        if value.startswith("secretsmanager:arn:"):
            return "secretsmanager:" + self.arn(value.removeprefix("secretsmanager:"))
        return value
