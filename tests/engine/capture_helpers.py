"""Capturing a running world as the CLI does, and planning on the twin as `plan --world` does (shared by tests)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from engine_helpers import make_env

from migrator import __version__
from migrator.capture.collect import CaptureReach, collect
from migrator.capture.pseudonyms import Pseudonyms
from migrator.capture.translate import translate_plan
from migrator.capture.twin import build_world, world_text
from migrator.plan import Plan
from migrator.preflight import planner

KEY = bytes(range(32))  # a test's capture key: the pseudonyms are stable across a test run


def capture(server: Any, journal: Any, plan: Plan, out: Path, *, key: bytes | None = KEY,
            credentials: dict[str, str] | None = None) -> list[str]:
    """Capture `server` (standing in for the real account) for `plan` into `out`; what it could not see.
    `credentials` replaces the rehearsal's dummy keys (a canary the file must not contain)."""
    env = make_env(server, journal)
    if credentials is not None:
        env = dataclasses.replace(env, clients=dataclasses.replace(env.clients, credentials=credentials))
    reach = CaptureReach(clients=env.clients, resolve=env.resolve, extra_roots_pem=env.extra_roots_pem,
                         secret_resolver=env.secret_resolver)
    table, unseen = build_world(collect(plan, [], reach), Pseudonyms(key), version=__version__)
    out.write_text(world_text(table, unseen, source="a test world"))
    return unseen


def twin_world(path: Path, plan: Plan, secrets: dict[str, str], *, time_scale: float) -> tuple[Any, Plan]:
    """The twin as `plan --world` / `run --dry-run --world` load it, and the plan read through its pseudonyms."""
    from migrator import dryrun

    twin_plan = translate_plan(plan, Pseudonyms(KEY), str(path))
    world = dryrun._world(twin_plan, str(path), secrets)
    world.time_scale = time_scale
    return world, twin_plan


def findings(report: planner.PlanReport) -> list[tuple[int, str, str]]:
    return [(i, f.check, f.status) for i, s in enumerate(report.stores) for f in s.findings]


def with_secret(plan: Plan, ref: str) -> Plan:
    """`plan` whose original credential's secret is `ref`, in its text too (a twin re-reads the text)."""
    import re

    from migrator.plan import parse_plan

    text = re.sub(r'(\[keystores\.original_credential\]\s*\nsecret = )"[^"]*"', lambda m: f'{m.group(1)}"{ref}"',
                  plan.text, count=1)
    assert text != plan.text, "the example plan has an original_credential secret"
    return dataclasses.replace(parse_plan(text, plan.path), path=plan.path)
