"""`fleet plan`'s verdict: every store's preflight with the fleet's own checks and the waves, as one object.

The stores' preflight is `xksmigrate plan`'s report of the whole fleet's plan (`FleetSpec.whole`: each store
through its account's role, the endpoint rules across accounts). Its stores are the fleet's, in file order, so
the two are paired by position: a twin's pseudonyms rename the report's stores, never reorder them. Here the
report is joined with what only the fleet can see (checks.py) and judged the way the fleet will run: each store
is a run of its own, so a store already on its target is "no changes" (done) and holds nobody up, where `plan`
would block a plan in which only some stores are. Pure: no I/O, no output (cli/fleet_plan.py renders it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from migrator.fleet.checks import fleet_findings, waves_for
from migrator.fleet.rollout import Wave
from migrator.fleet.spec import FleetSpec, FleetStore
from migrator.plan import Plan
from migrator.preflight.base import BLOCK, Finding, nothing_to_do
from migrator.preflight.planner import PlanReport, StorePlan

READY, NOT_READY, BLOCKED, NO_CHANGES = "ready", "not_ready", "blocked", "no_changes"


@dataclass(frozen=True)
class FleetPlanReport:
    spec: FleetSpec
    report: PlanReport  # the whole fleet's plan report: one StorePlan per fleet store, in the same order
    findings: tuple[Finding, ...]  # the fleet's own (checks.py): pass or block, never unverified
    waves: tuple[Wave, ...]

    @property
    def pairs(self) -> list[tuple[FleetStore, StorePlan]]:
        return list(zip(self.spec.stores, self.report.stores, strict=True))

    @property
    def changing(self) -> list[StorePlan]:
        """The stores the fleet would change: all but those already on their target."""
        return [s for s in self.report.stores if changes(s)]

    @property
    def blocks(self) -> bool:
        """A block in the fleet's checks or in a store it would change."""
        return any(f.status == BLOCK for f in self.findings) or any(
            f.status == BLOCK for s in self.changing for f in s.findings)

    @property
    def verdict(self) -> str:
        if self.blocks:
            return BLOCKED
        if any(s.blocked for s in self.changing):  # an unverified check nobody accepted
            return NOT_READY
        return READY if self.changing else NO_CHANGES

    @property
    def exit_code(self) -> int:
        """`plan`'s convention: 0 ready or nothing to change, 3 blocked or an unaccepted unverified check."""
        return 0 if self.verdict in (READY, NO_CHANGES) else 3

    def wave_of(self, ref: str) -> int | None:
        return next((w.number for w in self.waves if ref in w.refs), None)


def changes(store: StorePlan) -> bool:
    """The fleet would change this store: it is not already on its target (blocked only by "nothing to do")."""
    return not nothing_to_do(store.findings)


def fleet_report(spec: FleetSpec, report: PlanReport) -> FleetPlanReport:
    """The fleet's checks and waves over the proxies each store uses today (its snapshot in `report`)."""
    seen = seen_as(spec, report.plan)
    current = current_endpoints(seen, report.stores)
    waves = waves_for(seen, current)
    return FleetPlanReport(spec, report, tuple(fleet_findings(seen, waves, current)), waves)


def current_endpoints(spec: FleetSpec, stores: Sequence[StorePlan]) -> dict[str, str | None]:
    """Each fleet store's URI endpoint as its snapshot shows it today (None: the store was not read)."""
    return {fs.ref: (s.current or {}).get("uri_endpoint") or None for fs, s in zip(spec.stores, stores, strict=True)}


def seen_as(spec: FleetSpec, plan: Plan) -> FleetSpec:
    """`spec` with each store's keystore as `plan` (the whole plan the report was made of) holds it.

    The same spec unless a scrubbed twin translated the plan: then the targets' hosts are pseudonyms like the
    snapshots', so a proxy shared today and one shared by a target compare like with like. Refs stay the
    fleet file's (the waves name them)."""
    if plan is spec.whole:
        return spec
    stores = tuple(replace(fs, plan=replace(fs.plan, keystores=(ks,)))
                   for fs, ks in zip(spec.stores, plan.keystores, strict=True))
    return replace(spec, stores=stores, whole=plan)
