"""What an operator does by hand when a run stops where the tool cannot go on (state `stuck`).

The commands are the AWS CLI's, with the store's real ids filled in, in the order RUNBOOK.md gives
them (rendered by `migrator.preflight.calls`, the one place that knows the flags); `stuck_help` goes
into the journal and onto the screen so nobody has to look them up under pressure. Secrets are never
filled in: the operator supplies the old secret from where it lives.
"""

from __future__ import annotations

from migrator.aws.store_config import Observation, StoreConfig
from migrator.preflight.calls import stuck_commands


def stuck_help(region: str, store_id: str, original: StoreConfig | None, last: Observation | None) -> dict[str, object]:
    """The last observed state, and the commands that put `original` (the snapshot) back."""
    state = last.state if last is not None else "unknown"
    error = (last.error_code if last is not None else "") or None
    return {"connection_state": state, "connection_error_code": error,
            "commands": stuck_commands(region, store_id, original, state), "runbook": "xksmigrate runbook stuck"}
