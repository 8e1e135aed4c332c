"""The XKS proxy API bodies and crypto, apart from HTTP: validation, errors, AES-256-GCM, CDIV.

Split from `xks.proxy` (transport, TLS, SigV4, faults) so each part stays readable. Everything here
follows the XKS proxy API spec v1.0.3: error names and HTTP codes from its table, the AAD layout from
its Encrypt section, the ciphertext data integrity value (CDIV) from its Appendix C.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from migrator.rehearsal.world.model import KeyManager, KeyManagerKey, Proxy

API_PATH = "/kms/xks/v1"
OPERATIONS = {"health": "GetHealthStatus", "metadata": "GetKeyMetadata", "encrypt": "Encrypt",
              "decrypt": "Decrypt"}
# Vendor housekeeping bytes returned with every ciphertext (<= 20 bytes); the spec's own example value.
CIPHERTEXT_METADATA = b"key_version=1"
MAX_AAD = 8192  # the spec's required minimum; larger is "UnsupportedOperationException"
MAX_PLAINTEXT = 65536
EKM_FLEET = (("ekm-1", "xksmigrate rehearsal EKM 1.0"), ("ekm-2", "xksmigrate rehearsal EKM 1.0"))


class XksError(Exception):
    """One spec error: HTTP status, errorName and a printable-ASCII errorMessage (< 512 characters)."""

    def __init__(self, status: int, name: str, message: str = ""):
        super().__init__(f"{status} {name}: {message}")
        self.status, self.name = status, name
        self.message = "".join(c for c in message if " " <= c <= "~")[:511]

    def body(self) -> bytes:
        payload = {"errorName": self.name}
        if self.message:
            payload["errorMessage"] = self.message
        return json.dumps(payload).encode()


def _invalid(message: str) -> XksError:
    return XksError(400, "ValidationException", message)


def _bad_ciphertext(message: str) -> XksError:
    return XksError(400, "InvalidCiphertextException", message)


# ------------------------------------------------------------------------------------------ crypto
def key_material(key_manager_name: str, key_id: str) -> bytes:
    """The 32-byte AES key of `key_id`: a pure function of (key manager, key id), shared by every proxy
    in front of that key manager, in any process."""
    return hashlib.sha256(f"xks-rehearsal/{key_manager_name}/{key_id}".encode()).digest()


def gcm_aad(aad: bytes, ciphertext_metadata: bytes) -> bytes:
    """The AAD given to AES-GCM, per the spec's Encrypt section: 2-byte big-endian length of the AAD ||
    AAD || 1-byte length of ciphertextMetadata || ciphertextMetadata. The lengths stop a caller from
    moving bytes between the two fields and still decrypting."""
    if len(aad) > 0xFFFF or len(ciphertext_metadata) > 0xFF:
        raise ValueError("AAD or ciphertextMetadata too long")
    return struct.pack(">H", len(aad)) + aad + struct.pack(">B", len(ciphertext_metadata)) + ciphertext_metadata


def ciphertext_data_integrity_value(aad: bytes, ciphertext_metadata: bytes, iv: bytes, ciphertext: bytes,
                                    tag: bytes) -> str:
    """base64(SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag)), spec Appendix C (plain
    concatenation, no lengths); KMS recomputes it and rejects an Encrypt answer that differs."""
    return base64.b64encode(hashlib.sha256(aad + ciphertext_metadata + iv + ciphertext + tag).digest()).decode()


def encrypt(key: bytes, plaintext: bytes, aad: bytes,
            ciphertext_metadata: bytes = CIPHERTEXT_METADATA) -> tuple[bytes, bytes, bytes]:
    """AES-256-GCM with a fresh 12-byte IV: (iv, ciphertext, tag)."""
    iv = os.urandom(12)
    sealed = AESGCM(key).encrypt(iv, plaintext, gcm_aad(aad, ciphertext_metadata))
    return iv, sealed[:-16], sealed[-16:]


def decrypt(key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes, ciphertext_metadata: bytes) -> bytes:
    """Raises cryptography's InvalidTag when anything authenticated was changed."""
    return AESGCM(key).decrypt(iv, ciphertext + tag, gcm_aad(aad, ciphertext_metadata))


# ------------------------------------------------------------------------------------------ requests
def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("The request body is not JSON.") from None
    if not isinstance(data, dict):
        raise _invalid("The request body must be a JSON object.")
    metadata = data.get("requestMetadata")
    if not isinstance(metadata, dict):
        raise _invalid("requestMetadata is required and must be an object.")
    for name in ("kmsRequestId", "kmsOperation"):  # opaque strings: never validate their content
        if not isinstance(metadata.get(name), str) or not metadata[name]:
            raise _invalid(f"requestMetadata.{name} is required and must be a string.")
    return data


def _b64_field(data: dict[str, Any], name: str, *, required: bool) -> bytes | None:
    value = data.get(name)
    if value is None:
        if required:
            raise _invalid(f"{name} is required.")
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{name} is not valid base64.") from None


def _find_key(key_manager: KeyManager, key_id: str) -> KeyManagerKey:
    for key in list(key_manager.keys):
        if key.id == key_id:
            return key
    raise XksError(404, "KeyNotFoundException", "The request was rejected because the specified external key "
                                                "is not found.")


