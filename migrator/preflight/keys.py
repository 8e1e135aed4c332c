"""Preflight checks of the store's KMS keys, the caller's IAM permissions, and (optionally) CloudWatch.

Keys: the run proves success with Encrypt+Decrypt round trips, so there must be keys to do that
with; the count of keys in the store is the blast radius of the disconnected window. Permissions:
a run that can disconnect but not update or reconnect is the worst outcome, so every action of the
run and of its rollback is simulated up front.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any  # boto3 clients and responses carry no types

from migrator.aws.clients import aws_error_code
from migrator.aws.store_config import KEY_OWN_STATES, KeyInfo
from migrator.plan import VPC
from migrator.preflight.base import (
    BLOCK,
    Finding,
    PreflightContext,
    block,
    caller_identity,
    is_access_denied,
    is_aws_or_network_error,
    ok,
    short_error,
    store_id,
    target_owner,
    unverified,
    warn,
)

MAX_AUTO_VERIFY_KEYS = 3
RUN_ACTIONS = (
    "kms:DescribeCustomKeyStores", "kms:DisconnectCustomKeyStore", "kms:UpdateCustomKeyStore",
    "kms:ConnectCustomKeyStore", "kms:DescribeKey", "kms:ListKeys", "kms:Encrypt", "kms:Decrypt",
)
VPC_ACTIONS = ("ec2:DescribeVpcEndpointServiceConfigurations", "ec2:DescribeVpcEndpointServicePermissions")


def _key_info(meta: Mapping[str, Any]) -> KeyInfo:
    """DescribeKey's KeyMetadata, the parts preflight reads."""
    xks = meta.get("XksKeyConfiguration") or {}
    return KeyInfo(key_id=str(meta.get("KeyId") or ""), arn=str(meta.get("Arn") or ""),
                   state=str(meta.get("KeyState") or ""), custom_key_store_id=str(meta.get("CustomKeyStoreId") or ""),
                   xks_key_id=str(xks.get("Id") or ""))


def store_keys(ctx: PreflightContext) -> list[KeyInfo]:
    """Every KMS key in the store (ListKeys has no store filter: DescribeKey each), cached."""
    if ctx.cache.store_keys is None:
        kms, sid, keys = ctx.clients.client("kms"), store_id(ctx), []
        for page in kms.get_paginator("list_keys").paginate():
            for entry in page.get("Keys", []):
                info = _key_info(kms.describe_key(KeyId=entry["KeyId"]).get("KeyMetadata", {}))
                if info.custom_key_store_id == sid:
                    keys.append(info)
        ctx.cache.store_keys = keys
    return ctx.cache.store_keys


def verify_keys(ctx: PreflightContext) -> list[tuple[str, KeyInfo | None]]:
    """The keys the run will verify with, as (key id, key or None when it does not exist): the plan's, or up
    to 3 Enabled keys of the store."""
    if ctx.cache.verify_keys is None:
        chosen: list[tuple[str, KeyInfo | None]] = []
        if ctx.keystore.verify_key_ids:
            kms = ctx.clients.client("kms")
            for key_id in ctx.keystore.verify_key_ids:
                try:
                    chosen.append((key_id, _key_info(kms.describe_key(KeyId=key_id).get("KeyMetadata", {}))))
                except Exception as exc:
                    if aws_error_code(exc) != "NotFoundException":
                        raise
                    chosen.append((key_id, None))
        else:
            enabled = [k for k in store_keys(ctx) if k.state == "Enabled"]
            chosen.extend((k.key_id, k) for k in enabled[:MAX_AUTO_VERIFY_KEYS])
        ctx.cache.verify_keys = chosen
    return ctx.cache.verify_keys


def external_ids_to_verify(ctx: PreflightContext) -> list[str]:
    """XksKeyConfiguration.Id of the verify keys that belong to the store (for GetKeyMetadata)."""
    try:
        chosen = verify_keys(ctx)
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return []
    sid = store_id(ctx)
    return [k.xks_key_id for _, k in chosen if k is not None and k.custom_key_store_id == sid and k.xks_key_id]


