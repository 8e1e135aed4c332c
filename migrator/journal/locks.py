"""One runner per key store: lock rows for humans, plus PostgreSQL advisory locks for truth.

SQLite (one machine): the row is the lock, taken inside BEGIN IMMEDIATE. A row whose holder ran on this
host and whose pid is dead is reclaimed; a row with an old heartbeat is only *reported* stale, because a
paused laptop is not a dead runner, and taking its lock mid-migration would be worse than waiting.

PostgreSQL (many machines): a session advisory lock on a dedicated connection (never from the pool) is
the lock; it dies with its session, so a killed holder frees it. The row just tells humans who holds it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from migrator.journal.models import STALE_AFTER, HolderAlive, LockHeld, LockInfo, LockLost, lock_view, locks


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

    def heartbeat(self, lock: LockInfo) -> None:
        """Refresh the row; LockLost if an operator removed it or the advisory session died."""
        session = self._sessions.get(lock.id)
        if session is not None:
            try:
                session.exec_driver_sql("SELECT 1")
            except Exception:
                self._drop_session(lock)
                raise LockLost(f"lost the PostgreSQL session holding {lock.id} on {lock.resource}") from None
        with self._engine.begin() as tx:
            count = tx.execute(update(locks).where(locks.c.id == lock.id).values(heartbeat_at=time.time())).rowcount
        if not count:
            raise LockLost(f"lock {lock.id} on {lock.resource} is gone (xksmigrate unlock?); stopping")

    def release(self, lock: LockInfo) -> None:
        with self._engine.begin() as tx:
            tx.execute(delete(locks).where(locks.c.id == lock.id))
        self._drop_session(lock)

    def _drop_session(self, lock: LockInfo) -> None:
        session = self._sessions.pop(lock.id, None)
        if session is None:
            return
        try:
            session.execute(select(func.pg_advisory_unlock(advisory_key(lock.resource))))
        except Exception:  # a dead session has released it already
            pass
        finally:
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
        for lock_id in list(self._sessions):
            self._sessions.pop(lock_id).close()
