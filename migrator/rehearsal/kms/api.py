"""KMS JSON protocol of the rehearsal world: `X-Amz-Target: TrentService.<Op>`, `application/x-amz-json-1.1`.

Errors are `{"__type": "<ExceptionName>", "message": ...}` with HTTP 400 (500 for server faults), so boto3
raises `kms.exceptions.<Name>` and the AWS CLI prints the same names as against AWS. Store operations live
in `stores`, key and crypto operations in `keys`, the errors they raise in `errors`; this module dispatches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrator.rehearsal.kms import keys as kms_keys
from migrator.rehearsal.kms import stores as kms_stores
from migrator.rehearsal.kms.errors import KmsError
from migrator.rehearsal.world.state import WorldState

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

Handler = Callable[[WorldState, dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, Handler] = {
    "CreateCustomKeyStore": kms_stores.create,
    "DescribeCustomKeyStores": kms_stores.describe,
    "ConnectCustomKeyStore": kms_stores.connect,
    "DisconnectCustomKeyStore": kms_stores.disconnect,
    "UpdateCustomKeyStore": kms_stores.update,
    "DeleteCustomKeyStore": kms_stores.delete,
    "CreateKey": kms_keys.create_key,
    "DescribeKey": kms_keys.describe_key,
    "ListKeys": kms_keys.list_keys,
    "ListAliases": kms_keys.list_aliases,
    "ScheduleKeyDeletion": kms_keys.schedule_key_deletion,
    "CancelKeyDeletion": kms_keys.cancel_key_deletion,
    "Encrypt": kms_keys.encrypt,
    "Decrypt": kms_keys.decrypt,
    "GenerateDataKey": kms_keys.generate_data_key,
    "GenerateDataKeyWithoutPlaintext": kms_keys.generate_data_key_without_plaintext,
}


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
    handler = HANDLERS.get(operation)
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
