"""The preflight gate between the snapshot and the disconnect.

`essential_checks` are the engine's own minimum, kept here so a run can never pass the gate on a
target equal to the current configuration, without a way back for a changed credential, or with
secrets it cannot resolve. `inspector_checks` plugs in the full read-only inspector
(`migrator.preflight.inspector`). `run_gate` is both, in that order. The gate sees only
`GateInputs`, never the engine: the caller (a run, or `xksmigrate plan`) journals the findings, and
any `block` stops the run with nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from migrator.aws.clients import ClientFactory
from migrator.aws.secret_refs import SecretError, SecretValue
from migrator.aws.store_config import Observation, StoreConfig
from migrator.plan import KeystorePlan, Plan
from migrator.preflight.base import Finding, PreflightContext, block, blocked, ok

__all__ = ["GateInputs", "blocked", "essential_checks", "inspector_checks", "run_gate"]


@dataclass(frozen=True)
class GateInputs:
    """Everything the gate reads, for one key store."""

    plan: Plan
    keystore: KeystorePlan
    snapshot: Observation  # the store as observed: the rollback point
    clients: ClientFactory
    secret: Callable[[str], SecretValue]  # raises SecretError (or another error) when unresolvable
    extra_roots_pem: tuple[bytes, ...] = ()
    resolve: Callable[[str], str] | None = None  # host -> "ip:port"; None = DNS + 443
    include_cloudwatch: bool = False
    unfinished_runs: tuple[str, ...] = ()  # ids of other unfinished runs in the Region (the caller asks the journal)

    @property
    def original(self) -> StoreConfig:
        return self.snapshot.config

    @property
    def desired(self) -> StoreConfig:
        return StoreConfig.for_target(self.keystore.target, self.original)


def essential_checks(inputs: GateInputs) -> list[Finding]:
    findings: list[Finding] = []
    original, desired = inputs.original, inputs.desired
    if desired.matches(original):
        findings.append(block("engine.target_differs", "the target equals the current configuration; nothing to do",
                              "change the plan's [keystores.target] or drop this key store from the plan"))
    else:
        findings.append(ok("engine.target_differs", f"changes {original.describe_diff(desired)}"))
    ks = inputs.keystore
    if ks.target.credential is not None:
        for label, ref in (("target", ks.target.credential.secret_ref),
                           ("original", ks.original_credential.secret_ref if ks.original_credential else None)):
            if ref is None:
                if not ks.accept_no_rollback:
                    findings.append(block("engine.rollback_credential",
                                          "the plan changes the proxy credential but gives no original_credential: "
                                          "a rollback could not restore the old one",
                                          "add [keystores.original_credential] secret = \"env:OLD_XKS_SECRET\""))
                continue
            try:
                inputs.secret(ref)
            except SecretError as exc:
                findings.append(block(f"engine.{label}_secret", str(exc), f"make {ref} resolvable on this machine"))
            else:
                findings.append(ok(f"engine.{label}_secret", f"{ref} resolves to a valid XKS proxy secret"))
    return findings


def inspector_checks(inputs: GateInputs) -> list[Finding]:
    """The full inspector, read-only; it never raises for AWS or network problems."""
    from migrator.preflight import inspector

    ctx = PreflightContext(
        plan=inputs.plan, keystore=inputs.keystore, snapshot=inputs.snapshot, clients=inputs.clients,
        secret_resolver=inputs.secret, extra_roots_pem=inputs.extra_roots_pem, resolve=inputs.resolve,
        unfinished_runs=inputs.unfinished_runs, include_cloudwatch=inputs.include_cloudwatch)
    return list(inspector.preflight(ctx))


def run_gate(inputs: GateInputs) -> list[Finding]:
    """The engine's essential checks, then the inspector."""
    return essential_checks(inputs) + inspector_checks(inputs)
