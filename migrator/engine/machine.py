"""The migration procedure as one table: per state, the steps that run there, where success leads,
what a failure there means, which budget bounds it, and whether transient AWS errors are retried.

`Driver.run` is a short loop over this table (engine/driver.py); `xksmigrate graph` draws it.
Adding a state means one `Row` here and one `step_<name>` method on the Driver (a unit test checks
that every step named here exists). A row may also say what the live store must hold there (`expects`:
anything else is drift, which ends `stuck`) and take a `Detour` (a change that needs no disconnect; a
connect that did not hold).

The machine validates every move; it never performs a side effect. The driver persists a move in
`before_state_change` (journal first), so if the journal write fails the in-memory state does not
change either. `transitions` does not roll back a state change when a later callback raises, which
is why nothing runs after the change: the persisted state, not the in-memory machine, is the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transitions import EventData, Machine


class OnFailure(Enum):
    """What an exception raised by a row's steps means."""

    BLOCK = ("block", "blocked")  # nothing changed yet: an AWS/step error ends `blocked`; a bug propagates
    ROLL_BACK = ("fail", "rolling_back")  # the store may be disconnected: any failure goes back to the snapshot
    STUCK = ("rollback_failed", "stuck")  # the rollback itself failed: the operator acts (exit 5)

    @property
    def trigger(self) -> str:
        return self.value[0]

    @property
    def destination(self) -> str:
        return self.value[1]


class Expect(Enum):
    """What the journal says the live store holds in a state; any other configuration is drift (-> stuck)."""

    UNCHECKED = "unchecked"  # before the disconnect: the approval step compares with the snapshot itself
    ORIGINAL = "original"  # not updated yet: the snapshot
    EITHER = "original or target"  # an update (forward or back) may be under way
    TARGET = "target"  # updated: the plan's target


class Budget(Enum):
    """Which deadline bounds a row's waits and calls."""

    NONE = "none"  # before the disconnect: no window yet
    REFUSE_PAST = "refuse past"  # bounded by the downtime budget; once it is spent, no forward call: go back
    BOUNDS = "bounds"  # bounded by the downtime budget (a connect under way is still worth finishing)
    ROLLBACK = "rollback"  # the rollback's own budget, from the moment it started


@dataclass(frozen=True)
class Detour:
    """Another way out of a row: when `Driver.when_<when>()` returns fields (not None), the row runs
    `steps` (if any) and fires `advance` instead of its own steps and advance."""

    when: str
    advance: tuple[str, str]
    steps: tuple[str, ...] = ()


DRIFT = ("drift", "stuck")  # the live store contradicts the journal: the operator decides (exit 5)


@dataclass(frozen=True)
class Row:
    """One state of the procedure and everything the driver does there."""

    state: str
    doc: str
    steps: tuple[str, ...] = ()  # Driver.step_<name>, in order; the last returns the advance's fields
    advance: tuple[str, str] | None = None  # (trigger, destination) fired when the steps succeed
    on_failure: OnFailure | None = None
    budget: Budget = Budget.NONE
    retry_transient: bool = False  # re-run the steps after a retryable AWS error (only where nothing changed)
    after: str | None = None  # the hook fired once the advance is journaled
    entries: tuple[tuple[str, str], ...] = ()  # triggers an operator fires from here (terminal states)
    expects: Expect = Expect.UNCHECKED  # what every observation here must show; anything else is DRIFT
    detour: Detour | None = None

    @property
    def terminal(self) -> bool:
        return not self.steps

    @property
    def drift_trigger(self) -> str | None:
        """The trigger that takes drift here to `stuck` (the rollback's own failure already goes there)."""
        if self.expects is Expect.UNCHECKED:
            return None
        if self.on_failure is not None and self.on_failure.destination == DRIFT[1]:
            return self.on_failure.trigger
        return DRIFT[0]

    @property
    def step_names(self) -> tuple[str, ...]:
        """Every step this row may run (its own and its detour's)."""
        return self.steps + (self.detour.steps if self.detour else ())

    def moves(self) -> list[tuple[str, str]]:
        """Every (trigger, destination) that may fire from this state."""
        found = [self.advance] if self.advance else []
        if self.detour:
            found.append(self.detour.advance)
        if self.on_failure:
            found.append((self.on_failure.trigger, self.on_failure.destination))
        if self.drift_trigger == DRIFT[0]:
            found.append(DRIFT)
        return [*found, *self.entries]


_BLOCK, _BACK, _STUCK = OnFailure.BLOCK, OnFailure.ROLL_BACK, OnFailure.STUCK
_ORIGINAL, _EITHER, _TARGET = Expect.ORIGINAL, Expect.EITHER, Expect.TARGET
# A change that needs no disconnect (only the proxy credential or the URI path): updated while CONNECTED.
_IN_PLACE = Detour("update_in_place", ("update_in_place", "updating"), ("begin_update_in_place",))
# In `connected`/`verifying` a store that is not CONNECTED did not hold its connect: connect again if it fits.
_RECONNECT = Detour("connect_did_not_hold", ("reconnect", "connecting"))

