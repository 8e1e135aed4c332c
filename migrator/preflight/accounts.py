"""Checks no single account can make: the role into a store's account, and endpoints across accounts.

- `account.role`: the store's account is reached through a role; its credentials were obtained for a
  session as long as the budget plus the rollback's (aws/roles.py asks for exactly that), so a role that
  cannot be assumed, or whose maximum session is shorter, has already failed the snapshot: `refusal`
  turns that AssumeRole error into this finding with its remedy. A role that worked is a pass naming it.
- `target.endpoint_unique_accounts`: "An external key store with public endpoint connectivity cannot use
  the same proxy URI endpoint value as any external key store with VPC endpoint services connectivity in
  the same AWS Region, even if the key stores are in different AWS accounts" (facts §5). A run reaching
  several accounts reads every store of each other account in the store's Region (and counts the plan's
  own targets there, since the run will put them in place). The documented direction (our target public,
  theirs VPC) blocks; the reverse is not documented either way (UNCONFIRMED), so it is unverified: the
  operator decides by name, nothing is left to a failed update in the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from migrator.aws.clients import ClientFactory
from migrator.aws.kms import AwsCallError, KmsApplier
from migrator.aws.roles import Reach, RoleUnavailable, clients_for, role_of, session_seconds
from migrator.aws.store_config import StoreConfig
from migrator.plan import PUBLIC, VPC, KeystorePlan, Plan
from migrator.preflight.base import Finding, block, host_of, ok, unverified


@dataclass(frozen=True)
class Peer:
    """A store of another account in the same Region: as it is, or as this run's plan will leave it."""

    account: str
    store: str  # its id
    name: str
    config: StoreConfig
    planned: bool = False  # a target of this plan (the run puts it in place), not the live configuration


def rollback_budget(plan: Plan) -> float:
    """The rollback's own budget (engine/run_context.py uses the same)."""
    return max(plan.max_disconnected, 900.0)


def role_session_seconds(plan: Plan) -> int:
    return session_seconds(plan.max_disconnected, rollback_budget(plan))


def store_clients(plan: Plan, ks: KeystorePlan, base: ClientFactory) -> ClientFactory:
    """The clients of `ks`'s cell: `base` for the caller's own cell, else its account's through its role."""
    reach = Reach(region=ks.region or plan.region, account_id=ks.account_id, role_arn=ks.role_arn,
                  external_id=ks.external_id)
    return clients_for(base, reach, duration=role_session_seconds(plan))


def secret_clients(plan: Plan, ref: str, base: ClientFactory) -> ClientFactory:
    """The clients that can read a `secretsmanager:` reference: a secret ARN names its account and Region,
    and Secrets Manager answers only there (a store's role in that account; else the caller's own)."""
    parts = ref.removeprefix("secretsmanager:").split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != "secretsmanager":
        return base
    region, account = parts[3], parts[4]
    for ks in plan.keystores:
        if (ks.region or plan.region) == region and ks.account_id == account:
            return store_clients(plan, ks, base)
    return clients_for(base, Reach(region=region, account_id=base.account_id))


def role_finding(ks: KeystorePlan, clients: ClientFactory, plan: Plan) -> Finding | None:
    """A pass for a store reached through a role that worked (None: the caller's own credentials)."""
    role = role_of(clients)
    if role is None:
        return None
    return ok("account.role", f"{ks.role_arn} assumed in account {ks.account_id} for {role.duration} s sessions: "
              f"the budget ({plan.max_disconnected:g} s) plus the rollback's ({rollback_budget(plan):g} s)",
              role_arn=ks.role_arn, session_seconds=role.duration)


