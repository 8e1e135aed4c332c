"""Secrets Manager GetSecretValue for plans that reference `secretsmanager:ARN` (JSON 1.1 protocol).

Only the secrets of `model.World.secrets` exist. A secret is found by name, by its ARN, or by its ARN with
the random six-character suffix real ARNs carry. A secret tied to a key store (`keystore = ID`) holds that
store's current proxy secret, read at each call, so it stays the store's through any change. The value is
never logged.
"""

from __future__ import annotations

import json
from typing import Any

from migrator.rehearsal.world.state import WorldState


def _error(name: str, message: str) -> tuple[int, bytes, str]:
    return 400, json.dumps({"__type": name, "message": message}).encode(), name


def handle_secrets(state: WorldState, operation: str, body: bytes) -> tuple[int, bytes, str]:
    """(status, body, error name or "")."""
    if operation != "GetSecretValue":
        return _error("UnknownOperationException", f"The rehearsal world does not implement {operation}.")
    try:
        params: Any = json.loads(body or b"{}")
    except ValueError:
        params = None
    if not isinstance(params, dict) or not isinstance(params.get("SecretId"), str):
        return _error("InvalidParameterException", "SecretId is required.")
    wanted = params["SecretId"]
    with state.lock:
        for secret in state.world.secrets:
            arn = secret.arn(state.region, state.account_id)
            if wanted in (secret.name, arn) or (wanted.startswith(arn + "-") and len(wanted) == len(arn) + 7):
                store = next((ks for ks in state.world.keystores if ks.id == secret.keystore), None)
                return 200, json.dumps({
                    "ARN": arn, "Name": secret.name, "VersionId": "00000000-0000-4000-8000-000000000001",
                    "SecretString": store.secret if store is not None else secret.value,
                    "VersionStages": ["AWSCURRENT"], "CreatedDate": state.started_wall}).encode(), ""
    return _error("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