ROWS: tuple[Row, ...] = (
    # -- before the disconnect: nothing in AWS has changed ----------------------------------------
    Row("pending", "record DescribeCustomKeyStores as the rollback point; choose the verify keys",
        ("snapshot",), ("take_snapshot", "snapshotted"), _BLOCK, retry_transient=True),
    Row("snapshotted", "the engine's gate and the read-only inspector; any block stops here",
        ("preflight",), ("pass_preflight", "preflighted"), _BLOCK, retry_transient=True),
    Row("preflighted", "a postponed cut-over waits (and preflights again); the operator approves",
        ("approval",), ("approve", "approved"), _BLOCK, retry_transient=True),
    Row("approved", "the store still equals the snapshot; before-disconnect hooks; the window starts "
        "(a change that needs no disconnect goes straight to the update)",
        ("begin_disconnect",), ("start_disconnect", "disconnecting"), _BLOCK, retry_transient=True, detour=_IN_PLACE),
    # -- the critical section: every key of the store is unusable ---------------------------------
    Row("disconnecting", "DisconnectCustomKeyStore unless already on its way; wait for DISCONNECTED",
        ("disconnect",), ("observe_disconnected", "disconnected"), _BACK, Budget.REFUSE_PAST, after="after-disconnect",
        expects=_ORIGINAL),
    Row("disconnected", "journal the target before the update",
        ("begin_update",), ("start_update", "updating"), _BACK, Budget.REFUSE_PAST, expects=_ORIGINAL),
    Row("updating", "UpdateCustomKeyStore unless KMS already holds the target; prove it with a describe",
        ("update",), ("observe_updated", "updated"), _BACK, Budget.REFUSE_PAST, expects=_EITHER),
    Row("updated", "journal the connect before it",
        ("begin_connect",), ("start_connect", "connecting"), _BACK, Budget.REFUSE_PAST, expects=_TARGET),
    Row("connecting", "ConnectCustomKeyStore; wait for CONNECTED; a transient FAILED gets one more try if it fits",
        ("connect",), ("observe_connected", "connected"), _BACK, Budget.BOUNDS, after="after-connect",
        expects=_TARGET),
    Row("connected", "the store is still CONNECTED (else back to connecting); journal the verification",
        ("begin_verify",), ("start_verify", "verifying"), _BACK, Budget.BOUNDS, expects=_TARGET, detour=_RECONNECT),
    Row("verifying", "still CONNECTED (else back to connecting); Encrypt+Decrypt round trips; the window ends",
        ("verify",), ("verify_ok", "completed"), _BACK, Budget.BOUNDS, after="completed", expects=_TARGET,
        detour=_RECONNECT),
    # -- the way back --------------------------------------------------------------------------------
    Row("rolling_back", "disconnect if needed, restore the snapshot, connect, verify",
        ("rollback_begin", "rollback_disconnect", "rollback_restore", "rollback_connect", "rollback_verify"),
        ("rollback_ok", "rolled_back"), _STUCK, Budget.ROLLBACK, expects=_EITHER),
    # -- terminal --------------------------------------------------------------------------------------
    Row("completed", "the target is connected and verified", entries=(("operator_rollback", "rolling_back"),)),
    Row("rolled_back", "the original configuration is connected and verified"),
    Row("stuck", "the rollback failed, or the live store contradicts the journal (drift): the operator acts "
        "(resume --retry-stuck or RUNBOOK)",
        entries=(("retry_rollback", "rolling_back"),)),
    Row("blocked", "stopped before the disconnect: nothing changed"),
)

BY_STATE: dict[str, Row] = {row.state: row for row in ROWS}
STATES = tuple(BY_STATE)
TERMINAL = tuple(row.state for row in ROWS if row.terminal)
# States in which nothing has been changed yet: a failure here blocks.
UNCHANGED = tuple(row.state for row in ROWS if row.on_failure is OnFailure.BLOCK)
# States in which the store may be disconnected (or about to be): a failure here rolls back.
CRITICAL = tuple(row.state for row in ROWS if row.on_failure is OnFailure.ROLL_BACK)


def _forward() -> tuple[str, ...]:
    """The forward path, in order: the advance chain from `pending` to `completed`."""
    chain, state = [], "pending"
    while True:
        chain.append(state)
        advance = BY_STATE[state].advance
        if advance is None:
            return tuple(chain)
        state = advance[1]


FORWARD = _forward()

# (trigger, source, destination), derived from the rows; what `transitions` enforces.
TABLE: tuple[tuple[str, str, str], ...] = tuple(
    (trigger, row.state, dest) for row in ROWS for trigger, dest in row.moves())


def row(state: str) -> Row:
    """The row of `state` (KeyError for a state the table does not know: a damaged journal)."""
    return BY_STATE[state]


def destination(state: str, trigger: str) -> str | None:
    """Where `trigger` leads from `state`, or None if it may not fire there (no machine needed)."""
    return next((dest for name, source, dest in TABLE if name == trigger and source == state), None)


def build(model: object, initial: str, persist: Callable[[EventData], None]) -> Machine:
    """Attach the machine to `model`, starting at the persisted `initial` state.

    `persist(event)` runs before every state change; `event.transition.dest` is the new state and
    `event.kwargs` what the driver passed with the trigger.
    """
    from transitions import Machine

    return Machine(model=model, states=list(STATES), transitions=[list(t) for t in TABLE], initial=initial,
                   auto_transitions=False, send_event=True, before_state_change=persist)


def mermaid() -> str:
    """The table as a mermaid stateDiagram-v2 (transitions' own mermaid engine; no graphviz)."""
    from transitions.extensions import GraphMachine

    class _Model:
        pass

    graph = GraphMachine(model=_Model(), states=list(STATES), transitions=[list(t) for t in TABLE],
                         initial="pending", auto_transitions=False, send_event=True, graph_engine="mermaid",
                         title="xksmigrate: one key store", show_conditions=False)
    return str(graph.get_graph().draw(None))
