"""What `fleet plan` checks that no single store can: the fleet's own findings, beside each store's preflight.

Each store's preflight (its role, its proxy, its service, ...) and the endpoint rules across every account the
fleet reaches come from the plan machinery run on the whole fleet (`FleetSpec.whole`). Here: the rollout's
waves against the proxies the stores depend on (today's, from each store's snapshot, and the target's), and
the roles' session length against each store's budget plus its rollback's.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlparse

from migrator.fleet.rollout import StoreSlot, Wave, plan_waves, shared_proxies
from migrator.fleet.spec import FleetSpec
from migrator.preflight.accounts import role_session_seconds
from migrator.preflight.base import Finding, block, ok

SESSION_CHECK = "fleet.role_session"
SHARED_PROXY_CHECK = "fleet.shared_proxy"


def host(endpoint: str | None) -> str:
    return (urlparse(endpoint or "").hostname or "").lower()


def slots(spec: FleetSpec, current_endpoints: dict[str, str | None]) -> list[StoreSlot]:
    """Each store's proxies: its target's host and (when its snapshot was read) the host it uses today."""
    out = []
    for s in spec.stores:
        hosts = {host(s.keystore.target.uri_endpoint), host(current_endpoints.get(s.ref))} - {""}
        out.append(StoreSlot(s.ref, frozenset(hosts)))
    return out


def waves_for(spec: FleetSpec, current_endpoints: dict[str, str | None]) -> tuple[Wave, ...]:
    return plan_waves(spec.rollout, slots(spec, current_endpoints))


def fleet_findings(spec: FleetSpec, waves: Sequence[Wave], current_endpoints: dict[str, str | None]) -> list[Finding]:
    findings = [_session(spec)] if spec.session_duration is not None else []
    stores = slots(spec, current_endpoints)
    clashes = [(wave, clash) for wave in waves for clash in shared_proxies(wave, stores)]
    for wave, (proxy, first, second) in clashes:
        findings.append(block(SHARED_PROXY_CHECK,
                              f"{wave.label}: {first} and {second} both depend on the proxy {proxy}: one proxy "
                              "failing in the window would take both down at once",
                              "put them in different waves (rollout.waves), or leave them to the ramp, which "
                              "keeps stores of one proxy apart", wave=wave.number, proxy=proxy,
                              stores=[first, second]))
    if not clashes:
        findings.append(ok(SHARED_PROXY_CHECK, f"no wave holds two stores of one proxy ({len(waves)} waves)"))
    return findings


def _session(spec: FleetSpec) -> Finding:
    needed = max(role_session_seconds(s.plan) for s in spec.stores)
    have = spec.session_duration or 0.0
    if have < needed:
        return block(SESSION_CHECK,
                     f"[access] session_duration {have:.0f}s is shorter than a store's budget plus its rollback's "
                     f"({needed}s): a session would end in a window",
                     f"raise the roles' MaxSessionDuration to at least {needed}s (aws iam update-role --role-name "
                     f"ROLE --max-session-duration {needed}) and session_duration with it, or lower "
                     "[defaults] max_disconnected", session_seconds=have, needed_seconds=needed)
    return ok(SESSION_CHECK, f"role sessions of {have:.0f}s cover a store's budget plus its rollback's "
                                f"({needed}s)")
