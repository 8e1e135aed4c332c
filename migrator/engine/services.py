"""What a Driver may use from the run around it: the `RunServices` protocol.

engine/run_context.py implements it; tests implement it in memory (tests/engine/core_fakes.py). The
protocol never hands the Driver back, so calls go one way: driver -> services -> journal/observer/AWS.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from migrator.aws.kms import KmsApplier
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import Observation
from migrator.engine.clock import Clock
from migrator.engine.hooks import HookFacts
from migrator.plan import KeystorePlan, Plan

if TYPE_CHECKING:
    from migrator.engine.controls import Control
    from migrator.preflight.base import Finding


class RunServices(Protocol):
    """What a Driver may use from the run around it (engine/run_context.py implements it)."""

    @property
    def run_id(self) -> str: ...
    @property
    def plan(self) -> Plan: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def who(self) -> str: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def retry_stuck(self) -> bool: ...
    @property
    def rollback_budget(self) -> float: ...
    @property
    def kms(self) -> KmsApplier: ...
    def kms_for(self, keystore: KeystorePlan) -> KmsApplier: ...  # the store's account-Region cell
    @property
    def lock_lost(self) -> bool: ...
    expected_change_seconds: float  # how long a connect or disconnect takes; learned by every wait

    def record(self, mid: int | None, *, kind: str, operation: str | None = None, outcome: str | None = None,
               request_id: str | None = None, detail: dict[str, object] | None = None) -> int: ...
    def transition(self, mid: int, from_state: str, to_state: str, *, detail: object = None,
                   **fields: object) -> int: ...
    def update(self, mid: int, **fields: object) -> None: ...
    def api_calls_for(self, mid: int) -> dict[str, int]: ...
    def turn(self, mid: int) -> AbstractContextManager[None]: ...  # the requests made meanwhile are mid's
    def progress(self, event: dict[str, object]) -> None: ...
    def budget_seconds(self) -> float: ...  # the plan's downtime budget plus every `xksmigrate extend`
    def abort_requested(self) -> Control | None: ...  # an operator's `xksmigrate abort`, if one was journaled
    def hook(self, mid: int, event: str, facts: HookFacts) -> bool: ...  # did any hook run
    def approve(self, question: str) -> bool: ...
    def wait_for_cutover(self, mid: int, on_postponed: Callable[[], None]) -> bool: ...
    def secret(self, ref: str) -> SecretValue: ...
    def preflight(self, mid: int, keystore: KeystorePlan, snapshot: Observation) -> list[Finding]: ...
