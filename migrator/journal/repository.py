"""The durable journal: journal first, side effect second, mark done third.

The persisted state is the truth (transitions does not undo a state change when a later callback
raises), so every write here commits before returning, and a transition's state change and its event
land in one transaction. Events are append-only: there is no API to change or delete one. `seq` is
per run, assigned inside the inserting transaction, unique and gap-free.

SQLite runs in WAL mode with every write transaction started as BEGIN IMMEDIATE (no lock-upgrade
deadlocks between processes); PostgreSQL rows are locked with SELECT ... FOR UPDATE. The schema is
managed by Alembic and upgraded by `Journal.open` under a lock, so two processes opening a fresh
journal at once do not collide.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar, cast

from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, func, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from migrator.aws.secret_refs import SecretValue
from migrator.journal.db import JournalUnavailable, dumps, first_line, is_unavailable, migrate, parse_url, sqlite_engine
from migrator.journal.locks import Locks
from migrator.journal.models import (
    EVENT_KINDS,
    MIGRATION_FIELDS,
    RUN_OUTCOMES,
    VERSION_TABLE,
    EventView,
    HolderAlive,
    JournalError,
    LockHeld,
    LockInfo,
    LockLost,
    MigrationView,
    RunView,
    event_view,
    events,
    migration_view,
    migrations,
    run_view,
    runs,
)

__all__ = ["EventView", "HolderAlive", "Journal", "JournalError", "JournalUnavailable", "LockHeld",
           "LockInfo", "LockLost", "MigrationView", "RunView"]

UNFINISHED = ("running", "interrupted")


def _refuse_secrets(value: Any, where: str) -> None:
    """Last line of defence: a SecretValue anywhere in what is about to be journaled is a bug."""
    if isinstance(value, SecretValue):
        raise TypeError(f"refusing to journal a SecretValue ({value.ref}) in {where}")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_secrets(k, where)
            _refuse_secrets(v, f"{where}.{k}")
    elif isinstance(value, list | tuple | set | frozenset):
        for i, v in enumerate(value):
            _refuse_secrets(v, f"{where}[{i}]")



_Write = TypeVar("_Write", bound=Callable[..., Any])


def _writes(method: _Write) -> _Write:
    """A write that retries briefly when the database is unusable, then raises JournalUnavailable.

    Each write is one transaction, so running it again is safe: it either committed or left nothing.
    The caller makes its side effect only after the write returns (journal first, side effect second),
    so a retry delays the side effect but never lets it run unjournaled. The retry is short
    (`write_retry_seconds`, real time) because the store may be disconnected while it waits.
    """
    @wraps(method)
    def write(self: Journal, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.write_retry_seconds
        pause = 0.1
        while True:
            try:
                return method(self, *args, **kwargs)
            except SQLAlchemyError as exc:
                if not is_unavailable(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise JournalUnavailable(f"cannot write the journal {self.url_for_display}: "
                                             f"{first_line(exc)}") from None
                time.sleep(pause)
                pause = min(2 * pause, 1.0)
    return cast(_Write, write)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


class Journal:
    """Repository over the journal tables; every method returns frozen views and commits before returning."""

    write_retry_seconds = 3.0  # how long a write waits out a full disk or an unreachable database (real seconds)

    def __init__(self, engine: Engine, lock_engine: Engine | None, url: URL, backend: str):
        self._engine, self._lock_engine, self.url, self.backend = engine, lock_engine, url, backend
        self.url_for_display = url.render_as_string(hide_password=True)
        self.who, self.host, self.pid = _who(), socket.gethostname(), os.getpid()
        self._locks = Locks(engine, lock_engine, self.host, self.pid, self.who)
        # Recorded in the options of every run created through this journal, under the engine's own options:
        # the CLI puts there what a resume must re-derive (hooks directory, endpoint, account; cli/recorded.py).

    @classmethod
    def open(cls, url: str, *, read_only: bool = False) -> Journal:
        """Open (creating or upgrading the schema) or raise JournalError with a one-line reason.

        `read_only` (status, history: an auditor's copy may be read-only) never creates, upgrades or writes.
        """
        parsed, backend = parse_url(url)
        display = parsed.render_as_string(hide_password=True)
        lock_engine = None
        if backend == "sqlite":
            engine = sqlite_engine(parsed, read_only=read_only)
        else:
            args: dict[str, Any] = {"connect_timeout": 10}
            if read_only:
                args["options"] = "-c default_transaction_read_only=on"
            engine = create_engine(parsed, pool_pre_ping=True, connect_args=args, json_serializer=dumps)
            lock_engine = create_engine(parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=args)
        try:
            migrate(engine, backend, read_only=read_only)
        except JournalError:
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError, CommandError) as exc:
            engine.dispose()
            raise JournalError(f"cannot open the journal {display}: {first_line(exc)}") from None
        return cls(engine, lock_engine, parsed, backend)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect().execution_options(journal_read=True) as conn:
                yield conn
        except SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            raise JournalUnavailable(f"cannot read the journal {self.url_for_display}: {first_line(exc)}") from None

    # --- runs ------------------------------------------------------------------------------

    @_writes
    def create_run(self, *, plan_name: str, plan_path: str, plan_text: str, plan_fingerprint: str, region: str,
                   account_id: str | None = None, dry_run: bool = False, options: dict[str, Any] | None = None,
                   who: str | None = None, host: str | None = None, pid: int | None = None,
                   seed: Sequence[dict[str, Any]] = (), run_id: str | None = None) -> str:
        """A new run, with the migrations in `seed` (their fields; keystore_ref and target at least) in the same
        transaction: a rollback run starts with copies of the stores it takes back. `run_id` given (a fleet's
        store: the same id on every attempt, so a repeated step finds its run) must be new."""
        _refuse_secrets(options, "options")
        seeded = [{"state": "pending", "attempts": {}, "api_calls": {}, **self._check_fields(dict(m))}
                  for m in seed]
        for _ in range(1 if run_id else 5):
            now = time.time()
            stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%d-%H%M%S")
            new_id = run_id or f"run-{stamp}-{secrets.token_hex(2)}"
            try:
                with self._engine.begin() as tx:
                    tx.execute(insert(runs).values(
                        id=new_id, plan_name=plan_name, plan_path=plan_path, plan_text=plan_text,
                        plan_fingerprint=plan_fingerprint, who=who or self.who, host=host or self.host,
                        pid=self.pid if pid is None else pid, started_at=now, outcome="running", dry_run=dry_run,
                        region=region, account_id=account_id, options=dict(options or {})))
                    for values in seeded:
                        tx.execute(insert(migrations).values(run_id=new_id, **values))
                return new_id
            except IntegrityError:  # two runs in one second drew the same suffix
                continue
        raise JournalError(f"run id {run_id} is taken" if run_id else "could not allocate a unique run id")

    def finish_run(self, run_id: str, outcome: str, exit_code: int) -> None:
        if outcome not in RUN_OUTCOMES:
            raise ValueError(f"unknown run outcome {outcome!r}")
        self._update_run(run_id, outcome=outcome, exit_code=exit_code, finished_at=time.time())

    def reopen_run(self, run_id: str) -> None:
        """Mark a run as running again (resume)."""
        self._update_run(run_id, outcome="running", exit_code=None, finished_at=None)

    @_writes
    def _update_run(self, run_id: str, **values: Any) -> None:
        with self._engine.begin() as tx:
            if not tx.execute(update(runs).where(runs.c.id == run_id).values(**values)).rowcount:
                raise JournalError(f"no run {run_id} in {self.url_for_display}")

    def _runs(self, conn: Connection, query: Any) -> list[RunView]:
        rows = conn.execute(query).all()
        ids = [r.id for r in rows]
        by_run: dict[str, list[Any]] = {i: [] for i in ids}
        if ids:
            for m in conn.execute(select(migrations).where(migrations.c.run_id.in_(ids)).order_by(migrations.c.id)):
                by_run[m.run_id].append(m)
        return [run_view(r, by_run[r.id]) for r in rows]

    def get_run(self, run_id: str) -> RunView:
        with self._read() as conn:
            found = self._runs(conn, select(runs).where(runs.c.id == run_id))
        if not found:
            raise JournalError(f"no run {run_id} in {self.url_for_display}")
        return found[0]

    def list_runs(self, limit: int = 50) -> list[RunView]:
        with self._read() as conn:
            return self._runs(conn, select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit))

    def latest_unfinished_run(self) -> RunView | None:
        query = select(runs).where(runs.c.outcome.in_(UNFINISHED)).order_by(runs.c.started_at.desc()).limit(1)
        with self._read() as conn:
            found = self._runs(conn, query)
        return found[0] if found else None

    def unfinished_runs(self, region: str, account_id: str | None = None) -> list[RunView]:
        """Running or interrupted runs in a Region (and account; runs that recorded no account match too)."""
        query = select(runs).where(runs.c.outcome.in_(UNFINISHED), runs.c.region == region)
        if account_id is not None:
            query = query.where((runs.c.account_id == account_id) | runs.c.account_id.is_(None))
        with self._read() as conn:
            return self._runs(conn, query.order_by(runs.c.started_at))

    # --- migrations --------------------------------------------------------------------------

    @_writes
    def add_migration(self, run_id: str, keystore_ref: str, target: dict[str, Any]) -> int:
        _refuse_secrets(target, "target")
        with self._engine.begin() as tx:
            result = tx.execute(insert(migrations).values(
                run_id=run_id, keystore_ref=keystore_ref, state="pending", target=dict(target), attempts={},
                api_calls={}, updated_at=time.time()))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def _check_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - MIGRATION_FIELDS
        if unknown:
            raise TypeError(f"not a migration field: {', '.join(sorted(unknown))}")
        _refuse_secrets(fields, "migration")
        return {"updated_at": time.time(), **fields}

    @_writes
    def update_migration(self, migration_id: int, **fields: Any) -> None:
        """Set fields (JSON fields are replaced, not merged)."""
        values = self._check_fields(fields)
        with self._engine.begin() as tx:
            if not tx.execute(update(migrations).where(migrations.c.id == migration_id).values(**values)).rowcount:
                raise JournalError(f"no migration {migration_id} in {self.url_for_display}")

    @_writes
    def bump(self, migration_id: int, counter: str, field: str = "api_calls", by: int = 1) -> None:
        """Increment one counter in the attempts/api_calls JSON, atomically across processes."""
        if field not in ("api_calls", "attempts"):
            raise ValueError(f"not a counter field: {field}")
        column = migrations.c[field]
        with self._engine.begin() as tx:
            row = tx.execute(select(column).where(migrations.c.id == migration_id).with_for_update()).first()
            if row is None:
                raise JournalError(f"no migration {migration_id} in {self.url_for_display}")
            counters = dict(row[0] or {})
            counters[counter] = int(counters.get(counter, 0)) + by
            tx.execute(update(migrations).where(migrations.c.id == migration_id)
                       .values({field: counters, "updated_at": time.time()}))

    def get_migration(self, migration_id: int) -> MigrationView:
        with self._read() as conn:
            row = conn.execute(select(migrations).where(migrations.c.id == migration_id)).first()
        if row is None:
            raise JournalError(f"no migration {migration_id} in {self.url_for_display}")
        return migration_view(row)

    # --- events --------------------------------------------------------------------------------

    def _append(self, tx: Connection, run_id: str, values: dict[str, Any]) -> int:
        """Insert one event with the next seq of its run; the caller's transaction holds the run row."""
        if values["kind"] not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {values['kind']!r}")
        _refuse_secrets(values, "event")
        if tx.execute(select(runs.c.id).where(runs.c.id == run_id).with_for_update()).first() is None:
            raise JournalError(f"no run {run_id} in {self.url_for_display}")
        seq = (tx.execute(select(func.max(events.c.seq)).where(events.c.run_id == run_id)).scalar() or 0) + 1
        tx.execute(insert(events).values(run_id=run_id, seq=seq, at=time.time(),
                                         **{**values, "detail": dict(values.get("detail") or {})}))
        return seq

    @_writes
    def record(self, run_id: str, *, kind: str, migration_id: int | None = None, from_state: str | None = None,
               to_state: str | None = None, operation: str | None = None, request_id: str | None = None,
               outcome: str | None = None, detail: dict[str, Any] | None = None) -> int:
        """Append an event and commit; returns its seq."""
        values = dict(kind=kind, migration_id=migration_id, from_state=from_state, to_state=to_state,
                      operation=operation, request_id=request_id, outcome=outcome, detail=detail)
        with self._engine.begin() as tx:
            return self._append(tx, run_id, values)

    @_writes
    def transition(self, migration_id: int, to_state: str, *, operation: str | None = None,
                   request_id: str | None = None, outcome: str | None = None, detail: dict[str, Any] | None = None,
                   migration_outcome: Any = ..., **fields: Any) -> int:
        """Set the state (and fields) and append the transition event in one transaction; returns its seq.

        `outcome` belongs to the event; `migration_outcome` (when given, None included) sets the row's.
        """
        values = self._check_fields({**fields, "state": to_state})
        if migration_outcome is not ...:
            values["outcome"] = migration_outcome
        event_values = dict(kind="transition", migration_id=migration_id, to_state=to_state, operation=operation,
                            request_id=request_id, outcome=outcome, detail=detail)
        _refuse_secrets(event_values, "event")
        with self._engine.begin() as tx:
            run_id = tx.execute(select(migrations.c.run_id).where(migrations.c.id == migration_id)).scalar()
            if run_id is None:
                raise JournalError(f"no migration {migration_id} in {self.url_for_display}")
            tx.execute(select(runs.c.id).where(runs.c.id == run_id).with_for_update())  # run row before migration row
            from_state = tx.execute(select(migrations.c.state).where(migrations.c.id == migration_id)
                                    .with_for_update()).scalar()
            tx.execute(update(migrations).where(migrations.c.id == migration_id).values(**values))
            return self._append(tx, run_id, {**event_values, "from_state": from_state})

    def events(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[EventView]:
        query = select(events).where(events.c.run_id == run_id, events.c.seq > after_seq).order_by(events.c.seq)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [event_view(r) for r in conn.execute(query)]

    def latest_note(self, run_id: str, outcomes: tuple[str, ...]) -> EventView | None:
        """The run's latest `note` event whose outcome is one of `outcomes` (e.g. an operator's request)."""
        query = (select(events).where(events.c.run_id == run_id, events.c.kind == "note",
                                      events.c.outcome.in_(outcomes)).order_by(events.c.seq.desc()).limit(1))
        with self._read() as conn:
            row = conn.execute(query).first()
        return event_view(row) if row is not None else None

    def later_migrations(self, run_id: str, keystore_id: str, exclude: str | None = None) -> list[MigrationView]:
        """Migrations of `keystore_id` in runs started after `run_id` (same Region and kind of run; not the run
        `exclude`), oldest first. A rollback run of `run_id` reads these: a later run may have changed the store."""
        with self._read() as conn:
            this = conn.execute(select(runs.c.started_at, runs.c.region, runs.c.dry_run)
                                .where(runs.c.id == run_id)).first()
            if this is None:
                raise JournalError(f"no run {run_id} in {self.url_for_display}")
            query = (select(migrations).join(runs, runs.c.id == migrations.c.run_id)
                     .where(migrations.c.keystore_id == keystore_id, runs.c.id.not_in([run_id, exclude or run_id]),
                            runs.c.started_at >= this.started_at, runs.c.region == this.region,
                            runs.c.dry_run == this.dry_run)
                     .order_by(runs.c.started_at, migrations.c.id))
            return [migration_view(r) for r in conn.execute(query)]

    def rollbacks_of(self, run_id: str) -> list[RunView]:
        """The runs that roll `run_id` back (their options say `rolls_back: run_id`), oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(runs.c.id, runs.c.options).where(
                runs.c.started_at >= select(runs.c.started_at).where(runs.c.id == run_id).scalar_subquery())).all()
            ids = [r.id for r in rows if (r.options or {}).get("rolls_back") == run_id]
            return self._runs(conn, select(runs).where(runs.c.id.in_(ids)).order_by(runs.c.started_at)) if ids else []

    # --- locks ---------------------------------------------------------------------------------

    def acquire_lock(self, resource: str, *, run_id: str, owner: str | None = None) -> LockInfo:
        """Take the lock on `resource` or raise LockHeld naming the holder (see journal_locks)."""
        try:
            return self._locks.acquire(resource, run_id, owner)
        except SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            raise JournalUnavailable(f"cannot take the lock on {resource} in {self.url_for_display}: "
                                     f"{first_line(exc)}") from None

    def heartbeat(self, lock: LockInfo) -> None:
        self._locks.heartbeat(lock)

    def check_lock(self, lock: LockInfo) -> None:
        """LockLost unless this process still holds `lock`; cheap enough to ask before every AWS call."""
        self._locks.check(lock)

    def release_lock(self, lock: LockInfo) -> None:
        self._locks.release(lock)

    def force_unlock(self, lock_id: str, force: bool = False) -> LockInfo | None:
        """Remove a lock row (HolderAlive if its runner is still running and not `force`; see journal_locks)."""
        return self._locks.force_unlock(lock_id, force)

    def list_locks(self) -> list[LockInfo]:
        return self._locks.list()

    def schema_revision(self) -> str | None:
        with self._read() as conn:
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()

    def close(self) -> None:
        self._locks.close()
        self._engine.dispose()
        if self._lock_engine is not None:
            self._lock_engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
