"""Fixtures for tests that drive the rehearsal world over real HTTP on loopback.

- `world_factory(mutate=None, **world_overrides)` -> model.World from the packaged default world
  (plans/worlds/public-to-vpc.toml) with a high time scale so connects finish in a fraction of a second;
  `mutate(data)` edits the TOML dict before validation.
- `start_world(world=None, faults=(), **server_kwargs)` -> a started RehearsalServer, stopped after the test.
- `running_world` -> a started RehearsalServer on the default world.
- `kms_client(server, **config)` -> a boto3 KMS client for that server (dummy credentials, standard retries).
Plain helpers (aws_client, wait_for_state, constants) are in world_helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from world_helpers import make_kms_client, make_world

from migrator.rehearsal.server import RehearsalServer
from migrator.rehearsal.world import model


@pytest.fixture
def world_factory() -> Callable[..., model.World]:
    return make_world


@pytest.fixture
def start_world() -> Iterator[Callable[..., RehearsalServer]]:
    servers: list[RehearsalServer] = []

    def start(world: model.World | None = None, faults: Any = (), **kwargs: Any) -> RehearsalServer:
        server = RehearsalServer(world or make_world(), faults, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def running_world(start_world: Callable[..., RehearsalServer]) -> RehearsalServer:
    return start_world()


@pytest.fixture
def kms_client() -> Callable[..., Any]:
    return make_kms_client
