"""`xksmigrate plan`: what a run would check and do, without changing anything (like `terraform plan`).

For each key store: a read-only snapshot, the engine's gate and the full inspector, the exact
mutating call sequence and the rollback sequence. Nothing is written to the journal; it is only
read, to report other unfinished runs in the same Region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import StoreConfig
from migrator.plan import KeystorePlan, Plan
from migrator.preflight import gate
from migrator.preflight.base import Finding, block


@dataclass
class StorePlan:
    ref: str
    store_id: str | None
    current: dict[str, Any] | None
    findings: list[Finding]
    calls: list[str]
    rollback: list[str]

    @property
    def blocked(self) -> bool:
        return gate.blocked(self.findings)


@dataclass
class PlanReport:
    plan: Plan
    stores: list[StorePlan] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(s.blocked for s in self.stores)

    @property
    def exit_code(self) -> int:
        return 3 if self.blocked else 0


class _View:
    """What gate.essential_checks reads from a Driver, for a store that is only looked at."""

    def __init__(self, ks: KeystorePlan, snapshot: dict[str, Any]):
        self.ks, self.snapshot = ks, snapshot

    @property
    def original(self) -> StoreConfig:
        return StoreConfig.from_dict(self.snapshot)

    @property
    def desired(self) -> StoreConfig:
        return StoreConfig.for_target(self.ks.target, self.original)


class _Context:
    """What gate.* reads from a RunContext, without a run."""

    run_id = ""

    def __init__(self, plan: Plan, env: Any):
        self.plan, self.env, self.journal = plan, env, env.journal

    def secret(self, ref: str) -> SecretValue:
        if self.env.secret_resolver is None:
            raise ValueError(f"no way to resolve {ref}")
        return self.env.secret_resolver(ref)


def make_report(plan: Plan, env: Any) -> PlanReport:
    from migrator.preflight import inspector as inspect

    kms = KmsApplier(env.clients.client("kms"))
    ctx = _Context(plan, env)
    report = PlanReport(plan)
    for ks in plan.keystores:
        try:
            obs = kms.find_store(store_id=ks.id, name=None if ks.id else ks.name)
        except AwsCallError as exc:
            report.stores.append(StorePlan(ks.ref, None, None, [block("keystore.readable", str(exc))], [], []))
            continue
        if obs is None:
            pctx = inspect.PreflightContext(plan=plan, keystore=ks, snapshot=None, clients=env.clients,
                                            secret_resolver=ctx.secret)
            report.stores.append(StorePlan(ks.ref, None, None, list(inspect.preflight(pctx)), [], []))
            continue
        snapshot = obs.to_dict()
        view = _View(ks, snapshot)
        findings = gate.essential_checks(ctx, view) + gate.inspector_checks(ctx, view)
        entry = gate.describe_entry(snapshot)
        calls, rollback = inspect.mutating_calls(plan, ks, entry), inspect.rollback_calls(plan, ks, entry)
        report.stores.append(StorePlan(ks.ref, obs.id, snapshot, findings, calls, rollback))
    return report


def render(report: PlanReport, json_output: bool) -> None:
    import json
    import sys

    out = sys.stdout
    if json_output:
        out.write(json.dumps({"type": "version", "xksmigrate": "0.1.0", "schema": 1, "command": "plan"}) + "\n")
        for s in report.stores:
            for f in s.findings:
                out.write(json.dumps({"type": "finding", "keystore": s.store_id or s.ref, "check": f.check,
                                      "status": f.status, "message": f.message, "remedy": f.remedy,
                                      "detail": f.detail}, default=repr) + "\n")
        out.write(json.dumps({"type": "summary", "plan": report.plan.name, "ready": not report.blocked,
                              "exit_code": report.exit_code,
                              "keystores": [{"ref": s.ref, "id": s.store_id, "blocked": s.blocked,
                                             "current": s.current, "calls": s.calls, "rollback": s.rollback}
                                            for s in report.stores]}, default=repr) + "\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    colour = {"pass": "green", "warn": "yellow", "block": "bold red"}
    for s in report.stores:
        console.print(f"\n[bold]{escape(s.store_id or s.ref)}[/bold]  plan {escape(report.plan.name)}, "
                      f"region {report.plan.region}")
        table = Table(show_lines=False, expand=False)
        table.add_column("status")
        table.add_column("check")
        table.add_column("finding", overflow="fold")
        table.add_column("remedy", overflow="fold")
        for f in sorted(s.findings, key=lambda f: ("block", "warn", "pass").index(f.status)):
            table.add_row(f"[{colour[f.status]}]{f.status}[/]", escape(f.check), escape(f.message), escape(f.remedy))
        console.print(table)
        if s.calls:
            console.print("[bold]The run will call, in order:[/bold]")
            for i, call in enumerate(s.calls, 1):
                console.print(f"  {i:2}. {call}", highlight=False, markup=False)
            console.print("[bold]If anything fails after the disconnect, the rollback calls:[/bold]")
            for i, call in enumerate(s.rollback, 1):
                console.print(f"  {i:2}. {call}", highlight=False, markup=False)
    verdict = "[bold red]BLOCKED[/]: fix the blocking findings; nothing was changed" if report.blocked else \
        "[bold green]READY[/]: `xksmigrate run` would proceed to the disconnect after asking"
    console.print(f"\n{verdict}")
