"""The preflight gate between the snapshot and the disconnect.

`essential_checks` are the engine's own minimum, kept here so a run can never pass the gate on a
target equal to the current configuration, without a way back for a changed credential, or with
secrets it cannot resolve. `inspector_checks` plugs in the full read-only inspector
(`migrator.inspect`). Every finding is journaled by the caller; any `block` stops the run with
nothing changed.
"""

from __future__ import annotations

from typing import Any

from migrator.aws.secret_refs import SecretError
from migrator.aws.store_config import StoreConfig
from migrator.preflight.base import BLOCK, Finding, PreflightContext, block, ok


def essential_checks(ctx: Any, driver: Any) -> list[Finding]:
    findings: list[Finding] = []
    original, desired = driver.original, driver.desired
    if desired.matches(original):
        findings.append(block("engine.target_differs", "the target equals the current configuration; nothing to do",
                              "change the plan's [keystores.target] or drop this key store from the plan"))
    else:
        findings.append(ok("engine.target_differs", f"changes {_changed(original, desired)}"))
    ks = driver.ks
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
                ctx.secret(ref)
            except SecretError as exc:
                findings.append(block(f"engine.{label}_secret", str(exc), f"make {ref} resolvable on this machine"))
            else:
                findings.append(ok(f"engine.{label}_secret", f"{ref} resolves to a valid XKS proxy secret"))
    return findings


def inspector_checks(ctx: Any, driver: Any) -> list[Finding]:
    """The full inspector, read-only; it never raises for AWS or network problems."""
    from migrator.preflight import inspector as inspect

    pctx = PreflightContext(
        plan=ctx.plan, keystore=driver.ks, snapshot=describe_entry(driver.snapshot), clients=ctx.env.clients,
        secret_resolver=ctx.secret, extra_roots_pem=list(ctx.env.extra_roots_pem), resolve=ctx.env.resolve,
        unfinished_runs=_other_unfinished(ctx), include_cloudwatch=ctx.env.include_cloudwatch)
    return list(inspect.preflight(pctx))


def blocked(findings: list[Finding]) -> bool:
    return any(f.status == BLOCK for f in findings)


def describe_entry(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """The snapshot back in DescribeCustomKeyStores shape, as the inspector expects it."""
    if snapshot is None:
        return None
    xks = {"Connectivity": snapshot.get("connectivity"), "UriEndpoint": snapshot.get("uri_endpoint"),
           "UriPath": snapshot.get("uri_path"), "AccessKeyId": snapshot.get("access_key_id")}
    if snapshot.get("vpc_endpoint_service_name"):
        xks["VpcEndpointServiceName"] = snapshot["vpc_endpoint_service_name"]
    if snapshot.get("vpc_endpoint_service_owner"):
        xks["VpcEndpointServiceOwner"] = snapshot["vpc_endpoint_service_owner"]
    entry = {"CustomKeyStoreId": snapshot.get("id"), "CustomKeyStoreName": snapshot.get("name"),
             "CustomKeyStoreType": snapshot.get("type"), "ConnectionState": snapshot.get("connection_state"),
             "XksProxyConfiguration": xks}
    if snapshot.get("connection_error_code"):
        entry["ConnectionErrorCode"] = snapshot["connection_error_code"]
    return entry


def _other_unfinished(ctx: Any) -> list[str]:
    try:
        runs = ctx.journal.unfinished_runs(ctx.plan.region, ctx.plan.account_id)
    except Exception:
        return []
    return [r.id for r in runs if r.id != ctx.run_id]


def _changed(a: StoreConfig, b: StoreConfig) -> str:
    return ", ".join(f"{k}: {getattr(a, k) or '-'} -> {getattr(b, k) or '-'}"
                     for k in a.__dataclass_fields__ if getattr(a, k) != getattr(b, k))
