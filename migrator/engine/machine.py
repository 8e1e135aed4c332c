"""The migration procedure as one table: states, triggers, and where each trigger may fire.

The machine validates every move; it never performs a side effect. The engine persists a move in
`before_state_change` (journal first), so if the journal write fails the in-memory state does not
change either. `transitions` does not roll back a state change when a later callback raises, which
is why nothing runs after the change: the persisted state, not the in-memory machine, is the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Forward path, in order. Before `disconnecting` nothing in AWS has changed.
FORWARD = (
    "pending",
    "snapshotted",
    "preflighted",
    "approved",
    "disconnecting",
    "disconnected",
    "updating",
    "updated",
    "connecting",
    "connected",
    "verifying",
    "completed",
)
ROLLBACK = ("rolling_back", "rolled_back")
TERMINAL = ("completed", "rolled_back", "stuck", "blocked")
STATES = (*FORWARD, *ROLLBACK, "stuck", "blocked")

# States in which the store may be disconnected (or about to be): a failure here rolls back.
CRITICAL = ("disconnecting", "disconnected", "updating", "updated", "connecting", "connected", "verifying")
# States in which nothing has been changed yet: a failure here blocks.
UNCHANGED = ("pending", "snapshotted", "preflighted", "approved")

# trigger,            source(s),                         destination
TABLE: list[tuple[str, str | list[str], str]] = [
    ("take_snapshot",     "pending",                         "snapshotted"),
    ("pass_preflight",    "snapshotted",                     "preflighted"),
    ("approve",           "preflighted",                     "approved"),
    ("start_disconnect",  "approved",                        "disconnecting"),
    ("observe_disconnected", "disconnecting",                "disconnected"),
    ("start_update",      "disconnected",                    "updating"),
    ("observe_updated",   "updating",                        "updated"),
    ("start_connect",     "updated",                         "connecting"),
    ("observe_connected", "connecting",                      "connected"),
    ("start_verify",      "connected",                       "verifying"),
    ("verify_ok",         "verifying",                       "completed"),
    ("block",             list(UNCHANGED),                   "blocked"),
    ("fail",              list(CRITICAL),                    "rolling_back"),
    ("operator_rollback", "completed",                       "rolling_back"),
    ("rollback_ok",       "rolling_back",                    "rolled_back"),
    ("rollback_failed",   ["rolling_back", *CRITICAL],       "stuck"),
    ("retry_rollback",    "stuck",                           "rolling_back"),
]

MACHINE_OPTIONS: dict[str, Any] = {
    "states": list(STATES),
    "transitions": [list(row) for row in TABLE],
    "auto_transitions": False,
    "send_event": True,
}


def build(model: Any, initial: str, persist: Callable[[Any], None]) -> Any:
    """Attach the machine to `model`, starting at the persisted `initial` state.

    `persist(event)` runs before every state change; `event.transition.dest` is the new state and
    `event.kwargs` what the engine passed with the trigger.
    """
    from transitions import Machine

    return Machine(model=model, initial=initial, before_state_change=persist, **MACHINE_OPTIONS)


def destination(state: str, trigger: str) -> str | None:
    """Where `trigger` leads from `state`, or None if it may not fire there (no machine needed)."""
    for name, sources, dest in TABLE:
        srcs = [sources] if isinstance(sources, str) else sources
        if name == trigger and state in srcs:
            return dest
    return None


def mermaid() -> str:
    """The table as a mermaid stateDiagram-v2 (transitions' own mermaid engine; no graphviz)."""
    from transitions.extensions import GraphMachine

    class _Model:
        pass

    graph = GraphMachine(model=_Model(), initial="pending", graph_engine="mermaid",
                         title="xksmigrate: one key store", show_conditions=False, **MACHINE_OPTIONS)
    return str(graph.get_graph().draw(None))
