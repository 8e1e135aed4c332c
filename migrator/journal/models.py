"""Journal tables (SQLAlchemy Core) and the frozen views the repository hands out.

Views are plain frozen dataclasses, never ORM objects, so a caller cannot lazy-load or mutate the
journal behind the repository's back. The Alembic revisions in `migrator/migrations/versions` create
exactly these tables; a change here needs a new revision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

VERSION_TABLE = "xksmigrate_schema_version"  # not alembic_version: a shared database may have its own
RUN_OUTCOMES = ("running", "completed", "rolled_back", "stuck", "blocked", "interrupted", "failed", "locked",
                "partial", "no_changes")
EVENT_KINDS = ("transition", "call", "result", "note", "hook", "finding", "acceptance")
STALE_AFTER = 120.0  # seconds without a heartbeat before a lock is reported stale

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", String(64), primary_key=True),
    Column("plan_name", Text, nullable=False),
    Column("plan_path", Text, nullable=False),
    Column("plan_text", Text, nullable=False),
    Column("plan_fingerprint", String(64), nullable=False),
    Column("who", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("outcome", String(32), nullable=False),
    Column("exit_code", Integer),
    Column("dry_run", Boolean, nullable=False),
    Column("region", String(32), nullable=False),
    Column("account_id", String(12)),
    Column("options", JSON, nullable=False),
)

migrations = Table(
    "migrations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.id"), nullable=False, index=True),
    Column("keystore_ref", Text, nullable=False),
    Column("keystore_id", String(64)),
    Column("state", String(32), nullable=False),
    Column("snapshot", JSON),
    Column("target", JSON, nullable=False),
    Column("disconnected_at", Float),
    Column("reconnected_at", Float),
    Column("verified_at", Float),
    Column("window_seconds", Float),
    Column("outcome", String(32)),
    Column("error", Text),
    Column("attempts", JSON, nullable=False),
    Column("api_calls", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.id"), nullable=False),
    Column("migration_id", Integer, ForeignKey("migrations.id")),
    Column("seq", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("from_state", String(32)),
    Column("to_state", String(32)),
    Column("operation", String(64)),
    Column("request_id", String(128)),
    Column("outcome", Text),
    Column("detail", JSON, nullable=False),
    UniqueConstraint("run_id", "seq", name="uq_events_run_seq"),
)

locks = Table(
    "locks", metadata,
    Column("id", String(64), primary_key=True),
    Column("resource", Text, nullable=False, unique=True),
    Column("run_id", String(64), nullable=False),
    Column("owner", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

Index("ix_runs_outcome_started", runs.c.outcome, runs.c.started_at)
Index("ix_runs_started", runs.c.started_at, runs.c.id)  # revision 0002: history, status

MIGRATION_FIELDS = frozenset(c.name for c in migrations.c) - {"id", "run_id"}


class JournalError(Exception):
    """The journal cannot be used (bad URL, unwritable directory, unsupported driver, schema too new, no run)."""


class LockLost(JournalError):
    """This runner's lock row is gone (force-unlocked by an operator): stop before the next side effect."""


@dataclass(frozen=True)
class LockInfo:
    id: str
    resource: str
    run_id: str
    owner: str
    host: str
    pid: int
    created_at: float
    heartbeat_at: float
    reclaimed_from: str | None = None  # the id of a dead holder's lock this one replaced

    def heartbeat_age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.heartbeat_at)


class LockHeld(Exception):
    """Another runner holds the lock; str() names the holder and the way out."""

    def __init__(self, holder: LockInfo, stale: bool):
        self.holder, self.stale = holder, stale
        super().__init__(str(self))

    def __str__(self) -> str:
        h = self.holder
        if not h.id:
            return (f"key store {h.resource} is locked by a live PostgreSQL session that has no lock row "
                    "(force-unlocked while it runs?); wait for it to finish")
        age = int(h.heartbeat_age())
        stale = f"; stale: no heartbeat for more than {int(STALE_AFTER)} s" if self.stale else ""
        return (f"key store {h.resource} is locked by {h.id} (owner {h.owner}, host {h.host}, pid {h.pid}, "
                f"run {h.run_id}, heartbeat {age} s ago{stale}); if that runner is gone: xksmigrate unlock {h.id}")


class HolderAlive(Exception):
    """`unlock` of a lock whose runner is still running: removing it would stop that run mid-way."""

    def __init__(self, holder: LockInfo, how: str):
        self.holder = holder
        h = holder
        super().__init__(f"{h.id} is held by a runner that is still alive ({how}: owner {h.owner}, host {h.host}, "
                         f"pid {h.pid}, run {h.run_id}); removing it would stop that run before its next AWS call. "
                         f"Let it finish, or stop it (Ctrl-C, or kill -TERM {h.pid} on {h.host}) and resume later; "
                         "to remove the row anyway: xksmigrate unlock --force " + h.id)


@dataclass(frozen=True)
class EventView:
    seq: int
    at: float
    run_id: str
    migration_id: int | None
    kind: str
    from_state: str | None
    to_state: str | None
    operation: str | None
    request_id: str | None
    outcome: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class MigrationView:
    id: int
    run_id: str
    keystore_ref: str
    keystore_id: str | None
    state: str
    snapshot: dict[str, Any] | None
    target: dict[str, Any]
    disconnected_at: float | None
    reconnected_at: float | None
    verified_at: float | None
    window_seconds: float | None
    outcome: str | None
    error: str | None
    attempts: dict[str, int]
    api_calls: dict[str, int]
    updated_at: float


@dataclass(frozen=True)
class RunView:
    id: str
    plan_name: str
    plan_path: str
    plan_text: str
    plan_fingerprint: str
    who: str
    host: str
    pid: int
    started_at: float
    finished_at: float | None
    outcome: str
    exit_code: int | None
    dry_run: bool
    region: str
    account_id: str | None
    options: dict[str, Any]
    migrations: tuple[MigrationView, ...] = field(default=())


def lock_view(row: Any, reclaimed_from: str | None = None) -> LockInfo:
    m = row._mapping
    return LockInfo(m["id"], m["resource"], m["run_id"], m["owner"], m["host"], m["pid"], m["created_at"],
                    m["heartbeat_at"], reclaimed_from)


def event_view(row: Any) -> EventView:
    m = row._mapping
    return EventView(m["seq"], m["at"], m["run_id"], m["migration_id"], m["kind"], m["from_state"], m["to_state"],
                     m["operation"], m["request_id"], m["outcome"], dict(m["detail"] or {}))


def migration_view(row: Any) -> MigrationView:
    m = dict(row._mapping)
    for key in ("attempts", "api_calls", "target"):
        m[key] = dict(m[key] or {})
    return MigrationView(**m)


def run_view(row: Any, migration_rows: list[Any]) -> RunView:
    m = dict(row._mapping)
    m["options"] = dict(m["options"] or {})
    m["dry_run"] = bool(m["dry_run"])
    return RunView(**m, migrations=tuple(migration_view(r) for r in migration_rows))
