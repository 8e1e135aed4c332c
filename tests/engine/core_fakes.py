"""A manual clock, a recording applier and in-memory run services: the Driver's edges, for pure-logic tests.

These stand in only at the boto3 seam's edge (the applier) and the run's services, so the driver's
loop over the machine table can be tested in milliseconds. The AWS conversation itself (what KMS
really answers, over HTTP) stays tested against the rehearsal world in the other engine tests.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from migrator.aws.kms import AwsCallError, needs_disconnect, update_parameters
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import KeyInfo, Observation, StoreConfig
from migrator.journal.models import MigrationView
from migrator.plan import parse_plan

PLAN_TEXT = """
[plan]
name = "core"
region = "us-east-1"
max_disconnected = "15m"
poll_interval = "5s"

[[keystores]]
id = "cks-1234567890abcdef0"

[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
"""
STORE_ID = "cks-1234567890abcdef0"
ORIGINAL = StoreConfig("PUBLIC_ENDPOINT", "https://public.xks.example.com", "/kms/xks/v1",
                       access_key_id="AKIA" + "X" * 16)


def core_plan(**replace: str) -> Any:
    text = PLAN_TEXT
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_plan(text, "core.toml")


class ManualClock:
    """Time that moves only when the engine sleeps: a 15-minute budget is tested in microseconds."""

    def __init__(self, start: float = 1_000_000.0, scale: float = 1.0):
        self.t, self.scale = start, scale
        self._lock = threading.Lock()

    @property
    def simulated(self) -> bool:
        return self.scale != 1.0

    def now(self) -> float:
        return self.t

    def elapsed(self, since: float, until: float | None = None) -> float:
        return ((self.t if until is None else until) - since) * self.scale

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.t += max(seconds, 0.0) / self.scale

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass
class RecordingApplier:
    """A KMS that only this test talks to: it changes state on the manual clock and records every call.

    `connect_outcomes` scripts what each ConnectCustomKeyStore ends in ("" = CONNECTED, else a
    ConnectionErrorCode); `update_error` makes UpdateCustomKeyStore fail with that code.
    """

    clock: ManualClock
    config: StoreConfig = ORIGINAL
    state: str = "CONNECTED"
    error_code: str = ""
    latency: float = 300.0
    connect_outcomes: list[str] = field(default_factory=list)
    update_error: str = ""
    calls: list[str] = field(default_factory=list)
    keys: tuple[str, ...] = ("key-1", "key-2")
    key_states: dict[str, str] = field(default_factory=dict)  # KeyState by key id (default: the store's)
    refuse_round_trips_for: str = ""  # an access key id the proxy rejects after KMS accepted it
    _pending: tuple[str, str, float] | None = None  # (state, error code, at)

    def _settle(self) -> None:
        if self._pending and self.clock.now() >= self._pending[2]:
            self.state, self.error_code, _ = self._pending
            self._pending = None

    def _observation(self) -> Observation:
        return Observation(STORE_ID, "core-store", "EXTERNAL_KEY_STORE", self.state, self.error_code, self.config)

    def find_store(self, store_id: str | None = None, name: str | None = None) -> Observation | None:
        self.calls.append("DescribeCustomKeyStores")
        self._settle()
        return self._observation() if store_id in (None, STORE_ID) else None

    def describe(self, store_id: str, polling: bool = False) -> Observation:
        found = self.find_store(store_id=store_id)
        assert found is not None
        return found

    paced_looks = False  # no cell poller: each wait polls on its own schedule

    admission_wait: float = 0.0  # seconds another store's window of the cell makes this one wait its turn

    def admit_window(self) -> float:
        self.clock.advance(self.admission_wait)
        return self.admission_wait / self.clock.scale  # real seconds, as the cell budget says

    def disconnect(self, store_id: str) -> str:
        self.calls.append("DisconnectCustomKeyStore")
        self._settle()
        if self.state not in ("CONNECTED", "CONNECTING", "FAILED"):
            raise AwsCallError("DisconnectCustomKeyStore", "CustomKeyStoreInvalidStateException", self.state)
        self.state, self.error_code = "DISCONNECTING", ""
        self._pending = ("DISCONNECTED", "", self.clock.now() + self.latency)
        return f"rid-{len(self.calls)}"

    def connect(self, store_id: str) -> str:
        self.calls.append("ConnectCustomKeyStore")
        self._settle()
        if self.state != "DISCONNECTED":
            raise AwsCallError("ConnectCustomKeyStore", "CustomKeyStoreInvalidStateException", self.state)
        outcome = self.connect_outcomes.pop(0) if self.connect_outcomes else ""
        self.state = "CONNECTING"
        self._pending = ("FAILED" if outcome else "CONNECTED", outcome, self.clock.now() + self.latency)
        return f"rid-{len(self.calls)}"

    def update(self, store_id: str, desired: StoreConfig, current: StoreConfig, credential: object = None) -> str:
        self.calls.append("UpdateCustomKeyStore")
        self._settle()
        params = update_parameters(store_id, desired, current, credential is not None)
        if self.state != "DISCONNECTED" and needs_disconnect(params):  # credential and path: any state
            raise AwsCallError("UpdateCustomKeyStore", "CustomKeyStoreInvalidStateException", self.state)
        if self.update_error:
            raise AwsCallError("UpdateCustomKeyStore", self.update_error, "rejected")
        self.config = desired
        return f"rid-{len(self.calls)}"

    def describe_key(self, key_id: str) -> KeyInfo:
        self.calls.append("DescribeKey")
        self._settle()
        state = self.key_states.get(key_id) or ("Enabled" if self.state == "CONNECTED" else "Unavailable")
        return KeyInfo(key_id, f"arn:aws:kms:us-east-1:111122223333:key/{key_id}", state, STORE_ID, "ext-" + key_id)

    def keys_of_store(self, store_id: str, *, want_enabled: int = 3,
                      states: tuple[str, ...] = ("Enabled",)) -> list[KeyInfo]:
        return [self.describe_key(k) for k in self.keys][:want_enabled]

    def round_trip(self, key_id: str, context: dict[str, str]) -> tuple[str, str]:
        self.calls.append("Encrypt+Decrypt")
        self._settle()
        if self.key_states.get(key_id) == "Disabled":
            raise AwsCallError("Encrypt", "DisabledException", f"{key_id} is disabled.")
        if self.state != "CONNECTED" or (self.refuse_round_trips_for
                                         and self.config.access_key_id == self.refuse_round_trips_for):
            raise AwsCallError("Encrypt", "KMSInvalidStateException", f"{key_id} is unavailable.")
        return "enc", "dec"

    def mutating(self) -> list[str]:
        return [c for c in self.calls if c in ("DisconnectCustomKeyStore", "UpdateCustomKeyStore",
                                               "ConnectCustomKeyStore")]


@dataclass
class MemoryServices:
    """RunServices in memory: transitions and events are kept in lists, findings are what the test says."""

    plan: Any
    clock: ManualClock
    kms: RecordingApplier
    run_id: str = "run-core"
    who: str = "pytest"
    dry_run: bool = True
    retry_stuck: bool = False
    rollback_budget: float = 900.0
    lock_lost: bool = False
    expected_change_seconds: float = 300.0
    approve_answer: bool = True
    findings: list[Any] = field(default_factory=list)
    hook_failures: dict[str, Exception] = field(default_factory=dict)
    transitions: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    hooks_fired: list[str] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # reference -> value, for credential plans
    extended_seconds: float = 0.0  # what `xksmigrate extend` added (engine/controls.py)
    abort: Any = None  # a controls.Control once `xksmigrate abort` was journaled

    def turn(self, mid: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def kms_for(self, keystore: Any) -> RecordingApplier:
        return self.kms  # one cell

    def record(self, mid: int | None, *, kind: str, operation: str | None = None, outcome: str | None = None,
               request_id: str | None = None, detail: dict[str, Any] | None = None) -> int:
        self.events.append({"kind": kind, "operation": operation, "outcome": outcome, "detail": detail})
        return len(self.events) + len(self.transitions)

    def transition(self, mid: int, from_state: str, to_state: str, *, detail: Any = None, **fields: Any) -> int:
        self.transitions.append((from_state, to_state, dict(fields)))
        return len(self.events) + len(self.transitions)

    def update(self, mid: int, **fields: Any) -> None:
        self.updates.append(fields)

    def api_calls_for(self, mid: int) -> dict[str, int]:
        return {}

    def progress(self, event: dict[str, Any]) -> None:
        pass

    def budget_seconds(self) -> float:
        return float(self.plan.max_disconnected) + self.extended_seconds

    def abort_requested(self) -> Any:
        return self.abort

    def hook(self, mid: int, event: str, facts: Any) -> bool:
        self.hooks_fired.append(event)
        if event in self.hook_failures:
            raise self.hook_failures[event]
        return True  # as if a script ran

    def approve(self, question: str) -> bool:
        return self.approve_answer

    def wait_for_cutover(self, mid: int, on_postponed: Any) -> bool:
        return False

    def secret(self, ref: str) -> Any:
        assert ref in self.secrets, f"no secret {ref} in this test"
        return SecretValue(self.secrets[ref], ref)

    def preflight(self, mid: int, keystore: Any, snapshot: Observation) -> list[Any]:
        return list(self.findings)

    # -- what tests read --------------------------------------------------------------------------
    def states(self) -> list[str]:
        return [to for _, to, _ in self.transitions]


def migration(state: str = "pending", **fields: Any) -> MigrationView:
    values: dict[str, Any] = {
        "id": 1, "run_id": "run-core", "keystore_ref": STORE_ID, "keystore_id": None, "state": state,
        "snapshot": None, "target": {}, "disconnected_at": None, "reconnected_at": None, "verified_at": None,
        "window_seconds": None, "outcome": None, "error": None, "attempts": {}, "api_calls": {}, "updated_at": 0.0}
    values.update(fields)
    return MigrationView(**values)


def snapshot_of(config: StoreConfig = ORIGINAL, state: str = "CONNECTED") -> dict[str, Any]:
    obs = Observation(STORE_ID, "core-store", "EXTERNAL_KEY_STORE", state, "", config)
    return {**obs.to_dict(), "verify_keys": [{"key_id": "key-1", "arn": "arn", "state": "Enabled"}],
            "region": "us-east-1", "observed_at": 0.0}


# The same store; only the proxy credential changes (an update that needs no disconnect).
CREDENTIAL_ONLY_TARGET = '''
[keystores.target]
connectivity = "PUBLIC_ENDPOINT"
uri_endpoint = "https://public.xks.example.com"

[keystores.target.credential]
access_key_id = "BKIAYYYYYYYYYYYYYYYY"
secret = "env:NEW_XKS_SECRET"

[keystores.original_credential]
secret = "env:OLD_XKS_SECRET"
'''
CREDENTIAL_SECRETS = {"env:NEW_XKS_SECRET": "N" * 43 + "=", "env:OLD_XKS_SECRET": "O" * 43 + "="}


def credential_only_plan() -> Any:
    """core_plan with a target that changes only the proxy credential."""
    start = PLAN_TEXT.index("[keystores.target]")
    return parse_plan(PLAN_TEXT[:start] + CREDENTIAL_ONLY_TARGET, "core.toml")