def refusal(ks: KeystorePlan, exc: RoleUnavailable, plan: Plan) -> Finding:
    """The block for a role that could not be assumed, with what to do about it."""
    needed = role_session_seconds(plan)
    name = (ks.role_arn or "").rsplit("/", 1)[-1]
    if exc.code == "ValidationError" and "DurationSeconds" in exc.message:
        return block("account.role_session", f"{ks.role_arn} cannot give a {needed} s session (the budget plus the "
                     f"rollback's): {exc.message}", f"aws iam update-role --role-name {name} --max-session-duration "
                     f"{max(needed, 3600)} (in account {ks.account_id}); a role assumed from another role session "
                     "lasts at most 1 hour (role chaining): run from credentials that are not a role session, or "
                     "lower [plan] max_disconnected", role_arn=ks.role_arn, session_seconds=needed)
    return block("account.role", f"cannot assume {ks.role_arn}: {exc.code}: {exc.message}",
                 f"the role's trust policy must name the caller (aws sts get-caller-identity) and, if it asks for "
                 f"one, the external id the plan gives ([plan] external_id or the store's); aws iam get-role "
                 f"--role-name {name} shows it", role_arn=ks.role_arn, code=exc.code)


def reaches_other_accounts(plan: Plan, ks: KeystorePlan) -> bool:
    """Whether the plan names another account in `ks`'s Region (only then is there anything to compare)."""
    return any(s.region == ks.region and s.account_id != ks.account_id for s in plan.keystores)


def region_peers(plan: Plan, ks: KeystorePlan, clients_of: Callable[[KeystorePlan], ClientFactory]) -> list[Peer]:
    """Every store of the other accounts this plan reaches in `ks`'s Region, live and as planned.
    Raises AwsCallError when an account cannot be read (the finding is then unverified)."""
    others = [s for s in plan.keystores if s.region == ks.region and s.account_id != ks.account_id]
    peers: list[Peer] = []
    seen_cells: set[tuple[str | None, str]] = set()
    for other in others:
        if other.cell not in seen_cells:
            seen_cells.add(other.cell)
            kms = KmsApplier(clients_of(other).client("kms"))
            peers.extend(Peer(other.account_id or "?", o.id, o.name, o.config)
                         for o in kms.all_stores() if o.is_external)
        live = next((p for p in peers if not p.planned and p.account == (other.account_id or "?")
                     and (p.store == other.id or p.name == other.name)), None)
        if live is not None:
            peers.append(Peer(live.account, live.store, live.name, StoreConfig.for_target(other.target, live.config),
                              planned=True))
    return peers


def endpoint_findings(ks: KeystorePlan, peers: Sequence[Peer] | None, error: AwsCallError | None = None
                      ) -> list[Finding]:
    """`target.endpoint_unique_accounts` for `ks` against the other accounts' stores (None: only one account)."""
    if error is not None:
        return [unverified("target.endpoint_unique_accounts", f"cannot read the other accounts' key stores in "
                           f"{ks.region}: {error}", "make the role in each account allow kms:DescribeCustomKeyStores")]
    if peers is None:
        return []
    t = ks.target
    host = host_of(t.uri_endpoint)
    if t.connectivity == PUBLIC:
        clash = [p for p in peers if p.config.connectivity == VPC and host_of(p.config.uri_endpoint) == host]
        if clash:
            return [block("target.endpoint_unique_accounts", f"{host} is the endpoint of VPC-connected "
                          f"{_names(clash)}: a public endpoint cannot equal a VPC store's endpoint in the Region, "
                          "even in another account (XksProxyUriEndpointInUseException)",
                          "use another public hostname for this store", stores=[p.store for p in clash])]
    elif t.connectivity == VPC:
        clash = [p for p in peers if p.config.connectivity == PUBLIC and host_of(p.config.uri_endpoint) == host]
        if clash:
            return [unverified("target.endpoint_unique_accounts", f"{host} is also the public endpoint of "
                               f"{_names(clash)}; AWS documents the rule for the public store only, so whether KMS "
                               "accepts this update is not known", "use another private DNS name, or accept this "
                               "check by name if the other store moves first", stores=[p.store for p in clash])]
    accounts = sorted({p.account for p in peers})
    return [ok("target.endpoint_unique_accounts", f"{host} clashes with no store of account"
               f"{'s' if len(accounts) != 1 else ''} {', '.join(accounts) or '(none)'} in {ks.region}")]


def _names(peers: Sequence[Peer]) -> str:
    return ", ".join(f"{p.store} (account {p.account}{', as this plan will leave it' if p.planned else ''})"
                     for p in peers)
