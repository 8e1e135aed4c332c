"""Which fleet workers are alive, and taking over the work of one that died.

DBOS has no heartbeat: a worker that dies leaves its workflows PENDING under its executor id, and only a process
that asks (`DBOS._recover_pending_workflows([executor id])`, notes §4) puts them back on their queue for a live
worker, which continues each from its last checkpoint (a store's step then resumes its journal run).

So a worker proves it is alive the way a store's runner does (journal/locks.py):
- PostgreSQL: it holds a session advisory lock named after its executor id on a connection of its own, with TCP
  keepalives. The lock dies with the session: a SIGKILLed worker's at once (its socket closes), a machine that
  vanished within the keepalive bound (KEEPALIVE_BOUND_SECONDS). Another worker that can take the lock knows the
  holder is dead.
- SQLite (one machine): the executor id is host:pid; a pid of this host that is gone is dead. A worker of another
  host is never declared dead on a guess.

Every worker looks every TAKEOVER_POLL_SECONDS, so a dead worker's store continues within
TAKEOVER_POLL_SECONDS + KEEPALIVE_BOUND_SECONDS (+ DBOS's queue poll) of its death.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from migrator.journal.locks import pid_alive

TAKEOVER_POLL_SECONDS = 2.0
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
KEEPALIVE_BOUND_SECONDS = 5 + 2 * 3


def liveness_key(executor_id: str) -> int:
    return int.from_bytes(hashlib.sha256(b"xksmigrate-fleet-worker:" + executor_id.encode()).digest()[:8], "big",
                          signed=True)


def _libpq_url(system_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(system_url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def alive(system_url: str, executor_id: str) -> Iterator[None]:
    """Hold this worker's liveness lock (PostgreSQL) for as long as it works."""
    if not system_url.startswith("postgresql"):
        yield
        return
    import psycopg

    with psycopg.connect(_libpq_url(system_url), autocommit=True, **KEEPALIVE) as conn:  # type: ignore[arg-type]
        conn.execute("SELECT pg_advisory_lock(%s)", (liveness_key(executor_id),))
        yield


def is_dead(system_url: str, executor_id: str) -> bool:
    if not system_url.startswith("postgresql"):
        host, _, pid = executor_id.rpartition(":")
        return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))
    import psycopg

    with psycopg.connect(_libpq_url(system_url), autocommit=True, connect_timeout=10) as conn:
        key = liveness_key(executor_id)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row and row[0]:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            return True
        return False


def take_over_dead(system_url: str, me: str) -> list[str]:
    """Requeue the PENDING fleet work of every dead executor; the executor ids taken over."""
    from dbos import DBOS

    from migrator.fleet.engine import APP_VERSION

    pending: list[Any] = DBOS.list_workflows(status="PENDING", app_version=APP_VERSION, load_input=False,
                                             load_output=False)
    others = sorted({w.executor_id for w in pending if w.executor_id and w.executor_id != me})
    dead = [executor for executor in others if is_dead(system_url, executor)]
    if dead:
        DBOS._recover_pending_workflows(dead)
    return dead


@contextlib.contextmanager
def taking_over(system_url: str, me: str, on_takeover: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, look for dead executors every TAKEOVER_POLL_SECONDS and requeue their work (a `fleet
    run` does too, so a fleet whose worker died while running a store goes on without a person)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(TAKEOVER_POLL_SECONDS):
            with contextlib.suppress(Exception):  # a database hiccup: the next round tries again
                for dead in take_over_dead(system_url, me):
                    on_takeover(dead)

    thread = threading.Thread(target=loop, name="fleet-takeover", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=TAKEOVER_POLL_SECONDS + 1)