def _usable_key(key_manager: KeyManager, key_id: str, usage: str) -> KeyManagerKey:
    key = _find_key(key_manager, key_id)
    if key.status != "ENABLED":
        raise XksError(400, "InvalidStateException", "The request was rejected because the specified external "
                                                     "key is disabled.")
    if usage not in key.usage:
        raise XksError(400, "InvalidKeyUsageException", f"The specified key does not support {usage}.")
    return key


def _algorithm(data: dict[str, Any]) -> None:
    if data.get("encryptionAlgorithm") != "AES_GCM":
        raise _invalid("encryptionAlgorithm must be AES_GCM.")


def _aad(data: dict[str, Any]) -> bytes:
    aad = _b64_field(data, "additionalAuthenticatedData", required=False) or b""
    if len(aad) > MAX_AAD:
        raise XksError(501, "UnsupportedOperationException", f"additionalAuthenticatedData exceeds {MAX_AAD} bytes.")
    return aad


def health(proxy: Proxy, *, unhealthy: bool) -> dict[str, Any]:
    """GetHealthStatus: one proxy, two key manager nodes, all reporting the proxy's (live) health."""
    status = "UNAVAILABLE" if unhealthy else proxy.health
    return {
        "xksProxyFleetSize": 1,
        "xksProxyVendor": "xksmigrate",
        "xksProxyModel": "xksmigrate rehearsal XKS proxy 1.0",
        "ekmVendor": "xksmigrate",
        "ekmFleetDetails": [{"id": f"{proxy.key_manager}-{node}", "model": model, "healthStatus": status}
                            for node, model in EKM_FLEET],
    }


def handle_api(action: str, key_id: str | None, body: bytes, key_manager: KeyManager, proxy: Proxy,
               *, unhealthy: bool = False) -> dict[str, Any]:
    """Answer an authenticated request for `action` (health|metadata|encrypt|decrypt); raise XksError."""
    # GetHealthStatus too needs requestMetadata with kmsRequestId and kmsOperation (the spec's request schema,
    # aws-xks-facts.md "Where the documents disagree" 5), although the spec's error table lists
    # ValidationException for "all except GetHealthStatus": the schema is the more specific text, and
    # KMS always sends both fields, so only a malformed probe meets this.
    data = _parse_body(body)
    if action == "health":
        return health(proxy, unhealthy=unhealthy)
    assert key_id is not None
    if action == "metadata":
        key = _find_key(key_manager, key_id)
        return {"keySpec": "AES_256", "keyUsage": list(key.usage), "keyStatus": key.status}
    _algorithm(data)
    aad = _aad(data)
    if action == "encrypt":
        plaintext = _b64_field(data, "plaintext", required=True)
        assert plaintext is not None
        if len(plaintext) > MAX_PLAINTEXT:
            raise XksError(501, "UnsupportedOperationException", f"plaintext exceeds {MAX_PLAINTEXT} bytes.")
        cdiv_algorithm = data.get("ciphertextDataIntegrityValueAlgorithm")
        if cdiv_algorithm is not None and cdiv_algorithm != "SHA_256":
            raise _invalid("ciphertextDataIntegrityValueAlgorithm must be SHA_256.")
        key = _usable_key(key_manager, key_id, "ENCRYPT")
        iv, ciphertext, tag = encrypt(key_material(key_manager.name, key.id), plaintext, aad)
        answer = {
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "ciphertextMetadata": base64.b64encode(CIPHERTEXT_METADATA).decode(),
            "initializationVector": base64.b64encode(iv).decode(),
            "authenticationTag": base64.b64encode(tag).decode(),
        }
        if cdiv_algorithm is not None:
            answer["ciphertextDataIntegrityValue"] = ciphertext_data_integrity_value(
                aad, CIPHERTEXT_METADATA, iv, ciphertext, tag)
        return answer
    if action == "decrypt":
        ciphertext = _b64_field(data, "ciphertext", required=True)
        iv = _b64_field(data, "initializationVector", required=True)
        tag = _b64_field(data, "authenticationTag", required=True)
        metadata = _b64_field(data, "ciphertextMetadata", required=False) or b""
        assert ciphertext is not None and iv is not None and tag is not None
        if len(metadata) > 20:
            raise _invalid("ciphertextMetadata exceeds 20 bytes.")
        key = _usable_key(key_manager, key_id, "DECRYPT")
        if len(iv) not in (12, 16):
            raise _bad_ciphertext("initializationVector must be 12 or 16 bytes.")
        if len(tag) != 16:
            raise _bad_ciphertext("authenticationTag must be 16 bytes.")
        try:
            plaintext = decrypt(key_material(key_manager.name, key.id), iv, ciphertext, tag, aad, metadata)
        except InvalidTag:
            raise _bad_ciphertext("The request was rejected because the specified ciphertext, or additional "
                                  "authenticated data is corrupted, missing, or otherwise invalid.") from None
        return {"plaintext": base64.b64encode(plaintext).decode()}
    raise XksError(404, "InvalidUriPathException", "unknown operation")
