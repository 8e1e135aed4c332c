"""Reaching a key store's account: the caller's own credentials, or a role assumed in that account.

The custom key store APIs cannot be used across accounts, so a store in another account is reached through
a role in it (as CloudFormation StackSets and botocove do). `clients_for(base, reach)` gives the store's
cell (account and Region) a ClientFactory of its own: same endpoint, time scale and rate settings as
`base`, but its clients sign with the role's credentials, obtained by `base`'s STS client.

Those credentials are botocore's `RefreshableCredentials`: botocore renews them before every request that
finds them close to expiry, so a session that ends mid-window is replaced between two polls and no wait is
interrupted. botocore's refresh margins (15 and 10 minutes before expiry) are in real seconds; in a
rehearsal a simulated hour may last six real seconds, so the margins are divided by the time scale.
A request that still meets an expired token (a rehearsal's clock jumped) renews and is retried once.

A role that cannot be assumed raises `RoleUnavailable` (an AwsCallError of operation AssumeRole) from the
first call that needs its credentials; preflight asks for it first (`AssumedRole.check`), with the session
length the run needs, so a role that cannot cover the budget plus the rollback blocks before any change.
"""

from __future__ import annotations

import getpass
import re
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from migrator.aws.clients import ClientFactory, aws_error_code
from migrator.aws.kms import AwsCallError

MIN_SESSION, MAX_SESSION = 900, 43200  # what AssumeRole's DurationSeconds accepts
ADVISORY_REFRESH, MANDATORY_REFRESH = 15 * 60.0, 10 * 60.0  # botocore's margins before expiry (seconds)
EXPIRED_CODES = frozenset({"ExpiredTokenException", "ExpiredToken", "RequestExpired"})
RE_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]{1,64})$")


@dataclass(frozen=True)
class Reach:
    """How the tool reaches one store: its Region, its account (None: the caller's) and the role to assume
    there (None: the caller's own credentials)."""

    region: str
    account_id: str | None = None
    role_arn: str | None = None
    external_id: str | None = None

    @property
    def cell(self) -> tuple[str, str]:
        return (self.account_id or "caller", self.region)

    def describe(self) -> str:
        where = f"account {self.account_id or '(the caller' + chr(39) + 's)'} in {self.region}"
        return where + (f" through {self.role_arn}" if self.role_arn else "")


class RoleUnavailable(AwsCallError):
    """AssumeRole refused (AccessDenied, a session longer than the role allows, ...): nothing can be called."""


def session_seconds(budget: float, rollback_budget: float) -> int:
    """The role session a run asks for: long enough for the window and its rollback (within STS's range)."""
    return int(min(max(budget + rollback_budget, MIN_SESSION), MAX_SESSION))


class AssumedRole:
    """One role session source: AssumeRole through `sts`, `duration` seconds per session."""

    def __init__(self, sts: Any, reach: Reach, duration: int, who: str | None = None):
        self.sts, self.reach, self.duration = sts, reach, duration
        self.session_name = re.sub(r"[^\w+=,.@-]", "-", f"xksmigrate-{who or _user()}")[:64]
        self.sessions = 0  # AssumeRole calls made (each renewal is one)
        self._lock = threading.Lock()

    def assume(self, duration: int | None = None) -> dict[str, Any]:
        """One AssumeRole call; RoleUnavailable with AWS's code and message when STS refuses."""
        params: dict[str, Any] = {"RoleArn": self.reach.role_arn, "RoleSessionName": self.session_name,
                                  "DurationSeconds": duration or self.duration}
        if self.reach.external_id:
            params["ExternalId"] = self.reach.external_id
        try:
            response = self.sts.assume_role(**params)
        except Exception as exc:  # botocore's ClientError or a connection error: the code, never a traceback
            meta = getattr(exc, "response", {}) or {}
            raise RoleUnavailable("AssumeRole", aws_error_code(exc), str(meta.get("Error", {}).get("Message")
                                                                       or exc), meta.get("ResponseMetadata", {})
                                  .get("RequestId")) from None
        with self._lock:
            self.sessions += 1
        return dict(response["Credentials"])

    def check(self, duration: int) -> None:
        """Prove the role can be assumed for `duration` seconds (preflight); RoleUnavailable otherwise."""
        self.assume(duration)

    def metadata(self) -> dict[str, str]:
        """What botocore's RefreshableCredentials wants from a refresh."""
        found = self.assume()
        expiry = found["Expiration"]
        return {"access_key": found["AccessKeyId"], "secret_key": found["SecretAccessKey"],
                "token": found["SessionToken"],
                "expiry_time": expiry.isoformat() if isinstance(expiry, datetime) else str(expiry)}


def role_of(clients: ClientFactory) -> AssumedRole | None:
    """The role `clients` sign as (None: the caller's own credentials)."""
    return clients.role if isinstance(clients.role, AssumedRole) else None


def clients_for(base: ClientFactory, reach: Reach, duration: int = 3600) -> ClientFactory:
    """The ClientFactory of `reach`'s cell: `base` itself when it is base's own cell and no role is named;
    otherwise one factory per (account, Region, role), kept on `base` so every store there shares it (and
    its poller)."""
    if reach.role_arn is None and reach.region == base.region and reach.account_id in (None, base.account_id):
        return base
    key = (reach.account_id, reach.region, reach.role_arn, reach.external_id)
    with _MAKING:
        found = base.cells.get(key)
        if found is None:
            found = replace(base, region=reach.region, account_id=reach.account_id or base.account_id,
                            request_counter=base.request_counter, cells={}, shared_poller=None, _clients={},
                            _session=base._session)
            if reach.role_arn is not None:
                role = AssumedRole(base.client("sts"), reach, duration)
                found.role = role
                found.credentials = None
                found._session = _role_session(role, reach.region, base.time_scale)
            base.cells[key] = found
        return found


_MAKING = threading.Lock()


def _role_session(role: AssumedRole, region: str, scale: float) -> Any:
    """A boto3 Session whose credentials are the role's, renewed by botocore before they expire."""
    import boto3
    from botocore.credentials import DeferredRefreshableCredentials
    from botocore.session import get_session

    credentials = DeferredRefreshableCredentials(refresh_using=role.metadata, method="sts-assume-role")
    # botocore renews this long before expiry (real seconds); a rehearsal's session is `scale` times shorter.
    credentials._advisory_refresh_timeout = ADVISORY_REFRESH / scale
    credentials._mandatory_refresh_timeout = MANDATORY_REFRESH / scale
    core = get_session()
    core._credentials = credentials  # botocore has no public setter; botocove and boto3-refresh-session do this
    core.set_config_variable("region", region)
    session = boto3.session.Session(botocore_session=core)
    core.register("needs-retry", _renew_expired(credentials))
    return session


def _renew_expired(credentials: Any) -> Any:
    """A `needs-retry` handler: a request refused for an expired token renews the session and goes again."""
    def handler(response: Any = None, attempts: int = 0, **_: Any) -> float | None:
        if response is None or attempts > 1:
            return None
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
        code = (parsed or {}).get("Error", {}).get("Code")
        if code in EXPIRED_CODES:
            credentials._protected_refresh(is_mandatory=True)
            return 0.0
        return None

    return handler


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container: still a valid session name
        return "run"
