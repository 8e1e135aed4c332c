"""KMS JSON protocol of the rehearsal world: `X-Amz-Target: TrentService.<Op>`, `application/x-amz-json-1.1`.

Errors are `{"__type": "<ExceptionName>", "message": ...}` with HTTP 400 (500 for server faults), so boto3
raises `kms.exceptions.<Name>` and the AWS CLI prints the same names as against AWS. Store operations live
in `kms_stores.py`, key and crypto operations in `kms_keys.py`; this module owns errors and dispatch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrator.rehearsal.world import model
from migrator.rehearsal.world.state import WorldState

SERVER_FAULTS = {"KMSInternalException", "DependencyTimeoutException"}
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


class KmsError(Exception):
    """An error answer; `name` becomes `__type` (boto3: the exception class)."""

    def __init__(self, name: str, message: str, status: int | None = None):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.status = status or (500 if name in SERVER_FAULTS else 400)

    def body(self) -> bytes:
        return json.dumps({"__type": self.name, "message": self.message}).encode()


def require(p: dict[str, Any], name: str) -> Any:
    value = p.get(name)
    if value is None or value == "":
        raise KmsError("ValidationException", f"1 validation error detected: Value null at '{name}' failed to "
                                              f"satisfy constraint: Member must not be null")
    return value


def invalid_state(ks: model.KeyStore, operation: str) -> KmsError:
    return KmsError("CustomKeyStoreInvalidStateException",
                    f"{operation} is not valid for custom key store {ks.id} in connection state {ks.state}.")


Handler = Callable[[WorldState, dict[str, Any]], dict[str, Any]]
_HANDLERS: dict[str, Handler] = {}


def handlers() -> dict[str, Handler]:
    """Operation name -> handler (built on first use: the operation modules import this one)."""
    if not _HANDLERS:
        from migrator.rehearsal.kms import keys as kms_keys
        from migrator.rehearsal.kms import stores as kms_stores

        _HANDLERS.update({
            "CreateCustomKeyStore": kms_stores.create,
            "DescribeCustomKeyStores": kms_stores.describe,
            "ConnectCustomKeyStore": kms_stores.connect,
            "DisconnectCustomKeyStore": kms_stores.disconnect,
            "UpdateCustomKeyStore": kms_stores.update,
            "DeleteCustomKeyStore": kms_stores.delete,
            "CreateKey": kms_keys.create_key,
            "DescribeKey": kms_keys.describe_key,
            "ListKeys": kms_keys.list_keys,
            "Encrypt": kms_keys.encrypt,
            "Decrypt": kms_keys.decrypt,
            "GenerateDataKey": kms_keys.generate_data_key,
            "GenerateDataKeyWithoutPlaintext": kms_keys.generate_data_key_without_plaintext,
        })
    return _HANDLERS


@dataclass
class Answer:
    status: int
    body: bytes
    error: str = ""  # exception name, "" on success
    keystore: str | None = None  # for the log


def _keystore_of(state: WorldState, params: dict[str, Any]) -> str | None:
    """The key store a request is about, for the log (never a secret)."""
    value = params.get("CustomKeyStoreId")
    if isinstance(value, str):
        return value
    key_id = params.get("KeyId")
    if isinstance(key_id, str):
        key_id = key_id.rsplit("/", 1)[-1]
        return next((k.keystore for k in state.world.keys if k.key_id == key_id), None)
    return None


def handle_kms(state: WorldState, operation: str, body: bytes) -> Answer:
    """Run one KMS operation under the world lock (the caller holds it or not; the lock is re-entrant)."""
    try:
        params = json.loads(body or b"{}")
        if not isinstance(params, dict):
            raise ValueError
    except ValueError:
        err = KmsError("SerializationException", "The request body is not a JSON object.")
        return Answer(err.status, err.body(), err.name)
    handler = handlers().get(operation)
    if handler is None:
        err = KmsError("UnknownOperationException", f"The rehearsal world does not implement KMS {operation}.")
        return Answer(err.status, err.body(), err.name)
    with state.lock:
        state.advance()
        keystore = _keystore_of(state, params)
        try:
            result = handler(state, params)
        except KmsError as err:
            return Answer(err.status, err.body(), err.name, keystore)
        keystore = keystore or result.get("CustomKeyStoreId")
    return Answer(200, json.dumps(result).encode(), "", keystore)
