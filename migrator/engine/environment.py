"""What a run needs from outside, built by the CLI (or a test): the engine's only input besides the plan.

The engine knows nothing of the command line and nothing of the rehearsal world: it sees a journal,
a factory of AWS clients (real AWS, or a loopback rehearsal endpoint), a clock, an observer that
renders events, and a few callbacks for decisions only a person can make.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrator.engine.clock import Clock

if TYPE_CHECKING:
    from migrator.aws.clients import ClientFactory
    from migrator.aws.secret_refs import SecretValue
    from migrator.engine.hooks import Hooks
    from migrator.journal.repository import Journal

# An engine event or progress record, as the observer receives it (JSON-safe values).
Event = dict[str, object]


class Observer:
    """Receives every journaled event and transient progress; the CLI renders them."""

    def event(self, event: Event) -> None:  # pragma: no cover - default does nothing
        pass


def _never_approve(question: str) -> bool:
    return False


@dataclass
class Environment:
    """Everything a run needs from outside, built by the CLI (or a test)."""

    journal: Journal
    clients: ClientFactory
    clock: Clock = field(default_factory=Clock)
    observer: Observer = field(default_factory=Observer)
    secret_resolver: Callable[[str], SecretValue] | None = None
    approve: Callable[[str], bool] = _never_approve
    who: str = ""
    dry_run: bool = False
    extra_roots_pem: list[bytes] = field(default_factory=list)
    resolve: Callable[[str], str] | None = None
    include_cloudwatch: bool = False
    hooks: Hooks | None = None
    retry_stuck: bool = False
    postpone: bool = False  # wait before the disconnect until `xksmigrate proceed` (or the flag file is gone)
    postpone_flag_file: str | None = None
    cutover_at: float | None = None  # epoch seconds: wait before the disconnect until then
    heartbeat_seconds: float = 10.0
    # What a resume or rollback must find again (hooks, endpoint, account, absolute paths), recorded with the run.
    run_facts: dict[str, object] = field(default_factory=dict)
