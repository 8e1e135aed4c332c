"""`xksmigrate plan`: what a run would check and do, without changing anything (like `terraform plan`).

For each key store: a read-only snapshot, the engine's gate and the full inspector, the exact
mutating call sequence and the rollback sequence. Nothing is written to the journal; it is only
read, to report other unfinished runs in the same Region. Fail closed: the report is not ready while
any check blocks or could not be made (`unverified`) and was not accepted by name (the plan's
`[preflight] accept_unverified`, or `--accept-unverified CHECK`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from migrator.aws.clients import ClientFactory
from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.roles import RoleUnavailable
from migrator.aws.secret_refs import SecretValue
from migrator.plan import KeystorePlan, Plan
from migrator.preflight import accounts, calls, gate, inspector
from migrator.preflight.base import ACCEPTED, UNVERIFIED, Finding, PreflightContext, block


@dataclass
class StorePlan:
    ref: str
    store_id: str | None
    current: dict[str, str] | None  # Observation.to_dict() (snake_case), as the CLI renders it
    findings: list[Finding]
    calls: list[str]
    rollback: list[str]
    unused: list[tuple[str, str]] = field(default_factory=list)  # (accepted check, why it accepted nothing)
    account_id: str | None = None  # the store's cell (None: the caller's account)
    region: str = ""

    @property
    def blocked(self) -> bool:
        return gate.blocked(self.findings)

    @property
    def unverified(self) -> list[Finding]:
        """The checks that could not be made and hold the run; each remedy says what would make it checkable."""
        return [f for f in self.findings if f.status == UNVERIFIED]

    @property
    def accepted(self) -> list[Finding]:
        return [f for f in self.findings if f.status == ACCEPTED]


@dataclass
class PlanReport:
    plan: Plan
    stores: list[StorePlan] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        """Not ready: a block, or an unverified check nobody accepted, in any store."""
        return any(s.blocked for s in self.stores)

    @property
    def exit_code(self) -> int:
        return 3 if self.blocked else 0

    def unused_acceptances(self) -> list[tuple[str, str]]:
        """(check, why) for each accepted name that accepted nothing in any store of the plan."""
        used = {f.check for s in self.stores for f in s.accepted}
        first: dict[str, str] = {}
        for s in self.stores:
            for check, why in s.unused:
                first.setdefault(check, why)
        return [(check, why) for check, why in sorted(first.items()) if check not in used]


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
    @property
    def who(self) -> str: ...


def _secret(env: PlanEnvironment) -> Callable[[str], SecretValue]:
    def secret(ref: str) -> SecretValue:
        if env.secret_resolver is None:
            raise ValueError(f"no way to resolve {ref}")
        return env.secret_resolver(ref)

    return secret


def _unfinished_runs(plan: Plan, env: PlanEnvironment) -> tuple[str, ...] | None:
    """Other unfinished runs in the Region (read-only; None: the journal could not answer)."""
    try:
        return tuple(r.id for r in env.journal.unfinished_runs(plan.region, plan.account_id))
    except Exception:
        return None


def accepted(findings: Sequence[Finding], plan: Plan, cli: Collection[str], who: str
             ) -> tuple[list[Finding], list[tuple[str, str]]]:
    """The findings with the plan's and the command line's acceptances applied, and those that accepted nothing."""
    out = gate.accept(gate.accept(findings, plan.accept_unverified, who, "plan"), cli, who, "cli")
    return out, gate.unused_acceptances(out, {*plan.accept_unverified, *cli})


def make_report(plan: Plan, env: PlanEnvironment, accept_unverified: Collection[str] = ()) -> PlanReport:
    secret = _secret(env)
    report = PlanReport(plan)
    for ks in plan.keystores:
        report.stores.append(_store_plan(plan, ks, env, secret))
    for index, finding in gate.same_store_findings([(s.ref, s.store_id) for s in report.stores]).items():
        report.stores[index].findings.append(finding)
    for s in report.stores:
        s.findings, s.unused = accepted(s.findings, plan, accept_unverified, env.who)
    return report


def _store_plan(plan: Plan, ks: KeystorePlan, env: PlanEnvironment, secret: Callable[[str], SecretValue]
                ) -> StorePlan:
    """One store, in its own account and Region (through its role when it names one)."""
    found = _look(plan, ks, env, secret)
    found.account_id, found.region = ks.account_id, ks.region or plan.region
    return found


def _look(plan: Plan, ks: KeystorePlan, env: PlanEnvironment, secret: Callable[[str], SecretValue]) -> StorePlan:
    scoped, clients = plan.for_store(ks), accounts.store_clients(plan, ks, env.clients)
    try:
        obs = KmsApplier(clients.client("kms")).find_store(store_id=ks.id, name=None if ks.id else ks.name)
    except RoleUnavailable as exc:
        return StorePlan(ks.ref, None, None, [accounts.refusal(ks, exc, plan)], [], [])
    except AwsCallError as exc:
        return StorePlan(ks.ref, None, None, [block("keystore.readable", str(exc))], [], [])
    if obs is None:
        ctx = PreflightContext(plan=scoped, keystore=ks, snapshot=None, clients=clients, secret_resolver=secret)
        return StorePlan(ks.ref, None, None, inspector.preflight(ctx), [], [])
    peers = ((lambda: accounts.region_peers(plan, ks, lambda other: accounts.store_clients(plan, other, env.clients)))
             if accounts.reaches_other_accounts(plan, ks) else None)
    inputs = gate.GateInputs(plan=scoped, keystore=ks, snapshot=obs, clients=clients, secret=secret,
                             extra_roots_pem=tuple(env.extra_roots_pem), resolve=env.resolve,
                             include_cloudwatch=env.include_cloudwatch,
                             unfinished_runs=_unfinished_runs(scoped, env), region_peers=peers)
    return StorePlan(ks.ref, obs.id, obs.to_dict(), gate.run_gate(inputs),
                     calls.mutating_calls(scoped, ks, obs), calls.rollback_calls(scoped, ks, obs))
