"""Preflight: read-only checks that find every problem before the disruptive disconnect.

Once the store is disconnected every key in it is Unavailable, and KMS tests most of the new
configuration only when it updates or connects. So everything that can be checked read-only is
checked first: the store and target (inspect_store), the VPC endpoint service (inspect_vpc), the
proxy's TLS (inspect_tls), the proxy itself (inspect_proxy), keys, IAM and CloudWatch
(inspect_keys), rollback readiness and quota. Each check returns pass/warn/block findings with a
remedy; `preflight` never raises for AWS or network problems - they become findings too.

`mutating_calls` / `rollback_calls` spell out, in AWS CLI form, what a run and its rollback will
do, with secrets shown as their references.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from migrator.aws.kms import update_parameters
from migrator.aws.store_config import StoreConfig
from migrator.plan import KeystorePlan, Plan
from migrator.preflight.base import BLOCK, WARN, Finding, PreflightContext, is_aws_or_network_error, short_error
from migrator.preflight.keys import check_cloudwatch, check_keys, check_permissions
from migrator.preflight.proxy import check_proxy, check_rollback
from migrator.preflight.store import check_keystore, check_quota, check_target
from migrator.preflight.tls import check_tls
from migrator.preflight.vpc import check_vpc

__all__ = ["CHECKS", "Finding", "PreflightContext", "blocked", "mutating_calls", "preflight", "rollback_calls"]

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
    ("quota", check_quota, False),
    ("cloudwatch", check_cloudwatch, True),
)


def preflight(ctx: PreflightContext) -> list[Finding]:
    """Run every check; an AWS/network error inside one becomes a warning naming what was not checked."""
    findings: list[Finding] = []
    usable_store = ctx.snapshot is not None and ctx.snapshot.get("CustomKeyStoreType") == "EXTERNAL_KEY_STORE"
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
            findings.append(Finding(f"{group}.error", WARN, f"the {group} checks could not run: {short_error(exc)}; "
                                    f"they were NOT checked", "check the AWS credentials, Region and permissions",
                                    {"error": short_error(exc)}))
    return findings


def blocked(findings: list[Finding]) -> bool:
    return any(f.status == BLOCK for f in findings)


# -- the call sequences ----------------------------------------------------------------------------------

def _store_arg(keystore: KeystorePlan, snapshot: dict | None) -> str:
    sid = (snapshot or {}).get("CustomKeyStoreId") or keystore.id
    return sid or f"<id of {keystore.name}>"


_CLI_FLAGS = {"XksProxyConnectivity": "--xks-proxy-connectivity", "XksProxyUriEndpoint": "--xks-proxy-uri-endpoint",
              "XksProxyUriPath": "--xks-proxy-uri-path",
              "XksProxyVpcEndpointServiceName": "--xks-proxy-vpc-endpoint-service-name",
              "XksProxyVpcEndpointServiceOwner": "--xks-proxy-vpc-endpoint-service-owner"}


def _config(cfg: dict) -> StoreConfig:
    """A DescribeCustomKeyStores XksProxyConfiguration as the engine's StoreConfig."""
    return StoreConfig(cfg.get("Connectivity") or "", cfg.get("UriEndpoint") or "", cfg.get("UriPath") or "",
                       cfg.get("VpcEndpointServiceName") or "", cfg.get("VpcEndpointServiceOwner") or "",
                       cfg.get("AccessKeyId") or "")


def _update(plan: Plan, sid: str, desired: StoreConfig, current: StoreConfig,
            credential: tuple[str, str] | None) -> str:
    """`aws kms update-custom-key-store` with exactly the parameters the engine sends (kms.update_parameters)."""
    params = update_parameters(sid, desired, current, credential is not None)
    args = ["aws", "kms", "update-custom-key-store", "--custom-key-store-id", sid]
    for name, flag in _CLI_FLAGS.items():
        if name in params:
            args += [flag, params[name]]
    text = shlex.join([*args, "--region", plan.region])
    if credential:
        # The secret is never written out: the reference stands in for RawSecretAccessKey.
        text += (" --xks-proxy-authentication-credential "
                 f"AccessKeyId={credential[0]},RawSecretAccessKey=<{credential[1]}>")
    return text


def _window(plan: Plan, sid: str, update: str, keystore: KeystorePlan, skip_disconnect: bool) -> list[str]:
    r = ["--region", plan.region]
    calls = []
    if not skip_disconnect:
        calls.append(shlex.join(["aws", "kms", "disconnect-custom-key-store", "--custom-key-store-id", sid, *r]))
    calls.append(shlex.join(["aws", "kms", "describe-custom-key-stores", "--custom-key-store-id", sid, *r])
                 + "  # repeat every poll_interval until ConnectionState = DISCONNECTED")
    calls.append(update)
    calls.append(shlex.join(["aws", "kms", "connect-custom-key-store", "--custom-key-store-id", sid, *r]))
    calls.append(shlex.join(["aws", "kms", "describe-custom-key-stores", "--custom-key-store-id", sid, *r])
                 + "  # repeat until ConnectionState = CONNECTED (FAILED: stop, roll back)")
    keys = list(keystore.verify_key_ids) or ["<each of up to 3 Enabled keys of the store>"]
    for key in keys:
        calls.append(shlex.join(["aws", "kms", "encrypt", "--key-id", key, "--plaintext", "fileb://<random 32 bytes>",
                                 "--encryption-context", "xksmigrate-run=<run id>", *r]))
        calls.append(shlex.join(["aws", "kms", "decrypt", "--key-id", key, "--ciphertext-blob",
                                 "fileb://<ciphertext>", "--encryption-context", "xksmigrate-run=<run id>", *r])
                     + "  # plaintext must match")
    return calls


def mutating_calls(plan: Plan, keystore: KeystorePlan, snapshot: dict | None) -> list[str]:
    """The AWS calls a run makes for this store, in order (describe polls and verification included)."""
    sid = _store_arg(keystore, snapshot)
    t = keystore.target
    credential = (t.credential.access_key_id or (snapshot or {}).get("XksProxyConfiguration", {}).get("AccessKeyId",
                  "<current access key id>"), t.credential.secret_ref) if t.credential else None
    current = _config((snapshot or {}).get("XksProxyConfiguration") or {})
    update = _update(plan, sid, StoreConfig.for_target(keystore.target, current), current, credential)
    state = (snapshot or {}).get("ConnectionState")
    return _window(plan, sid, update, keystore, skip_disconnect=state in ("DISCONNECTED", "DISCONNECTING"))


def rollback_calls(plan: Plan, keystore: KeystorePlan, snapshot: dict | None) -> list[str]:
    """The calls that restore the recorded configuration (disconnect first when the store is not disconnected)."""
    cfg = dict((snapshot or {}).get("XksProxyConfiguration") or {})
    sid = _store_arg(keystore, snapshot)
    if not cfg:
        return [f"# no snapshot of {keystore.ref}: nothing recorded to roll back to"]
    original = _config(cfg)
    credential = None
    if keystore.target.credential:
        old = keystore.original_credential
        ref = old.secret_ref if old else "<original secret: not given>"
        credential = ((keystore.original_credential.access_key_id if keystore.original_credential else "")
                      or cfg.get("AccessKeyId", ""), ref)
    update = _update(plan, sid, original, StoreConfig.for_target(keystore.target, original), credential)
    calls = _window(plan, sid, update, keystore, skip_disconnect=False)
    calls[0] += "  # only if the store is not already DISCONNECTED"
    return calls
