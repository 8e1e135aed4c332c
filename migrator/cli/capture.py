"""`xksmigrate capture`: a twin of the real account as a world file, and reading a plan through its pseudonyms.

Capture reaches the account and the proxies exactly as a run would (profile, Region, endpoint URL, the vantage
point of --resolve / XKSMIGRATE_RESOLVE / a loopback world, the plan's extra trusted roots) and makes read-only
calls only. The capture key (for the pseudonyms) is --key REF, else $XKSMIGRATE_CAPTURE_KEY (REF), else
capture.key beside the journal, made on the first scrubbed capture; `plan/run --world` read it the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.cli.errors import fail

if TYPE_CHECKING:
    from migrator.plan import Plan

KEY_FILE = "capture.key"
KEY_ENV = "XKSMIGRATE_CAPTURE_KEY"


def _key_from_ref(ref: str) -> bytes:
    from migrator.capture.pseudonyms import CaptureKeyError, key_from_text

    kind, _, rest = ref.partition(":")
    try:
        if kind == "env":
            if rest not in os.environ:
                raise fail(f"capture key {ref}: the variable {rest} is not set")
            return key_from_text(os.environ[rest], ref)
        if kind == "file":
            try:
                return key_from_text(Path(rest).expanduser().read_text(), ref)
            except OSError as exc:
                raise fail(f"capture key {ref}: cannot read {rest}: {exc.strerror}") from None
    except CaptureKeyError as exc:
        raise fail(str(exc)) from None
    raise fail(f"capture key {ref}: give env:NAME or file:PATH")


def capture_key(ref: str | None, *, create: bool) -> bytes | None:
    from migrator.capture.pseudonyms import CaptureKeyError, load_or_create_key
    from migrator.cli.environment import state_home

    ref = ref or os.environ.get(KEY_ENV)
    if ref:
        return _key_from_ref(ref)
    path = state_home() / KEY_FILE
    if not create and not path.exists():
        return None
    try:
        return load_or_create_key(path)
    except CaptureKeyError as exc:
        raise fail(str(exc)) from None


def plan_for_world(plan: Plan, world: str | None) -> Plan:
    """The plan as a rehearsal on `world` must read it: through the twin's pseudonyms when it is scrubbed."""
    if not world:
        return plan
    from migrator.capture.pseudonyms import Pseudonyms
    from migrator.capture.translate import TwinKeyError, capture_header, check_key, translate_plan

    header = capture_header(world)
    if not header.get("scrubbed"):
        return plan
    key = capture_key(None, create=False)
    try:
        check_key(header, key, world)
    except TwinKeyError as exc:
        raise fail(str(exc)) from None
    return translate_plan(plan, Pseudonyms(key), world)


def capture(*, plan_file: str | None, keystores: list[str], out: str, scrub: bool, key_ref: str | None,
            profile: str | None, region: str | None, endpoint_url: str | None, resolve: list[str]) -> int:
    """Read the account (read-only), write the twin to `out` atomically, say what it could not see."""
    import typer

    from migrator import __version__
    from migrator.aws.clients import ClientFactory
    from migrator.aws.rate_budget import DEFAULT_RATE
    from migrator.aws.secret_refs import resolve_secret
    from migrator.capture.collect import CaptureError, CaptureReach, collect
    from migrator.capture.pseudonyms import Pseudonyms
    from migrator.capture.twin import build_world, world_text
    from migrator.cli import vantage
    from migrator.cli.environment import extra_roots, is_loopback, load_plan
    from migrator.preflight.accounts import secret_clients
    from migrator.preflight.base import is_aws_or_network_error, short_error

    if not plan_file and not keystores:
        raise fail("capture: give --plan PLAN or --keystore ID (repeatable)")
    plan = load_plan(plan_file) if plan_file else None
    the_region = region or (plan.region if plan else None)
    if not the_region:
        raise fail("capture --keystore: give --region (or --plan)")
    if plan and region and region != plan.region:
        raise fail(f"--region {region} differs from the plan's region {plan.region}")
    target = Path(out)
    if not target.parent.is_dir():
        raise fail(f"--out {out}: no directory {target.parent}")
    key = capture_key(key_ref, create=True) if scrub else None
    world = vantage.ask_rehearsal(endpoint_url) if endpoint_url and is_loopback(endpoint_url) else None
    clients = ClientFactory(region=the_region, profile=profile, endpoint_url=endpoint_url, cell_rate=DEFAULT_RATE,
                            account_id=plan.account_id if plan else None)
    roots = (extra_roots(plan) if plan else []) + list(world.trusted_roots_pem if world else ())
    reach = CaptureReach(
        clients=clients, resolve=vantage.resolver(vantage.explicit_resolve(resolve), world.resolve if world else None),
        extra_roots_pem=roots,
        secret_resolver=lambda ref: resolve_secret(ref, client_factory=secret_clients(plan, ref, clients)
                                                   if plan else clients))
    try:
        seen = collect(plan, keystores, reach)
    except CaptureError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        raise fail(f"capture: {short_error(exc)} (nothing was written)", 1) from None
    table, unseen = build_world(seen, Pseudonyms(key), version=__version__)
    text = world_text(table, unseen, source=f"{len(seen.cells)} account-Region cell(s)")
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text)
    os.replace(partial, target)
    stores = sum(len(c.stores) for c in seen.cells)
    typer.echo(f"wrote {out}: {stores} key store(s), {len(table['proxies'])} proxy endpoint(s), "
               f"{sum(len(c.load_balancers) for c in seen.cells)} load balancer(s) in {len(seen.cells)} "
               f"account-Region cell(s); names {'pseudonymised' if key else 'REAL (--no-scrub)'}")
    typer.echo("capture cannot see:")
    for line in unseen:
        typer.echo(f"  - {line}")
    return 0
