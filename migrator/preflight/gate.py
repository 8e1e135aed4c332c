"""The preflight gate between the snapshot and the disconnect.

`essential_checks` are the engine's own minimum, kept here so a run can never pass the gate on a
target equal to the current configuration, without a way back for a changed credential, or with
secrets it cannot resolve. `inspector_checks` plugs in the full read-only inspector
(`migrator.preflight.inspector`). `run_gate` is both, in that order. The gate sees only
`GateInputs`, never the engine: the caller (a run, or `xksmigrate plan`) applies the operator's
acceptances (`accept`) and journals the findings; any `block`, or any `unverified` check not accepted
by name, stops the run with nothing changed (fail closed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from migrator.aws.clients import ClientFactory
from migrator.aws.kms import AwsCallError, needs_disconnect, update_parameters
from migrator.aws.secret_refs import SecretError, SecretValue
from migrator.aws.store_config import Observation, StoreConfig
from migrator.plan import KeystorePlan, Plan
from migrator.preflight.accounts import Peer, endpoint_findings, role_finding
from migrator.preflight.base import Finding, PreflightContext, accept, block, blocked, holding, ok, unused_acceptances

# AWS: connecting or disconnecting an external key store "takes approximately five minutes" (facts §2).
AWS_CHANGE_SECONDS = 300.0
# A rehearsal world (a loopback endpoint) may be faster: told out of band, like its time scale.
REHEARSAL_CHANGE_ENV = "XKSMIGRATE_REHEARSAL_CHANGE_SECONDS"

__all__ = ["AWS_CHANGE_SECONDS", "GateInputs", "accept", "blocked", "budget_floor", "change_seconds",
           "essential_checks", "holding", "inspector_checks", "run_gate", "same_store_findings", "unused_acceptances"]


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
    # ids of other unfinished runs in the Region (the caller asks the journal); None: it could not say
    unfinished_runs: tuple[str, ...] | None = ()
    # the other accounts' stores in this Region (preflight/accounts.region_peers); None: one account only
    region_peers: Callable[[], Sequence[Peer]] | None = None

    @property
    def original(self) -> StoreConfig:
        return self.snapshot.config

    @property
    def desired(self) -> StoreConfig:
        return StoreConfig.for_target(self.keystore.target, self.original)


def essential_checks(inputs: GateInputs) -> list[Finding]:
    findings: list[Finding] = []
    original, desired = inputs.original, inputs.desired
    ks = inputs.keystore
    if desired.matches(original) and ks.target.credential is not None:
        findings.append(ok("engine.target_differs", "changes the proxy credential's secret"))
    elif desired.matches(original):
        findings.append(block("engine.target_differs", "the target equals the current configuration; nothing to do",
                              "change the plan's [keystores.target] or drop this key store from the plan"))
    else:
        findings.append(ok("engine.target_differs", f"changes {original.describe_diff(desired)}"))
    findings.append(budget_finding(inputs))
    if (role := role_finding(ks, inputs.clients, inputs.plan)) is not None:
        findings.append(role)
    findings.extend(_cross_account(inputs))
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


def change_seconds(clients: ClientFactory) -> float:
    """How long one disconnect or connect takes: AWS's documented five minutes, lowered only for a rehearsal
    world on loopback that says it is faster (XKSMIGRATE_REHEARSAL_CHANGE_SECONDS, simulated seconds)."""
    host = urlsplit(clients.endpoint_url or "").hostname or ""
    told = os.environ.get(REHEARSAL_CHANGE_ENV, "")
    if not (host in ("localhost", "::1") or host.startswith("127.")) or not told:
        return AWS_CHANGE_SECONDS
    try:
        return min(AWS_CHANGE_SECONDS, max(float(told), 0.0))
    except ValueError:
        return AWS_CHANGE_SECONDS


def _cross_account(inputs: GateInputs) -> list[Finding]:
    if inputs.region_peers is None:
        return []
    try:
        peers = inputs.region_peers()
    except AwsCallError as exc:
        return endpoint_findings(inputs.keystore, None, exc)
    return endpoint_findings(inputs.keystore, peers)


def budget_floor(plan: Plan, keystore: KeystorePlan, original: StoreConfig, change: float) -> float | None:
    """The smallest budget that can ever succeed: a disconnect, a connect and one poll to see it (None: the
    change needs no disconnect, so no window)."""
    desired = StoreConfig.for_target(keystore.target, original)
    if not needs_disconnect(update_parameters("", desired, original, keystore.target.credential is not None)):
        return None
    return 2 * change + plan.poll_interval


def budget_finding(inputs: GateInputs) -> Finding:
    plan, change = inputs.plan, change_seconds(inputs.clients)
    floor = budget_floor(plan, inputs.keystore, inputs.original, change)
    if floor is None:
        return ok("engine.budget_floor", "the change needs no disconnect: the store stays CONNECTED")
    if plan.max_disconnected < floor:
        return block("engine.budget_floor",
                     f"max_disconnected {plan.max_disconnected:g} s is below the floor of {floor:g} s (a disconnect "
                     f"and a connect, {change:g} s each, plus one poll interval): the run could only roll back",
                     f"set [plan] max_disconnected to at least {floor:g} s (\"{_duration(floor)}\")",
                     floor_seconds=floor, budget_seconds=plan.max_disconnected)
    return ok("engine.budget_floor", f"max_disconnected {plan.max_disconnected:g} s covers the floor of {floor:g} s",
              floor_seconds=floor)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(-(-seconds // 1)), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


def inspector_checks(inputs: GateInputs) -> list[Finding]:
    """The full inspector, read-only; it never raises for AWS or network problems."""
    from migrator.preflight import inspector

    ctx = PreflightContext(
        plan=inputs.plan, keystore=inputs.keystore, snapshot=inputs.snapshot, clients=inputs.clients,
        secret_resolver=inputs.secret, extra_roots_pem=inputs.extra_roots_pem, resolve=inputs.resolve,
        unfinished_runs=inputs.unfinished_runs, include_cloudwatch=inputs.include_cloudwatch)
    return list(inspector.preflight(ctx))


def same_store_findings(entries: Sequence[tuple[str, str | None]]) -> dict[int, Finding]:
    """A block for every plan entry that names the same key store as another one (once by id, once by name).

    `entries` are the plan's (ref, resolved store id) pairs in plan order; the result is keyed by index.
    One run cannot change a store twice: it would lock against itself, and only one target can win.
    """
    first_of: dict[str, int] = {}
    found: dict[int, Finding] = {}
    for i, (ref, store_id) in enumerate(entries):
        if not store_id:
            continue
        j = first_of.setdefault(store_id, i)
        if j == i:
            continue
        message = (f"keystores[{j}] ({entries[j][0]}) and keystores[{i}] ({ref}) are the same key store "
                   f"{store_id}: one run changes a store once")
        for index in (j, i):
            found.setdefault(index, block("plan.distinct_keystores", message,
                                          "remove one of the two [[keystores]] entries from the plan",
                                          keystore=store_id, entries=[entries[j][0], ref]))
    return found


def run_gate(inputs: GateInputs) -> list[Finding]:
    """The engine's essential checks, then the inspector."""
    return essential_checks(inputs) + inspector_checks(inputs)
