"""`xksmigrate plan`: what a run would check and do, without changing anything (like `terraform plan`).

For each key store: a read-only snapshot, the engine's gate and the full inspector, the exact
mutating call sequence and the rollback sequence. Nothing is written to the journal; it is only
read, to report other unfinished runs in the same Region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from migrator.aws.clients import ClientFactory
from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.secret_refs import SecretValue
from migrator.plan import Plan
from migrator.preflight import calls, gate, inspector
from migrator.preflight.base import Finding, PreflightContext, block


@dataclass
class StorePlan:
    ref: str
    store_id: str | None
    current: dict[str, str] | None  # Observation.to_dict() (snake_case), as the CLI renders it
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


class _Run(Protocol):
    @property
    def id(self) -> str: ...


class _Journal(Protocol):
    def unfinished_runs(self, region: str, account_id: str | None = None) -> Sequence[_Run]: ...


class PlanEnvironment(Protocol):
    """What `make_report` reads from the engine's `Environment` (preflight never imports the engine)."""

    @property
    def journal(self) -> _Journal: ...
    @property
    def clients(self) -> ClientFactory: ...
    @property
    def secret_resolver(self) -> Callable[[str], SecretValue] | None: ...
    @property
    def extra_roots_pem(self) -> Sequence[bytes]: ...
    @property
    def resolve(self) -> Callable[[str], str] | None: ...
    @property
    def include_cloudwatch(self) -> bool: ...


def _secret(env: PlanEnvironment) -> Callable[[str], SecretValue]:
    def secret(ref: str) -> SecretValue:
        if env.secret_resolver is None:
            raise ValueError(f"no way to resolve {ref}")
        return env.secret_resolver(ref)

    return secret


def _unfinished_runs(plan: Plan, env: PlanEnvironment) -> tuple[str, ...]:
    """Other unfinished runs in the Region (read-only; a journal that cannot answer reports none)."""
    try:
        return tuple(r.id for r in env.journal.unfinished_runs(plan.region, plan.account_id))
    except Exception:
        return ()


def make_report(plan: Plan, env: PlanEnvironment) -> PlanReport:
    kms = KmsApplier(env.clients.client("kms"))
    secret = _secret(env)
    report = PlanReport(plan)
    for ks in plan.keystores:
        try:
            obs = kms.find_store(store_id=ks.id, name=None if ks.id else ks.name)
        except AwsCallError as exc:
            report.stores.append(StorePlan(ks.ref, None, None, [block("keystore.readable", str(exc))], [], []))
            continue
        if obs is None:
            ctx = PreflightContext(plan=plan, keystore=ks, snapshot=None, clients=env.clients, secret_resolver=secret)
            report.stores.append(StorePlan(ks.ref, None, None, inspector.preflight(ctx), [], []))
            continue
        inputs = gate.GateInputs(plan=plan, keystore=ks, snapshot=obs, clients=env.clients, secret=secret,
                                 extra_roots_pem=tuple(env.extra_roots_pem), resolve=env.resolve,
                                 include_cloudwatch=env.include_cloudwatch,
                                 unfinished_runs=_unfinished_runs(plan, env))
        report.stores.append(StorePlan(ks.ref, obs.id, obs.to_dict(), gate.run_gate(inputs),
                                       calls.mutating_calls(plan, ks, obs), calls.rollback_calls(plan, ks, obs)))
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
