"""STS of the rehearsal world: AssumeRole into any account of the world, and GetCallerIdentity of the caller.

boto3's sts client sends both to the world's endpoint URL in the query protocol, signed for service `sts`
(the server routes by the credential scope). AssumeRole follows STS's rules, as far as the world models them:
- RoleArn and RoleSessionName are required (2-64 characters of `[\\w+=,.@-]`), DurationSeconds is
  900..43200 (default 3600), all ValidationError otherwise.
- AccessDenied (403) when the role does not exist, its trust policy does not name the caller (`Role.trusts`),
  or the role wants an external id and the request has another or none; STS does not tell these apart.
- Then DurationSeconds above the role's max_session_seconds, or above 3600 for a role-session caller (role
  chaining), is a ValidationError with STS's text.
- The session's credentials are the role's account's until `DurationSeconds` *simulated* seconds have
  passed on the world's clock; then every call with them is refused (ExpiredTokenException / ExpiredToken).
  `Expiration` is the real (wall-clock) instant at which the world's clock reaches that expiry at its time
  scale, so botocore's refreshable credentials refresh on time without knowing the scale. A jump of the
  world's clock (`POST /_rehearsal/clock`) brings the expiry nearer than `Expiration` said.
Session policies (Policy, PolicyArns), tags, MFA and source identity are accepted and ignored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from migrator.rehearsal.query import iam as query_iam
from migrator.rehearsal.query.common import QueryError, query_body, required
from migrator.rehearsal.world import accounts
from migrator.rehearsal.world.identity import Caller
from migrator.rehearsal.world.state import WorldState

_ROLE_ARN = re.compile(r"^arn:aws:iam::([0-9]{12}):role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]{1,64})$")
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")


def _validation(message: str) -> QueryError:
    return QueryError("ValidationError", message)


def _duration(params: Mapping[str, str]) -> int:
    raw = params.get("DurationSeconds", str(accounts.DEFAULT_SESSION))
    try:
        value = int(raw)
    except ValueError:
        raise _validation(f"Value '{raw}' at 'durationSeconds' failed to satisfy constraint: Member must be "
                          f"a number") from None
    if value < accounts.MIN_SESSION:
        raise _validation(f"1 validation error detected: Value '{value}' at 'durationSeconds' failed to satisfy "
                          f"constraint: Member must have value greater than or equal to {accounts.MIN_SESSION}")
    if value > accounts.MAX_SESSION:
        raise _validation(f"1 validation error detected: Value '{value}' at 'durationSeconds' failed to satisfy "
                          f"constraint: Member must have value less than or equal to {accounts.MAX_SESSION}")
    return value


def assume_role(cell: WorldState, caller: Caller, params: Mapping[str, str]) -> dict[str, Any]:
    role_arn = required(params, "RoleArn", "ValidationError")
    session_name = required(params, "RoleSessionName", "ValidationError")
    if not _SESSION_NAME.match(session_name):
        raise _validation(f"1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to "
                          f"satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*")
    duration = _duration(params)
    found = _ROLE_ARN.match(role_arn)
    if found is None:
        raise _validation(f"{role_arn} is invalid")
    account = cell.root.world.account(found.group(1))
    role = account.role(found.group(2)) if account is not None else None
    if (role is None or not role.trusts(caller.principal)
            or (role.external_id and params.get("ExternalId") != role.external_id)):
        raise QueryError("AccessDenied", f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on "
                                         f"resource: {role_arn}", 403)
    if caller.session is not None and duration > accounts.CHAINED_SESSION_MAX:
        raise _validation("The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
                          "role chaining.")
    if duration > role.max_session_seconds:
        raise _validation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
    session, secret = cell.identity.assume(caller, found.group(1), role, session_name, duration)
    expiration = time.time() + cell.clock.real_seconds(duration)
    cell.base_log.add("session", "AssumeRole", account=session.account, region=cell.region,
                      detail=f"{session.arn} {session.access_key_id} by {caller.arn} until t={session.expires_t:g}")
    return {
        "Credentials": {
            "AccessKeyId": session.access_key_id, "SecretAccessKey": secret, "SessionToken": session.token,
            "Expiration": datetime.fromtimestamp(expiration, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "AssumedRoleUser": {"AssumedRoleId": f"{query_iam.role_id(session.role)}:{session_name}",
                            "Arn": session.arn},
    }


def get_caller_identity(cell: WorldState, caller: Caller, params: Mapping[str, str]) -> dict[str, Any]:
    if caller.session is None:
        return query_iam.get_caller_identity(cell.world, params)
    return {"UserId": f"{query_iam.role_id(caller.session.role)}:{caller.session.session_name}",
            "Account": caller.account, "Arn": caller.arn}


def handle(cell: WorldState, caller: Caller, action: str, params: Mapping[str, str]) -> bytes:
    """One STS action for `caller`, answered in its account's cell; raises QueryError."""
    if action == "AssumeRole":
        return query_body("sts", action, assume_role(cell, caller, params))
    if action == "GetCallerIdentity":
        return query_body("sts", action, get_caller_identity(cell, caller, params))
    raise QueryError("InvalidAction", f"The action {action} is not valid for this web service.")
