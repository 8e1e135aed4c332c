"""KMS keys in external key stores: CreateKey, DescribeKey, ListKeys and the crypto operations (facts §3).

Every crypto call really goes to the store's proxy (XKS Encrypt/Decrypt over HTTPS + SigV4, with
requestMetadata naming the key ARN, the KMS operation and request id). The KMS ciphertext blob carries the
key id and the proxy's IV, tag, ciphertext and ciphertextMetadata, so Decrypt works without a KeyId, like
KMS. The encryption context becomes the proxy's additionalAuthenticatedData (canonical JSON, sorted keys).

While a key is unavailable (store not CONNECTED, keys not yet available after connect, or an update still
propagating) crypto fails with `KMSInvalidStateException: <key ARN> is unavailable.`; proxy failures also
surface as KMSInvalidStateException (facts §3), except a wrong ciphertext/context (InvalidCiphertextException).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

from migrator.rehearsal.kms import checks
from migrator.rehearsal.kms import proxy_client as pc
from migrator.rehearsal.kms.errors import KmsError, invalid_state, require
from migrator.rehearsal.world import model
from migrator.rehearsal.world.identity import CALLER_ARN
from migrator.rehearsal.world.state import WorldState

_BLOB_MAGIC = b"XKSW\x01"


def _caller(state: WorldState) -> str:
    return CALLER_ARN.get() or state.world.iam.caller_arn or f"arn:aws:iam::{state.account_id}:user/rehearsal-operator"


def _find_key(state: WorldState, key_ref: Any) -> model.Key:
    if isinstance(key_ref, str):
        key_id = key_ref.rsplit("key/", 1)[-1] if key_ref.startswith("arn:") else key_ref
        for key in state.world.keys:
            if key.key_id == key_id:
                return key
    raise KmsError("NotFoundException", f"Invalid keyId {key_ref}")


def metadata(state: WorldState, key: model.Key) -> dict[str, Any]:
    key_state = state.key_state(key)
    meta: dict[str, Any] = {
        "AWSAccountId": state.account_id, "KeyId": key.key_id, "Arn": state.key_arn(key.key_id),
        "CreationDate": state.key_created.get(key.key_id, state.started_wall), "Enabled": key_state == "Enabled",
        "Description": key.description, "KeyUsage": "ENCRYPT_DECRYPT", "KeyState": key_state,
        "Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": key.keystore, "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT", "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"], "MultiRegion": False,
        "XksKeyConfiguration": {"Id": key.xks_key_id}}
    if key.state == "PendingDeletion":
        scheduled = state.key_deletions.get(key.key_id)
        meta["DeletionDate"] = scheduled[1] if scheduled else state.started_wall + 7 * 86400
    return meta


def describe_key(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    return {"KeyMetadata": metadata(state, _find_key(state, require(p, "KeyId")))}


def schedule_key_deletion(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    """ScheduleKeyDeletion: PendingDeletion for PendingWindowInDays (7-30, default 30) simulated days, then the
    key is gone (so DeleteCustomKeyStore can succeed, facts "Where the documents disagree" 3). Valid while
    the key is Unavailable, i.e. with the store disconnected (facts §3, key-state table)."""
    key = _find_key(state, require(p, "KeyId"))
    days = p.get("PendingWindowInDays", 30)
    if isinstance(days, bool) or not isinstance(days, int) or not 7 <= days <= 30:
        raise KmsError("ValidationException", f"1 validation error detected: Value '{days}' at "
                                              f"'pendingWindowInDays' failed to satisfy constraint: Member must "
                                              f"have value between 7 and 30")
    if key.state == "PendingDeletion":
        raise KmsError("KMSInvalidStateException", f"{state.key_arn(key.key_id)} is pending deletion.")
    deletion_date = state.schedule_key_deletion(key, days)
    return {"KeyId": state.key_arn(key.key_id), "DeletionDate": deletion_date, "KeyState": "PendingDeletion",
            "PendingWindowInDays": days}


def cancel_key_deletion(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    """CancelKeyDeletion: only for a key pending deletion; it becomes Disabled (the API reference)."""
    key = _find_key(state, require(p, "KeyId"))
    if key.state != "PendingDeletion":
        raise KmsError("KMSInvalidStateException", f"{state.key_arn(key.key_id)} is not pending deletion.")
    state.cancel_key_deletion(key)
    return {"KeyId": state.key_arn(key.key_id)}


def list_keys(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    keys = state.world.keys
    start = 0
    if "Marker" in p:
        if not (isinstance(p["Marker"], str) and p["Marker"].isdigit() and int(p["Marker"]) <= len(keys)):
            raise KmsError("InvalidMarkerException", "The marker is not valid.")
        start = int(p["Marker"])
    limit = p.get("Limit", 1000)
    page = keys[start:start + limit]
    out: dict[str, Any] = {"Keys": [{"KeyId": k.key_id, "KeyArn": state.key_arn(k.key_id)} for k in page],
                           "Truncated": False}
    if start + limit < len(keys):
        out.update(NextMarker=str(start + limit), Truncated=True)
    return out


def list_aliases(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    """The world models no aliases: an empty list, as an account without any answers."""
    return {"Aliases": [], "Truncated": False}


def create_key(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    """CreateKey(Origin=EXTERNAL_KEY_STORE): the store must be CONNECTED; KMS asks the proxy GetKeyMetadata.

    Approximation: proxy transport failures and the proxy's retryable answers (ThrottlingException,
    DependencyTimeoutException) map to DependencyTimeoutException, other failures to KMSInternalException;
    the model lists no XKS-specific exception for them.
    """
    if p.get("Origin") != "EXTERNAL_KEY_STORE":
        raise KmsError("UnsupportedOperationException", "The rehearsal world models only EXTERNAL_KEY_STORE keys.")
    if p.get("KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT" or p.get("KeyUsage", "ENCRYPT_DECRYPT") != \
            "ENCRYPT_DECRYPT":
        raise KmsError("UnsupportedOperationException", "External key stores support only SYMMETRIC_DEFAULT keys.")
    store_id, xks_key_id = require(p, "CustomKeyStoreId"), require(p, "XksKeyId")
    rt = state.stores.get(store_id)
    if rt is None:
        raise KmsError("CustomKeyStoreNotFoundException", f"Custom key store {store_id} does not exist.")
    if rt.ks.state != "CONNECTED":
        raise invalid_state(rt.ks, "CreateKey")
    if any(k.keystore == store_id and k.xks_key_id == xks_key_id for k in state.world.keys):
        raise KmsError("XksKeyAlreadyInUseException",
                       f"External key {xks_key_id} is already associated with a KMS key in {store_id}.")
    key_id = state.new_key_id()
    result = _proxy(state, rt.ks, f"/keys/{xks_key_id}/metadata", {"requestMetadata": {
        "awsPrincipalArn": _caller(state), "kmsOperation": "CreateKey", "kmsRequestId": state.new_request_id()}},
        "GetKeyMetadata")
    if result.failure == pc.HTTP_ERROR and result.error_name == "KeyNotFoundException":
        raise KmsError("XksKeyNotFoundException", f"The external key store proxy cannot find {xks_key_id}.")
    if result.failure in (pc.TIMEOUT, pc.UNREACHABLE) or result.error_name in ("ThrottlingException",
                                                                              "DependencyTimeoutException"):
        raise KmsError("DependencyTimeoutException", f"The external key store proxy is unavailable: "
                                                     f"{result.error_name or result.detail}")
    if not result.ok:
        raise KmsError("KMSInternalException", "The external key store proxy rejected GetKeyMetadata.")
    body = result.body
    usage = body.get("keyUsage") or []
    if body.get("keySpec") != "AES_256" or "ENCRYPT" not in usage or "DECRYPT" not in usage \
            or body.get("keyStatus") != "ENABLED":
        raise KmsError("XksKeyInvalidConfigurationException",
                       f"External key {xks_key_id} must be an enabled AES_256 key that can encrypt and decrypt.")
    key = model.Key(key_id=key_id, keystore=store_id, xks_key_id=xks_key_id, description=p.get("Description", ""))
    state.world.keys.append(key)
    state.key_created[key_id] = state.started_wall + state.clock.now() / state.clock.time_scale
    state.log.add("state", "CreateKey", keystore=store_id, to=key.state, detail=key_id)
    return {"KeyMetadata": metadata(state, key)}


def _proxy(state: WorldState, ks: model.KeyStore, suffix: str, body: dict[str, Any], xks_op: str) -> pc.ProxyResult:
    target = checks.Target.of(ks)
    proxy, outcome = checks.resolve(state, target)
    if proxy is None:
        return pc.ProxyResult(pc.UNREACHABLE, detail=outcome.message)
    return checks.call_proxy(state, proxy, target, suffix, body, operation=xks_op, keystore=ks.id)


def _usable_key(state: WorldState, key_ref: Any) -> tuple[model.Key, model.KeyStore]:
    key = _find_key(state, key_ref)
    arn = state.key_arn(key.key_id)
    if key.state == "PendingDeletion":
        raise KmsError("KMSInvalidStateException", f"{arn} is pending deletion.")
    key_state = state.key_state(key)
    if key_state == "Unavailable" or state.propagating(key):
        raise KmsError("KMSInvalidStateException", f"{arn} is unavailable.")
    if key_state == "Disabled":
        raise KmsError("DisabledException", f"{arn} is disabled.")
    return key, state.stores[key.keystore].ks


def _aad(p: dict[str, Any]) -> bytes:
    context = p.get("EncryptionContext") or {}
    if not isinstance(context, dict):
        raise KmsError("ValidationException", "EncryptionContext must be a map of strings.")
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode() if context else b""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _crypto_failure(arn: str, result: pc.ProxyResult) -> KmsError:
    if result.error_name == "InvalidCiphertextException":
        return KmsError("InvalidCiphertextException", "The ciphertext or encryption context is not valid.")
    cause = result.error_name or result.failure
    return KmsError("KMSInvalidStateException", f"{arn} cannot be used: the external key store proxy failed ({cause}).")


def _xks_encrypt(state: WorldState, key: model.Key, ks: model.KeyStore, plaintext: bytes, aad: bytes,
                 operation: str) -> bytes:
    arn = state.key_arn(key.key_id)
    body: dict[str, Any] = {
        "requestMetadata": {"awsPrincipalArn": _caller(state), "kmsKeyArn": arn, "kmsOperation": operation,
                            "kmsRequestId": state.new_request_id()},
        "plaintext": _b64(plaintext), "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256"}
    if aad:
        body["additionalAuthenticatedData"] = _b64(aad)
    result = _proxy(state, ks, f"/keys/{key.xks_key_id}/encrypt", body, "Encrypt")
    if not result.ok:
        raise _crypto_failure(arn, result)
    try:
        r = result.body
        iv, tag = base64.b64decode(r["initializationVector"]), base64.b64decode(r["authenticationTag"])
        ciphertext = base64.b64decode(r["ciphertext"])
        meta = base64.b64decode(r.get("ciphertextMetadata") or "")
        cdiv = r.get("ciphertextDataIntegrityValue")
    except (KeyError, TypeError, ValueError):
        raise KmsError("KMSInvalidStateException", f"{arn} cannot be used: the external key store proxy "
                                                   f"returned an invalid Encrypt response.") from None
    if cdiv is not None and base64.b64decode(cdiv) != hashlib.sha256(aad + meta + iv + ciphertext + tag).digest():
        raise KmsError("KMSInvalidStateException", f"{arn} cannot be used: ciphertextDataIntegrityValue mismatch.")
    fields = [key.key_id.encode(), iv, tag, meta, ciphertext]
    return _BLOB_MAGIC + b"".join(struct.pack(">I", len(f)) + f for f in fields)


def _parse_blob(blob: bytes) -> list[bytes]:
    if not blob.startswith(_BLOB_MAGIC):
        raise KmsError("InvalidCiphertextException", "The ciphertext is not valid.")
    fields, pos = [], len(_BLOB_MAGIC)
    try:
        for _ in range(5):
            (size,) = struct.unpack_from(">I", blob, pos)
            fields.append(blob[pos + 4:pos + 4 + size])
            pos += 4 + size
    except struct.error:
        raise KmsError("InvalidCiphertextException", "The ciphertext is not valid.") from None
    if pos != len(blob):
        raise KmsError("InvalidCiphertextException", "The ciphertext is not valid.")
    return fields


def encrypt(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    key, ks = _usable_key(state, require(p, "KeyId"))
    plaintext = base64.b64decode(require(p, "Plaintext"))
    blob = _xks_encrypt(state, key, ks, plaintext, _aad(p), "Encrypt")
    return {"CiphertextBlob": _b64(blob), "KeyId": state.key_arn(key.key_id),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def decrypt(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    try:
        blob = base64.b64decode(require(p, "CiphertextBlob"))
    except ValueError:
        raise KmsError("InvalidCiphertextException", "The ciphertext is not valid.") from None
    key_id, iv, tag, meta, ciphertext = _parse_blob(blob)
    if "KeyId" in p and _find_key(state, p["KeyId"]).key_id != key_id.decode():
        raise KmsError("IncorrectKeyException", "The key ID in the request does not identify the key that "
                                                "encrypted the ciphertext.")
    key, ks = _usable_key(state, key_id.decode())
    arn = state.key_arn(key.key_id)
    aad = _aad(p)
    body: dict[str, Any] = {
        "requestMetadata": {"awsPrincipalArn": _caller(state), "kmsKeyArn": arn, "kmsOperation": "Decrypt",
                            "kmsRequestId": state.new_request_id()},
        "ciphertext": _b64(ciphertext), "encryptionAlgorithm": "AES_GCM",
        "initializationVector": _b64(iv), "authenticationTag": _b64(tag)}
    if meta:
        body["ciphertextMetadata"] = _b64(meta)
    if aad:
        body["additionalAuthenticatedData"] = _b64(aad)
    result = _proxy(state, ks, f"/keys/{key.xks_key_id}/decrypt", body, "Decrypt")
    if not result.ok:
        raise _crypto_failure(arn, result)
    try:
        plaintext = base64.b64decode(result.body["plaintext"])
    except (KeyError, TypeError, ValueError):
        raise KmsError("KMSInvalidStateException", f"{arn} cannot be used: the external key store proxy "
                                                   f"returned an invalid Decrypt response.") from None
    return {"KeyId": arn, "Plaintext": _b64(plaintext), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def _data_key(state: WorldState, p: dict[str, Any], operation: str) -> tuple[model.Key, bytes, bytes]:
    key, ks = _usable_key(state, require(p, "KeyId"))
    size = p.get("NumberOfBytes") or {"AES_256": 32, "AES_128": 16}.get(p.get("KeySpec", "AES_256"))
    if not isinstance(size, int) or not 1 <= size <= 1024:
        raise KmsError("ValidationException", "Specify KeySpec (AES_256 or AES_128) or NumberOfBytes (1-1024).")
    plaintext = os.urandom(size)
    return key, plaintext, _xks_encrypt(state, key, ks, plaintext, _aad(p), operation)


def generate_data_key(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    key, plaintext, blob = _data_key(state, p, "GenerateDataKey")
    return {"CiphertextBlob": _b64(blob), "Plaintext": _b64(plaintext), "KeyId": state.key_arn(key.key_id)}


def generate_data_key_without_plaintext(state: WorldState, p: dict[str, Any]) -> dict[str, Any]:
    key, _, blob = _data_key(state, p, "GenerateDataKeyWithoutPlaintext")
    return {"CiphertextBlob": _b64(blob), "KeyId": state.key_arn(key.key_id)}
