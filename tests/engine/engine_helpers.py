"""Plain helpers for engine tests (fixtures in conftest.py use them; tests import them by this unique name)."""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("XKSMIGRATE_TEST_PG_URL")
MUTATING = frozenset({"DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore", "CreateKey",
                      "CreateCustomKeyStore", "DeleteCustomKeyStore", "ModifyVpcEndpointServicePermissions",
                      "ModifyVpcEndpointServiceConfiguration", "StartVpcEndpointServicePrivateDnsVerification"})


def load_world(name: str = "public-to-vpc", **overrides: Any) -> Any:
    """A world from plans/worlds/<name>.toml; keyword overrides go to [world] or [latencies]."""
    import tomllib

    from migrator.rehearsal.world import model

    data = tomllib.loads((REPO / "plans" / "worlds" / f"{name}.toml").read_text())
    for key, value in overrides.items():
        section = "world" if key in ("time_scale", "seed", "account_id", "region") else "latencies"
        data.setdefault(section, {})[key] = value
    return model.world_from_dict(data, f"{name}.toml")


def vantage_resolver(server: Any) -> Any:
    """host -> "127.0.0.1:port" by the world's vantage point, read over HTTP from GET /_rehearsal/vantage
    (as the CLI does for a loopback endpoint), so tests meet the world only at its URL. Read on every call:
    a world changed at run time is seen at once. A host the world does not let this machine reach raises."""

    def resolve(host: str) -> str:
        with urllib.request.urlopen(f"{server.endpoint_url}/_rehearsal/vantage", timeout=10) as response:
            reach = json.loads(response.read())["resolve"]
        name = host.lower().rstrip(".")
        if name not in reach:
            raise LookupError(f"{host} cannot be reached from this machine (the rehearsal world's vantage point)")
        return str(reach[name])

    return resolve


def make_env(server: Any, journal: Any, *, approve: bool = True, observer: Any = None, **kwargs: Any) -> Any:
    """An Environment for `server`, as `run --dry-run` builds it, but with a journal of the test's choice;
    the vantage point is the world's (`vantage_resolver`) unless `resolve=` is given."""
    from migrator.aws.clients import ClientFactory
    from migrator.aws.secret_refs import resolve_secret
    from migrator.dryrun import DUMMY_CREDENTIALS
    from migrator.engine.clock import Clock
    from migrator.engine.environment import Environment, Observer

    clients = ClientFactory(region=server.world.region, endpoint_url=server.endpoint_url,
                            credentials=dict(DUMMY_CREDENTIALS))
    roots = [Path(server.ca_bundle_path).read_bytes()]
    kwargs.setdefault("resolve", vantage_resolver(server))
    return Environment(journal=journal, clients=clients, clock=Clock(server.world.time_scale),
                       observer=observer or Observer(), approve=lambda question: approve,
                       secret_resolver=lambda ref: resolve_secret(ref, client_factory=clients),
                       who="pytest", dry_run=True, extra_roots_pem=roots, **kwargs)


# At time_scale 600 one real second is ten simulated minutes, so the example plans' 15-minute budget
# leaves half a real second for everything the engine does while disconnected. A test that is not about
# the budget gives it this much room, so a loaded CI machine (three workers on two cores) cannot turn a
# completion into a budget rollback.
ROOMY_BUDGET = 3600.0


def roomy_plan_file(directory: Path, name: str = "public-to-vpc") -> Path:
    """plans/<name>.toml copied into `directory` with ROOMY_BUDGET, for tests that run it through the CLI."""
    text = (REPO / "plans" / f"{name}.toml").read_text()
    assert 'max_disconnected = "15m"' in text
    path = directory / f"{name}.toml"
    path.write_text(text.replace('max_disconnected = "15m"', f'max_disconnected = "{ROOMY_BUDGET:g}s"'))
    return path


def example_plan(name: str = "public-to-vpc", **overrides: Any) -> Any:
    """plans/<name>.toml, with [plan] fields replaced (e.g. max_disconnected=300.0, poll_interval=2.0)."""
    from migrator.plan import load_plan

    plan = load_plan(REPO / "plans" / f"{name}.toml")
    return dataclasses.replace(plan, **overrides) if overrides else plan


def read_world_log(server: Any) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.endpoint_url}/_rehearsal/log", timeout=10) as response:
        return [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]


def mutating_calls(log: list[dict[str, Any]]) -> list[str]:
    return [e["operation"] for e in log if e.get("kind") == "call" and e.get("operation") in MUTATING]
