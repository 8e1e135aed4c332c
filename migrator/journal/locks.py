"""One runner per key store: lock rows for humans, plus PostgreSQL advisory locks for truth.

SQLite (one machine): the row is the lock, taken inside BEGIN IMMEDIATE. A row whose holder ran on this
host and whose pid is dead is reclaimed; a row with an old heartbeat is only *reported* stale, because a
paused laptop is not a dead runner, and taking its lock mid-migration would be worse than waiting.

PostgreSQL (many machines): a session advisory lock on a dedicated connection (never from the pool) is
the lock; it dies with its session, so a killed holder frees it. The row just tells humans who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
import time
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from migrator.journal.db import JournalUnavailable, first_line, is_unavailable
from migrator.journal.models import STALE_AFTER, HolderAlive, LockHeld, LockInfo, LockLost, lock_view, locks

# Is this session's advisory lock on (classid, objid) granted? A bigint key is split into two 32-bit halves.
_HOLDS_ADVISORY = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                   " AND pid = pg_backend_pid() AND classid::bigint = %(hi)s AND objid::bigint = %(lo)s"
                   " AND objsubid = 1)")


def advisory_key(resource: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(b"xksmigrate:" + resource.encode()).digest()[:8], "big", signed=True)


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process on this host (a zombie counts as dead)."""
    if pid <= 0:
        return True  # unknown: never reclaim on a guess
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Locks:
    def __init__(self, engine: Engine, lock_engine: Engine | None, host: str, pid: int, who: str):
        self._engine, self._lock_engine = engine, lock_engine  # lock_engine: PostgreSQL only
        self.host, self.pid, self.who = host, pid, who
        self._sessions: dict[str, Any] = {}  # lock id -> dedicated PostgreSQL connection
        self._session_use = threading.RLock()  # the heartbeat thread and the runner both ask the sessions
        self._lost: dict[str, str] = {}  # lock id -> why its session was found dead (it stays lost)

    def _row(self, resource: str) -> LockInfo | None:
        with self._engine.connect().execution_options(journal_read=True) as conn:
            row = conn.execute(select(locks).where(locks.c.resource == resource)).first()
        return lock_view(row) if row else None

    def _holder_row(self, resource: str, wait: float = 3.0) -> LockInfo | None:
        """The holder's row; a winner of a race writes it just after its advisory lock, so wait a moment."""
        deadline = time.monotonic() + wait
        while (row := self._row(resource)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return row

    def acquire(self, resource: str, run_id: str, owner: str | None) -> LockInfo:
        session = None
        if self._lock_engine is not None:
            session = self._lock_engine.connect()
            if not session.execute(select(func.pg_try_advisory_lock(advisory_key(resource)))).scalar():
                session.close()
                holder = self._holder_row(resource) or LockInfo("", resource, "", "", "", 0, 0.0, 0.0)
                raise LockHeld(holder, stale=bool(holder.id) and holder.heartbeat_age() > STALE_AFTER)
        now = time.time()
        info = LockInfo(f"lock-{secrets.token_hex(4)}", resource, run_id, owner or self.who, self.host, self.pid,
                        now, now)
        try:
            with self._engine.begin() as tx:  # SQLite: BEGIN IMMEDIATE, so check-and-insert is atomic
                row = tx.execute(select(locks).where(locks.c.resource == resource).with_for_update()).first()
                if row is not None:
                    old = lock_view(row)
                    dead = session is not None or (old.host == self.host and not pid_alive(old.pid))
                    if not dead:
                        raise LockHeld(old, stale=old.heartbeat_age(now) > STALE_AFTER)
                    tx.execute(delete(locks).where(locks.c.id == old.id))
                    info = replace(info, reclaimed_from=old.id)
                values = {k: v for k, v in asdict(info).items() if k != "reclaimed_from"}
                tx.execute(insert(locks).values(**values))
        except BaseException:
            if session is not None:
                session.close()  # closing the session releases the advisory lock
            raise
        if session is not None:
            self._sessions[info.id] = session
        return info

    def _check_session(self, lock: LockInfo) -> None:
        """PostgreSQL: LockLost unless our dedicated session is alive and still holds the advisory lock."""
        with self._session_use:
            if lock.id in self._lost:
                raise LockLost(self._lost[lock.id])
            session = self._sessions.get(lock.id)
            if session is None:
                return
            key = advisory_key(lock.resource)
            try:
                held = session.exec_driver_sql(_HOLDS_ADVISORY, {"hi": (key >> 32) & 0xFFFFFFFF,
                                                                 "lo": key & 0xFFFFFFFF}).scalar()
                why = "" if held else f"the PostgreSQL session no longer holds the advisory lock {lock.id}"
            except Exception as exc:
                why = f"lost the PostgreSQL session holding {lock.id} on {lock.resource} ({first_line(exc)})"
            if why:
                self._lost[lock.id] = why
                self._drop_session(lock)
                raise LockLost(why)

    def check(self, lock: LockInfo) -> None:
        """LockLost unless this runner still holds `lock`: its advisory session (PostgreSQL) and its row.

        Asked before every AWS call, so a runner that lost its lock stops at once, not at its next heartbeat.
        JournalUnavailable when the row cannot be read (then nobody can tell who holds the store).
        """
        self._check_session(lock)
        try:
            row = self._row(lock.resource)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            where = self._engine.url.render_as_string(hide_password=True)
            raise JournalUnavailable(f"cannot read the lock {lock.id} in the journal {where}: "
                                     f"{first_line(exc)}") from None
        if row is None or row.id != lock.id:
            raise LockLost(f"lock {lock.id} on {lock.resource} is gone (xksmigrate unlock?)")

    def heartbeat(self, lock: LockInfo) -> None:
        """Refresh the row; LockLost if an operator removed it or the advisory session died."""
        self._check_session(lock)
        with self._engine.begin() as tx:
            count = tx.execute(update(locks).where(locks.c.id == lock.id).values(heartbeat_at=time.time())).rowcount
        if not count:
            raise LockLost(f"lock {lock.id} on {lock.resource} is gone (xksmigrate unlock?); stopping")

    def release(self, lock: LockInfo) -> None:
        with self._engine.begin() as tx:
            tx.execute(delete(locks).where(locks.c.id == lock.id))
        self._drop_session(lock)

    def _drop_session(self, lock: LockInfo) -> None:
        with self._session_use:
            session = self._sessions.pop(lock.id, None)
            if session is None:
                return
            try:
                session.execute(select(func.pg_advisory_unlock(advisory_key(lock.resource))))
            except Exception:  # a dead session has released it already
                pass
            finally:
                with contextlib.suppress(Exception):
                    session.close()

    def holder_alive(self, lock: LockInfo) -> str | None:
        """How we know the lock's runner is still running, or None if it is gone or this machine cannot tell.

        PostgreSQL knows: a live holder's session still has the advisory lock. SQLite knows only on the
        holder's own host (its pid); a lock from another host is the operator's call.
        """
        if self._lock_engine is not None:
            key = advisory_key(lock.resource)
            deadline = time.monotonic() + 2.0  # a holder killed a moment ago: its backend is still closing
            with self._lock_engine.connect() as probe:
                while not probe.execute(select(func.pg_try_advisory_lock(key))).scalar():
                    if time.monotonic() > deadline:
                        return "its PostgreSQL session still holds the advisory lock"
                    time.sleep(0.1)
                probe.execute(select(func.pg_advisory_unlock(key)))
            return None
        if lock.host == self.host and pid_alive(lock.pid):
            return f"pid {lock.pid} is running on this host"
        return None

    def force_unlock(self, lock_id: str, force: bool = False) -> LockInfo | None:
        """Remove a lock row; HolderAlive if its runner is still running, unless `force`. A live holder
        whose row is removed stops at its next heartbeat, before its next AWS call."""
        with self._engine.connect().execution_options(journal_read=True) as conn:
            row = conn.execute(select(locks).where(locks.c.id == lock_id)).first()
        if row is None:
            return None
        info = lock_view(row)
        if not force and (how := self.holder_alive(info)):
            raise HolderAlive(info, how)
        with self._engine.begin() as tx:
            if not tx.execute(delete(locks).where(locks.c.id == lock_id)).rowcount:
                return None
        return info

    def list(self) -> list[LockInfo]:
        with self._engine.connect().execution_options(journal_read=True) as conn:
            rows = conn.execute(select(locks).order_by(locks.c.created_at)).all()
        return [lock_view(r) for r in rows]

    def close(self) -> None:
        """Close dedicated sessions (their advisory locks go with them); rows stay for `unlock` or reclaim."""
        with self._session_use:
            for lock_id in list(self._sessions):
                with contextlib.suppress(Exception):  # a dead session: its advisory lock went with it
                    self._sessions.pop(lock_id).close()
