"""Errors of the rehearsal world's KMS, shared by the operation modules (`stores`, `keys`) and the dispatcher (`api`).

A `KmsError` is an answer, not a crash: `name` becomes the JSON `__type` (boto3 raises
`kms.exceptions.<name>`), and the server faults KMS documents get HTTP 500, the rest 400.
"""

from __future__ import annotations

import json
from typing import Any

from migrator.rehearsal.world import model

SERVER_FAULTS = {"KMSInternalException", "DependencyTimeoutException"}


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
