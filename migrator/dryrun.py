"""`run --dry-run`: the whole machine against an in-process rehearsal world, never a real account.

This is the only engine-side module that imports the rehearsal wing, and only the CLI imports it.
The world comes from `--world FILE` or is derived from the plan (the store in the other
connectivity, everything the target needs present and healthy). The run is recorded in a separate
rehearsal journal (gh-ost #1769: a dry run must never touch a real run's journal), with dummy AWS
credentials and the world's endpoint, so no real credential or endpoint can be reached by accident.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from migrator.aws.clients import ClientFactory
from migrator.engine.clock import Clock
from migrator.plan import Plan

# The rehearsal journal's file name, beside the default journal (cli/environment.py: the per-user state directory).
REHEARSAL_JOURNAL_NAME = "rehearsal.db"
DUMMY_CREDENTIALS = {"aws_access_key_id": "AKIAREHEARSAL0000000", "aws_secret_access_key": "rehearsal",
                     "aws_session_token": None}


class RehearsalError(ValueError):
    """A world or fault file problem, or a world that does not fit the plan; one line."""


@dataclass
class Rehearsal:
    endpoint_url: str
    clients: ClientFactory
    clock: Clock
    extra_roots_pem: list[bytes]
    resolve: Callable[[str], str]
    server: Any
    region: str
    account_id: str


def _world(plan: Plan, world_path: str | None, secrets: dict[str, str]) -> Any:
    from migrator.rehearsal.world import model

    try:
        if world_path:
            world = model.load_world_file(world_path)
        else:
            from migrator.rehearsal.world.derive import world_for_plan

            world = world_for_plan(tomllib.loads(plan.text), secrets)
    except model.WorldFileError as exc:
        raise RehearsalError(str(exc)) from None
    if world.region != plan.region:
        raise RehearsalError(f"{world_path}: world.region: {world.region!r} but the plan's region is "
                             f"{plan.region!r}")
    if world.placeholder_keys:
        _fill_twin_secrets(world, plan, secrets)
    return world


def _fill_twin_secrets(world: Any, plan: Plan, secrets: dict[str, str]) -> None:
    """A captured twin holds no secret: where the plan's own reference resolved here (env:, file:), the twin's
    store and proxy take that value, so the rehearsal probes and signs exactly as the real run would."""
    from migrator.rehearsal.world.captured import fill_secret

    stores = {key: ks for cell in world.all_cells().values() for ks in cell.keystores for key in (ks.id, ks.name)}
    for ks in plan.keystores:
        twin = stores.get(ks.ref)
        if twin is None:
            continue
        for cred, key_id in ((ks.original_credential, twin.access_key_id),
                             (ks.target.credential, ks.target.credential_access_key_id or twin.access_key_id)):
            if cred is not None and cred.secret_ref in secrets:
                fill_secret(world, cred.access_key_id or key_id, secrets[cred.secret_ref])


@contextmanager
def rehearsal(plan: Plan, *, world_path: str | None = None, faults_path: str | None = None,
              secrets: dict[str, str] | None = None, time_scale: float | None = None,
              log_path: str | None = None) -> Iterator[Rehearsal]:
    """Start a world for `plan` on loopback; stop it afterwards."""
    from migrator.rehearsal.server import RehearsalServer
    from migrator.rehearsal.world import model

    world = _world(plan, world_path, secrets or {})
    if time_scale:
        world.time_scale = time_scale
    try:
        faults = model.load_fault_file(faults_path) if faults_path else []
    except model.WorldFileError as exc:
        raise RehearsalError(str(exc)) from None
    proxies = {p.name for p in world.proxies}
    for i, f in enumerate(faults):  # else the server raises it unnamed, as an internal error
        if f.proxy and f.proxy not in proxies:
            raise RehearsalError(f"{faults_path}: faults[{i}].proxy: no proxy named {f.proxy!r}")
    server = RehearsalServer(world, faults, log_path=log_path)
    server.start()
    try:
        clients = ClientFactory(region=world.region, endpoint_url=server.endpoint_url,
                                credentials=dict(DUMMY_CREDENTIALS), cell_rate=plan.request_rate,
                                time_scale=world.time_scale, account_id=world.account_id)
        with open(server.ca_bundle_path, "rb") as fh:
            roots = [fh.read()]
        yield Rehearsal(server.endpoint_url, clients, Clock(world.time_scale), roots,
                        _resolver(server), server, world.region, world.account_id)
    finally:
        server.stop()


def _resolver(server: Any) -> Callable[[str], str]:
    """How this machine reaches a proxy host in the world: the world's vantage point (`[world] vantage`).

    The same map the server answers at /_rehearsal/vantage, read live: inside the VPC (the default) every
    proxy host, private DNS names too; outside it only public names, and a private name is unreachable,
    which the inspector says plainly.
    """

    def resolve(host: str) -> str:
        address = server.vantage().get(host.lower().rstrip("."))
        if address is None:
            raise OSError(f"{host} does not resolve from this machine (private DNS or unknown host)")
        return str(address)

    return resolve
