"""IAM and STS query APIs over the world's `[iam]` table: who the caller is and what it may do.

SimulatePrincipalPolicy does not evaluate policies: an action is `implicitDeny` when it matches an
entry of `denied_actions` (case-insensitive, `*`/`?` wildcards, as IAM matches actions) and `allowed`
otherwise; `simulation_denied` makes the simulation itself fail with AccessDenied. IAM users are
not modelled, so any PolicySourceArn is accepted; roles are the account's `[[accounts.roles]]` (GetRole).
Unique ids (AIDA.../AROA...) are derived from ARNs and names. GetCallerIdentity here is a long-term
caller's; the server answers STS itself (`query.sts`: AssumeRole, and role sessions' identities).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from migrator.rehearsal.query.common import (
    QueryError,
    caller_arn,
    denied,
    list_param,
    query_body,
    required,
    stable_hex,
)
from migrator.rehearsal.world import model

_CREATED = "2024-01-01T00:00:00Z"


def _unique_id(prefix: str, arn: str) -> str:
    return prefix + stable_hex(arn, "unique-id", length=17).upper()


def role_id(role_name: str) -> str:
    """The AROA... id of a role, as an assumed-role session's UserId shows it."""
    return _unique_id("AROA", role_name)


def _access_denied(world: model.World, action: str, resource: str) -> QueryError:
    return QueryError("AccessDenied", f"User: {caller_arn(world)} is not authorized to perform: {action} "
                                      f"on resource: {resource}", 403)


def simulate_principal_policy(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """One result per (action, resource); resource `*` when no ResourceArns are given."""
    source = required(params, "PolicySourceArn", "InvalidInput")
    if world.iam.simulation_denied or denied(world, "iam:SimulatePrincipalPolicy"):
        raise _access_denied(world, "iam:SimulatePrincipalPolicy", source)
    actions = list_param(params, "ActionNames.member")
    if not actions:
        raise QueryError("InvalidInput", "ActionNames must contain at least one action")
    resources = list_param(params, "ResourceArns.member") or ["*"]
    results = [
        {
            "EvalActionName": action,
            "EvalResourceName": resource,
            "EvalDecision": "implicitDeny" if denied(world, action) else "allowed",
            "MatchedStatements": [],
            "MissingContextValues": [],
        }
        for action in actions
        for resource in resources
    ]
    return {"EvaluationResults": results, "IsTruncated": False}


def _user(world: model.World, arn: str) -> dict[str, Any]:
    resource = arn.split(":user/", 1)[1]
    path, _, name = resource.rpartition("/")
    return {
        "Path": f"/{path}/" if path else "/",
        "UserName": name,
        "UserId": _unique_id("AIDA", arn),
        "Arn": arn,
        "CreateDate": _CREATED,
    }


def get_user(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """The named user, or the caller when it is an IAM user (roles must name one, as in AWS)."""
    name = params.get("UserName", "")
    if denied(world, "iam:GetUser"):
        raise _access_denied(world, "iam:GetUser", name or caller_arn(world))
    if name:
        return {"User": _user(world, f"arn:aws:iam::{world.account_id}:user/{name}")}
    arn = caller_arn(world)
    if ":user/" not in arn:
        raise QueryError("ValidationError", "Must specify userName when calling with non-User credentials")
    return {"User": _user(world, arn)}


def get_caller_identity(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """Never denied (AWS needs no permission for it)."""
    arn = caller_arn(world)
    if ":assumed-role/" in arn:
        role, _, session = arn.split(":assumed-role/", 1)[1].partition("/")
        user_id = f"{role_id(role)}:{session}"
    elif arn.endswith(":root"):
        user_id = world.account_id
    else:
        user_id = _unique_id("AIDA", arn)
    return {"UserId": user_id, "Account": world.account_id, "Arn": arn}


def get_role(world: model.World, params: Mapping[str, str]) -> dict[str, Any]:
    """A role of the caller's account (`[[accounts.roles]]`): its trust policy and MaxSessionDuration."""
    name = required(params, "RoleName", "ValidationError")
    if denied(world, "iam:GetRole"):
        raise _access_denied(world, "iam:GetRole", f"arn:aws:iam::{world.account_id}:role/{name}")
    account = world.account(world.account_id)
    role = account.role(name) if account is not None else None
    if role is None:
        raise QueryError("NoSuchEntity", f"The role with name {name} cannot be found.", 404)
    arn = role.arn(world.account_id)
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "sts:AssumeRole",
                                 "Principal": {"AWS": [t if not t.isdigit() else f"arn:aws:iam::{t}:root"
                                                       for t in role.trusted]}}
    if role.external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": role.external_id}}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    return {"Role": {"Path": "/", "RoleName": name, "RoleId": role_id(name), "Arn": arn, "CreateDate": _CREATED,
                     "AssumeRolePolicyDocument": quote(policy), "MaxSessionDuration": role.max_session_seconds}}


IAM_HANDLERS: dict[str, Callable[[model.World, Mapping[str, str]], dict[str, Any]]] = {
    "SimulatePrincipalPolicy": simulate_principal_policy,
    "GetUser": get_user,
    "GetRole": get_role,
}
STS_HANDLERS: dict[str, Callable[[model.World, Mapping[str, str]], dict[str, Any]]] = {
    "GetCallerIdentity": get_caller_identity,
}


def handle(world: model.World, service: str, action: str, params: Mapping[str, str]) -> bytes:
    """One IAM or STS action; raises QueryError."""
    handlers = IAM_HANDLERS if service == "iam" else STS_HANDLERS
    handler = handlers.get(action)
    if handler is None:
        raise QueryError("InvalidAction", f"The action {action} is not valid for this web service.")
    return query_body(service, action, handler(world, params))
