"""Preflight: read-only checks that find every problem before the disruptive disconnect.

Once the store is disconnected every key in it is Unavailable, and KMS tests most of the new
configuration only when it updates or connects. So everything that can be checked read-only is
checked first: the store and target (store.py), the VPC endpoint service (vpc.py), the proxy's
TLS (tls.py), the proxy itself and rollback readiness (proxy.py), keys, IAM and CloudWatch
(keys.py), the NLB's targets (balancer.py), and the quota. Each check returns pass/warn/block/unverified
findings with a remedy; `preflight` never raises for AWS or network problems - they become findings too
(`unverified` when a check could not be made: fail closed, never a pass or a mere warning).

`migrator.preflight.calls` spells out, in AWS CLI form, what a run and its rollback will do.
"""

from __future__ import annotations

from collections.abc import Callable

from migrator.preflight.balancer import check_rollback_balancer
from migrator.preflight.base import (
    BLOCK,
    UNVERIFIED,
    Finding,
    PreflightContext,
    blocked,
    is_aws_or_network_error,
    short_error,
)
from migrator.preflight.keys import check_cloudwatch, check_keys, check_permissions
from migrator.preflight.proxy import check_proxy, check_rollback
from migrator.preflight.store import check_keystore, check_quota, check_target
from migrator.preflight.tls import check_tls
from migrator.preflight.vpc import check_vpc

__all__ = ["CHECKS", "Finding", "PreflightContext", "blocked", "preflight"]

# (group id, check): groups that need the store are skipped when it was not found.
CHECKS: tuple[tuple[str, Callable[[PreflightContext], list[Finding]], bool], ...] = (
    ("keystore", check_keystore, False),
    ("target", check_target, True),
    ("vpc", check_vpc, False),
    ("tls", check_tls, False),
    ("keys", check_keys, True),
    ("proxy", check_proxy, True),
    ("permissions", check_permissions, False),
    ("rollback", check_rollback, True),
    ("rollback.vpc", check_rollback_balancer, True),
    ("quota", check_quota, False),
    ("cloudwatch", check_cloudwatch, True),
)


def preflight(ctx: PreflightContext) -> list[Finding]:
    """Run every check; an AWS/network error inside one becomes `unverified`, naming what was not checked."""
    findings: list[Finding] = []
    usable_store = ctx.snapshot is not None and ctx.snapshot.is_external
    for group, check, needs_store in CHECKS:
        if needs_store and not usable_store:
            continue
        try:
            findings.extend(check(ctx))
        except Exception as exc:
            if not is_aws_or_network_error(exc):
                # A bug in a check must not let a run pass unchecked: block, and say which check.
                findings.append(Finding(f"{group}.error", BLOCK, f"the {group} checks failed internally: "
                                        f"{type(exc).__name__}: {str(exc)[:200]}", "report this as a bug"))
                continue
            findings.append(Finding(f"{group}.error", UNVERIFIED, f"the {group} checks could not run: "
                                    f"{short_error(exc)}; they were NOT checked", "fix the AWS credentials, Region "
                                    "or permissions the error names, then run preflight again",
                                    {"error": short_error(exc)}))
    return findings
