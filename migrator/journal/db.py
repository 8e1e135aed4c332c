"""Where the journal lives: URL parsing, engines (SQLite WAL + BEGIN IMMEDIATE; psycopg 3), schema upgrades.

Split from journal.py so the repository reads as the contract; nothing here is used outside the journal.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
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


def sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal directory {path.parent}: {exc.strerror}") from None
        for target, what in ((path.parent, "directory"), (path, "file")):  # WAL writes -wal/-shm beside the file
            if target.exists() and not os.access(target, os.W_OK):
                raise JournalError(f"the journal {what} {target} is not writable")
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=dumps)
    else:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False},
                               json_serializer=dumps)

    @event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi.cursor()
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "foreign_keys = ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        read = conn.get_execution_options().get("journal_read")
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine, backend: str) -> None:
    """Bring the schema to head; a no-op (one SELECT) when it is already there."""
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
        if current(conn) == head:
            return
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
