"""Helpers for rehearsal-world tests (a uniquely named module, so `from world_helpers import ...` never
collides with another directory's conftest). Fixtures wrapping them live in conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from migrator.rehearsal.server import RehearsalServer
from migrator.rehearsal.world import model
from migrator.rehearsal.world.default import default_world_dict

FAST_TIME_SCALE = 1500.0  # 300 simulated seconds of connect latency take 0.2 real seconds
STORE_ID = "cks-1234567890abcdef0"
VPC_ENDPOINT = "https://myproxy-private.xks.example.com"
VPC_SERVICE = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"


def make_world(mutate: Callable[[dict[str, Any]], None] | None = None, **world_overrides: Any) -> model.World:
    """The default world as a dict, `[world]` overrides applied, then `mutate(dict)`, then validated."""
    data = default_world_dict()
    data["world"].update({"time_scale": FAST_TIME_SCALE, **world_overrides})
    if mutate is not None:
        mutate(data)
    return model.world_from_dict(data, "<test world>")


def aws_client(server: RehearsalServer, service: str, **config: Any) -> Any:
    retries = config.pop("retries", {"mode": "standard", "max_attempts": 3})
    return boto3.client(service, endpoint_url=server.endpoint_url, region_name=server.world.region,
                        aws_access_key_id="AKIDREHEARSAL", aws_secret_access_key="rehearsal-secret",
                        config=Config(retries=retries, **config))


def make_kms_client(server: RehearsalServer, **config: Any) -> Any:
    return aws_client(server, "kms", **config)


def wait_for_state(kms: Any, store_id: str, states: tuple[str, ...] | str, timeout: float = 10.0) -> dict[str, Any]:
    states = (states,) if isinstance(states, str) else states
    deadline = time.monotonic() + timeout
    while True:
        entry = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
        if entry["ConnectionState"] in states or time.monotonic() > deadline:
            return entry
        time.sleep(0.02)