def check_keys(ctx: PreflightContext) -> list[Finding]:
    if ctx.snapshot is None:
        return []
    sid, state = store_id(ctx), ctx.snapshot.state
    keys = store_keys(ctx)
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.state or "?"] = counts.get(k.state or "?", 0) + 1
    found = [ok("keys.blast_radius", f"{len(keys)} KMS key(s) in {sid} will be Unavailable during the window "
                f"({counts.get('PendingDeletion', 0)} pending deletion, {counts.get('Enabled', 0)} Enabled)",
                total=len(keys), by_state=counts)]
    disconnected = state in ("DISCONNECTED", "DISCONNECTING", "FAILED")
    if not ctx.keystore.verify_key_ids:
        usable = counts.get("Enabled", 0)
        if usable:
            found.append(ok("keys.verifiable", f"{min(usable, MAX_AUTO_VERIFY_KEYS)} Enabled key(s) will be used "
                            "for the Encrypt/Decrypt round trip"))
        elif disconnected and counts.get("Unavailable", 0):
            found.append(warn("keys.verifiable", f"{sid} is {state}, so its {counts['Unavailable']} key(s) show "
                              "Unavailable and cannot be chosen for verification now; name them in verify.key_ids",
                              "set [keystores.verify] key_ids = [\"<key id>\"]"))
        else:
            found.append(block("keys.verifiable", f"{sid} has no Enabled key: the run could not prove the new "
                               "connection with a round trip", "create or enable a key in the store, or name one in "
                               "[keystores.verify] key_ids"))
        return found
    judged = [(key, _judge_verify_key(asked, key, sid, state, disconnected)) for asked, key in verify_keys(ctx)]
    usable = any(f.status != BLOCK for _, f in judged)
    for key, finding in judged:
        if usable and key is not None and key.state in KEY_OWN_STATES and finding.status == BLOCK:
            # The run leaves such a key out at snapshot time (engine/verify.py); the others prove the store.
            finding = warn("keys.verify_keys", f"verify key {key.key_id} is {key.state}: it is left out of the "
                           "verification, the other verify keys prove the store",
                           f"aws kms enable-key --key-id {key.key_id}  (or drop it from [keystores.verify] key_ids)",
                           key_id=key.key_id, state=key.state)
        found.append(finding)
    return found


def _judge_verify_key(asked: str, key: KeyInfo | None, sid: str, state: str, disconnected: bool) -> Finding:
    if key is None:
        return block("keys.verify_keys", f"verify key {asked} does not exist", "fix [keystores.verify] key_ids",
                     key_id=asked)
    key_id = key.key_id
    if key.custom_key_store_id != sid:
        return block("keys.verify_keys", f"verify key {key_id} is not in {sid} (it is in "
                     f"{key.custom_key_store_id or 'no custom key store'})", "name keys of this store in "
                     "[keystores.verify] key_ids", key_id=key_id)
    key_state = key.state
    if key_state == "Enabled":
        return ok("keys.verify_keys", f"verify key {key_id} is Enabled", key_id=key_id)
    if key_state == "Unavailable" and disconnected:
        return warn("keys.verify_keys", f"verify key {key_id} shows Unavailable because {sid} is {state}; it will "
                    "be judged after the connect", key_id=key_id)
    return block("keys.verify_keys", f"verify key {key_id} is {key_state}: a round trip with it would fail",
                 f"aws kms enable-key --key-id {key_id}  (or choose another key)", key_id=key_id, state=key_state)


