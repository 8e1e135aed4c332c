"""What an operator does by hand when a run stops where the tool cannot go on (state `stuck`).

The commands are the AWS CLI's, with the store's real ids filled in, in the order RUNBOOK.md gives
them; `stuck_help` goes into the journal and onto the screen so nobody has to look them up under
pressure. Secrets are never filled in: the operator supplies the old secret from where it lives.
"""

from __future__ import annotations

from typing import Any


def stuck_help(region: str, store_id: str, snapshot: dict[str, Any] | None, last: Any) -> dict[str, Any]:
    state = getattr(last, "state", "unknown")
    error = getattr(last, "error_code", "") or None
    base = f"aws kms --region {region}"
    commands = [f"{base} describe-custom-key-stores --custom-key-store-id {store_id}"]
    if state in ("CONNECTED", "CONNECTING", "FAILED"):
        commands.append(f"{base} disconnect-custom-key-store --custom-key-store-id {store_id}")
    if snapshot:
        update = (f"{base} update-custom-key-store --custom-key-store-id {store_id} "
                  f"--xks-proxy-connectivity {snapshot.get('connectivity')} "
                  f"--xks-proxy-uri-endpoint {snapshot.get('uri_endpoint')} "
                  f"--xks-proxy-uri-path {snapshot.get('uri_path')}")
        if snapshot.get("vpc_endpoint_service_name"):
            update += f" --xks-proxy-vpc-endpoint-service-name {snapshot['vpc_endpoint_service_name']}"
        commands.append(update)
    commands.append(f"{base} connect-custom-key-store --custom-key-store-id {store_id}")
    commands.append(f"{base} describe-custom-key-stores --custom-key-store-id {store_id} "
                    "--query 'CustomKeyStores[0].[ConnectionState,ConnectionErrorCode]'")
    return {"connection_state": state, "connection_error_code": error, "commands": commands,
            "runbook": "RUNBOOK.md#stuck"}
