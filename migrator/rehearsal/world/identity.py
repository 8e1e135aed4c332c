"""Who is calling and how fast: access keys to accounts, STS role sessions, and per account-Region quotas.

- `Identity.caller(access_key_id, session_token)`: a world-issued session key is its role's account (refused
  with `AuthFailure("expired")` once the world's clock passes its expiry, `"invalid"` with a wrong token); a
  long-term key listed under `[[accounts]] access_keys` is that account; any other key is the default
  account, so every client that worked before keeps working.
- `Identity.assume(...)`: a new session of a role, expiring `duration` simulated seconds from now.
- `Quotas.admit(account, region, operation)`: at most `capacity` requests in any window of `capacity / rate`
  simulated seconds (capacity = max(1, floor(rate))), per quota and cell; a refused request uses no budget.

The signatures are not verified: the world checks configuration and identity, not cryptography (the secret
access key of a session is handed out and forgotten). Nothing here is logged with a secret or token.
"""

from __future__ import annotations

import base64
import math
import random
import threading
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from migrator.rehearsal.world import model

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

# The principal ARN of the request being answered, set by the server around each API call (each request has
# its own thread, hence its own context): what KMS tells a proxy (awsPrincipalArn) and IAM/EC2 name in errors.
# "" = the cell's `[iam] caller_arn` (or its default), as before.
CALLER_ARN: ContextVar[str] = ContextVar("rehearsal_caller_arn", default="")


class AuthFailure(Exception):
    """A request whose credentials the world refuses: kind "expired" or "invalid"; `account` when known."""

    def __init__(self, kind: str, detail: str, account: str | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.account = kind, detail, account


@dataclass
class Session:
    """One AssumeRole session; `expires_t` is on the world's simulated clock."""

    access_key_id: str
    token: str
    account: str
    role: str
    session_name: str
    expires_t: float
    chained: bool  # assumed with role-session credentials (role chaining: at most 3600 s)

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{self.account}:assumed-role/{self.role}/{self.session_name}"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/{self.role}"


@dataclass
class Caller:
    account: str
    arn: str  # as GetCallerIdentity reports it: a user, or arn:aws:sts::ID:assumed-role/ROLE/SESSION
    session: Session | None = None

    @property
    def principal(self) -> str:
        """The ARN a trust policy names: the role for a role session, else the caller's ARN."""
        return self.session.role_arn if self.session is not None else self.arn


class Identity:
    """Access keys and sessions of one world (its own lock: the server asks before taking the world's)."""

    def __init__(self, world: model.World, clock: Callable[[], float], rng: random.Random):
        self.world, self.clock, self.rng = world, clock, rng
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.key_accounts = {key: a.id for a in world.accounts for key in a.access_keys}

    def long_term_arn(self, account: str) -> str:
        cell = self.world.all_cells().get((account, self.home_region(account)))
        arn = cell.iam.caller_arn if cell is not None else ""
        return arn or f"arn:aws:iam::{account}:user/rehearsal-operator"

    def home_region(self, account: str) -> str:
        found = self.world.account(account)
        return found.regions[0] if found is not None else self.world.region

    def caller(self, access_key_id: str, token: str | None) -> Caller:
        with self._lock:
            session = self.sessions.get(access_key_id)
        if session is None:
            account = self.key_accounts.get(access_key_id, self.world.account_id)
            return Caller(account, self.long_term_arn(account))
        if token != session.token:
            raise AuthFailure("invalid", f"the session token does not belong to {access_key_id}", session.account)
        if self.clock() >= session.expires_t:
            raise AuthFailure("expired", f"session {access_key_id} expired at t={session.expires_t:g}",
                              session.account)
        return Caller(session.account, session.arn, session)

    def assume(self, caller: Caller, account: str, role: model.Role, session_name: str, duration: float) -> \
            tuple[Session, str]:
        """(the new session, its secret access key): the secret is returned once and never kept."""
        with self._lock:
            key = "ASIA" + "".join(self.rng.choice(_B32) for _ in range(16))
            secret = base64.b64encode(self.rng.randbytes(30)).decode()
            token = base64.b64encode(self.rng.randbytes(96)).decode()
            session = Session(key, token, account, role.name, session_name, self.clock() + duration,
                              chained=caller.session is not None)
            self.sessions[key] = session
        return session, secret

    def snapshot(self) -> list[dict[str, object]]:
        with self._lock:
            return [{"access_key_id": s.access_key_id, "account": s.account, "role": s.role,
                     "session_name": s.session_name, "expires_t": round(s.expires_t, 3), "chained": s.chained}
                    for s in self.sessions.values()]


class Quotas:
    """Per account-Region request budgets (`[[quotas]]`, `[[accounts.quotas]]`) on the simulated clock."""

    def __init__(self, world: model.World, clock: Callable[[], float]):
        self.clock = clock
        self._default = list(world.quotas)
        self._by_account = {a.id: a.quotas for a in world.accounts if a.quotas is not None}
        self._windows: dict[tuple[str, str, int], deque[float]] = {}
        self._lock = threading.Lock()

    def quotas(self, account: str) -> list[model.Quota]:
        return self._by_account.get(account, self._default)

    def admit(self, account: str, region: str, operation: str) -> model.Quota | None:
        """None when the request may go on; else the quota it would exceed (the request is then throttled)."""
        now = self.clock()
        with self._lock:
            for i, quota in enumerate(self.quotas(account)):
                if operation not in quota.operations:
                    continue
                capacity = max(1, math.floor(quota.rate))
                window = self._windows.setdefault((account, region, i), deque())
                while window and window[0] <= now - capacity / quota.rate:
                    window.popleft()
                if len(window) >= capacity:
                    return quota
            for i, quota in enumerate(self.quotas(account)):
                if operation in quota.operations:
                    self._windows[(account, region, i)].append(now)
        return None
