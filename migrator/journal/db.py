"""Where the journal lives: URL parsing, engines (SQLite WAL + BEGIN IMMEDIATE; psycopg 3), schema upgrades.

Split from journal.py so the repository reads as the contract; nothing here is used outside the journal.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from migrator.journal.models import VERSION_TABLE, JournalError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_LOCK_KEY = 0x786B736D_69677231  # "xksmigr1": pg_advisory_lock key for schema upgrades
URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB"
# Alembic's migration context (alembic.context) is process-global: two journals upgrading at the same
# moment in one process, from two threads, would run inside each other's context.
_UPGRADE_IN_PROCESS = threading.Lock()


class JournalUnavailable(JournalError):
    """The journal cannot be read or written right now: its disk is full or read-only, or the database is
    unreachable. Not a bug in a statement: the run stops and can be resumed once the journal is back."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database (or the connection to it) is unusable, rather than a statement is wrong."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OperationalError) and _is_statement_error(exc):
        return False
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | OSError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# SQLite reports a damaged schema as OperationalError too; that is a bug or a broken journal, not an
# outage to wait out (PostgreSQL reports it as ProgrammingError, which is never "unavailable").
_STATEMENT_ERRORS = ("no such table", "no such column", "has no column named", "syntax error")


def _is_statement_error(exc: BaseException) -> bool:
    message = str(getattr(exc, "orig", exc)).lower()
    return any(text in message for text in _STATEMENT_ERRORS)


def json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()  # boto3 returns CreationDate as a datetime
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, sort_keys=True)


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def mask(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def parse_url(url: str) -> tuple[URL, str]:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        hint = f"; did you mean sqlite:///{url}?" if "://" not in url else ""
        raise JournalError(f"bad journal URL {mask(url)!r}: expected {URL_FORMS}{hint}") from None
    name = parsed.drivername
    if name in ("sqlite", "sqlite+pysqlite"):
        return parsed, "sqlite"
    if name in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg"), "postgresql"
    raise JournalError(f"unsupported journal driver {name!r} in {mask(url)!r}: use {URL_FORMS} (psycopg 3)")


def sqlite_engine(url: URL, *, read_only: bool = False) -> Engine:
    """A SQLite engine; a new journal file is created 0600 (in a directory created 0700): it names stores and
    people, and its lock rows decide who may change a store. `read_only` opens an existing file with
    `mode=ro` (an auditor's copy) and never creates anything."""
    database = url.database
    if read_only and database and database != ":memory:" and not database.startswith("file:"):
        return _read_only_engine(Path(database).expanduser())
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JournalError(f"cannot create the journal directory {path.parent}: {exc.strerror}") from None
        for target, what in ((path.parent, "directory"), (path, "file")):  # WAL writes -wal/-shm beside the file
            if target.exists() and not os.access(target, os.W_OK):
                raise JournalError(f"the journal {what} {target} is not writable")
        _create_private(path)
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=dumps)
    else:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False},
                               json_serializer=dumps)
    _sqlite_session(engine, pragmas=("busy_timeout = 30000", "journal_mode = WAL", "foreign_keys = ON"))
    return engine


def _create_private(path: Path) -> None:
    """Create the journal file 0600 before SQLite does (SQLite gives its -wal and -shm the file's mode)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise JournalError(f"cannot create the journal {path}: {exc.strerror}") from None


def _read_only_engine(path: Path) -> Engine:
    """`mode=ro`: reads a journal without changing it. A frozen copy (a file nobody may write, or a read-only
    directory) with no WAL beside it is opened `immutable`: SQLite would otherwise create a -shm file next to
    it (or fail to, in a read-only directory) to read a WAL-mode journal."""
    if path.is_dir():
        raise JournalError(f"cannot open the journal {path}: it is a directory")
    if not path.is_file():
        ancestor = next((p for p in path.parents if p.exists()), path.parent)
        if not ancestor.is_dir():
            raise JournalError(f"no journal at {path} (and a writing command cannot create the journal directory "
                               f"{path.parent}: {ancestor} is not a directory)")
        raise JournalError(f"no journal at {path}")
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    frozen = not path.stat().st_mode & 0o222 or not os.access(path.parent, os.W_OK)
    immutable = frozen and not shm.exists() and not (wal.exists() and wal.stat().st_size > 0)
    query = "mode=ro&immutable=1" if immutable else "mode=ro"
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?{query}"
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, timeout=30,
                                                                          check_same_thread=False),
                           json_serializer=dumps)
    _sqlite_session(engine, pragmas=("busy_timeout = 30000", "query_only = ON"))
    return engine


def _sqlite_session(engine: Engine, pragmas: tuple[str, ...]) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        read = conn.get_execution_options().get("journal_read")
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def migrate(engine: Engine, backend: str, *, read_only: bool = False) -> None:
    """Bring the schema to head; a no-op (one SELECT) when it is already there.

    `read_only` only checks: a read-only command never creates or upgrades a journal.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()

    def current(conn: Connection) -> str | None:
        rev = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
        if rev is not None and rev not in {s.revision for s in script.walk_revisions()}:
            raise JournalError(f"the journal schema ({rev}) is newer than this xksmigrate knows (up to {head}); "
                               "upgrade xksmigrate")
        return rev

    with engine.connect().execution_options(journal_read=True) as conn:
        rev = current(conn)
        if rev == head:
            return
    if read_only:
        raise JournalError("not an xksmigrate journal (no schema)" if rev is None else
                           f"the journal schema ({rev}) is older than this xksmigrate's ({head}) and a read-only "
                           "command does not upgrade it; a writing command (run, resume, unlock) does")
    with _UPGRADE_IN_PROCESS, engine.connect() as conn:
        if backend == "postgresql":
            conn.execute(select(func.pg_advisory_lock(SCHEMA_LOCK_KEY)))
            conn.commit()
        try:
            with conn.begin():  # SQLite: BEGIN IMMEDIATE is the lock
                if current(conn) != head:
                    config = Config()
                    config.set_main_option("script_location", str(MIGRATIONS_DIR))
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
        finally:
            if backend == "postgresql":
                conn.execute(select(func.pg_advisory_unlock(SCHEMA_LOCK_KEY)))
                conn.commit()