def role_arn(arn: str) -> str:
    """arn:aws:sts::1:assumed-role/R/session -> arn:aws:iam::1:role/R (simulation needs the role, not the session)."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{role}"
    return arn


def needed_actions(ctx: PreflightContext) -> list[str]:
    actions = list(RUN_ACTIONS)
    original_vpc = ctx.snapshot is not None and ctx.snapshot.config.connectivity == VPC
    if ctx.keystore.target.connectivity == VPC or original_vpc:
        actions += VPC_ACTIONS
    owner = target_owner(ctx)
    if owner and owner != caller_identity(ctx).get("Account"):
        actions.append("ec2:DescribeVpcEndpointServices")
    return actions


def check_permissions(ctx: PreflightContext) -> list[Finding]:
    ident = caller_identity(ctx)
    found: list[Finding] = []
    if ctx.plan.account_id and ident.get("Account") != ctx.plan.account_id:
        found.append(block("permissions.account", f"credentials are for account {ident.get('Account')}, the plan "
                           f"is for {ctx.plan.account_id}", "use the right --profile", account=ident.get("Account")))
    actions = needed_actions(ctx)
    arn = ident.get("Arn", "")
    if arn.endswith(":root"):
        return [*found, ok("permissions.iam", "running as the account root user: IAM policies do not limit it")]
    principal = role_arn(arn)
    if principal != arn:
        principal = _role_with_path(ctx, principal)
    iam, decisions = ctx.clients.client("iam"), {}
    try:
        for page in iam.get_paginator("simulate_principal_policy").paginate(PolicySourceArn=principal,
                                                                             ActionNames=actions):
            for result in page.get("EvaluationResults", []):
                decisions[result["EvalActionName"]] = result.get("EvalDecision", "")
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        why = "is denied" if is_access_denied(exc) else f"failed ({short_error(exc)})"
        return [*found, unverified("permissions.iam", f"iam:SimulatePrincipalPolicy {why} for {principal}: whether "
                                   "it may call " + ", ".join(actions) + " was NOT checked", "grant "
                                   "iam:SimulatePrincipalPolicy on itself and run preflight again, or review the "
                                   "policies for the listed actions and accept permissions.iam by name",
                                   actions=actions)]
    denied = [a for a in actions if decisions.get(a) != "allowed"]
    if denied:
        return [*found, block("permissions.iam", f"{principal} may not call " + ", ".join(denied) + " (the run "
                              "or its rollback needs them)", "add the actions to the principal's IAM policy",
                              denied=denied, decisions={a: decisions.get(a, "") for a in denied})]
    return [*found, ok("permissions.iam", f"{principal} may call all {len(actions)} actions the run and rollback "
                       "need (IAM policies only: key policies are not simulated)", actions=actions)]


def _role_with_path(ctx: PreflightContext, arn: str) -> str:
    """The role's real ARN (with its path) when iam:GetRole allows; else the path-less form."""
    try:
        return str(ctx.clients.client("iam").get_role(RoleName=arn.rsplit("/", 1)[-1])["Role"]["Arn"])
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return arn


METRICS: dict[str, tuple[str, Callable[[float], bool], str]] = {  # name -> (statistic, worrying?, message)
    "XksProxyErrors": ("Sum", lambda v: v > 0, "proxy errors in the last hour: {v:.0f}"),
    "XksProxyLatency": ("Average", lambda v: v > 200,
                        "average proxy latency {v:.0f} ms in the last hour (alarm > 200)"),
    "XksProxyCertificateDaysToExpire": ("Minimum", lambda v: v < 30, "proxy certificate expires in {v:.0f} days"),
}


def check_cloudwatch(ctx: PreflightContext) -> list[Finding]:
    """The last hour of the store's KMS metrics (names discovered with ListMetrics: the docs disagree on some)."""
    if not ctx.include_cloudwatch or ctx.snapshot is None:
        return []
    sid = store_id(ctx)
    try:
        cw, listed = ctx.clients.client("cloudwatch"), []
        for page in cw.get_paginator("list_metrics").paginate(
                Namespace="AWS/KMS", Dimensions=[{"Name": "CustomKeyStoreId", "Value": sid}]):
            listed += page.get("Metrics", [])
        end = dt.datetime.now(dt.UTC)
        values: dict[str, list[float]] = {}
        for metric in listed:
            name = metric.get("MetricName", "")
            if name not in METRICS:
                continue
            stat = METRICS[name][0]
            points = cw.get_metric_statistics(Namespace="AWS/KMS", MetricName=name,
                                              Dimensions=metric.get("Dimensions", []),
                                              StartTime=end - dt.timedelta(hours=1), EndTime=end, Period=300,
                                              Statistics=[stat]).get("Datapoints", [])
            values.setdefault(name, []).extend(p[stat] for p in points if stat in p)
    except Exception as exc:
        if not is_aws_or_network_error(exc):
            raise
        return [unverified("cloudwatch.metrics", f"could not read the CloudWatch metrics of {sid} "
                           f"({short_error(exc)}): they were NOT checked", "allow cloudwatch:ListMetrics and "
                           "GetMetricStatistics, or drop --cloudwatch; by hand: aws cloudwatch list-metrics "
                           "--namespace AWS/KMS --dimensions Name=CustomKeyStoreId,Value=" + sid)]
    found: list[Finding] = []
    for name, (stat, bad, text) in METRICS.items():
        if not values.get(name):
            continue
        v = sum(values[name]) if stat == "Sum" else (
            max(values[name]) if stat == "Average" else min(values[name]))
        if bad(v):
            found.append(warn("cloudwatch.metrics", text.format(v=v), "check the proxy before migrating",
                              metric=name, value=v))
    if not found:
        seen = sorted(values)
        found.append(ok("cloudwatch.metrics", "last hour: " + (", ".join(seen) + " within limits" if seen else
                                                            "no XKS metrics reported"), metrics=seen))
    return found
