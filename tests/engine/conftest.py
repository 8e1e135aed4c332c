"""Fixtures for engine tests (plain helpers in engine_helpers.py): journals, rehearsal worlds, an Environment.

The engine talks to the world exactly as to AWS: boto3 over HTTP to the world's endpoint URL.
- `journal_url`: a fresh journal, parametrised over SQLite and (with XKSMIGRATE_TEST_PG_URL) PostgreSQL.
- `world(name="public-to-vpc", **overrides)`: a model.World from plans/worlds/<name>.toml; overrides set
  [world] keys (time_scale) and [latencies] keys (connect, disconnect, ...).
- `start_world(world, faults=())`: a started RehearsalServer, stopped after the test.
- `engine_env(server, journal, **kw)`: an engine.Environment wired to that server (dummy credentials; the
  vantage point read from the world's GET /_rehearsal/vantage unless `resolve=` is given).
- `example_plan(name, **overrides)`: plans/<name>.toml with [plan] fields replaced (max_disconnected...).
- `world_log(server)`: the world's own call log, read over HTTP (the proof of what AWS saw).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import PG_URL, example_plan, load_world, make_env, read_world_log


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh journal URL: a file under tmp_path, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state/journal.db"
        return
    if not PG_URL:
        pytest.skip("XKSMIGRATE_TEST_PG_URL is not set")
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT",
                          poolclass=NullPool)
    name = f"xkseng_{secrets.token_hex(5)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(PG_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def journal(journal_url: str) -> Iterator[Any]:
    from migrator.journal.repository import Journal

    j = Journal.open(journal_url)
    yield j
    j.close()


@pytest.fixture
def world() -> Callable[..., Any]:
    return load_world


@pytest.fixture
def start_world() -> Iterator[Callable[..., Any]]:
    from migrator.rehearsal.server import RehearsalServer

    servers: list[Any] = []

    def start(world: Any, faults: Any = (), **kwargs: Any) -> Any:
        server = RehearsalServer(world, faults, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def engine_env() -> Callable[..., Any]:
    return make_env


@pytest.fixture
def plan_for() -> Callable[..., Any]:
    return example_plan


@pytest.fixture
def world_log() -> Callable[[Any], list[dict[str, Any]]]:
    return read_world_log


