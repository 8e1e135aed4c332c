"""Accounts, roles and request quotas of a rehearsal world: who a caller is and how fast it may call.

Split from `model` (which reads the per-Region items nested under an account, and builds the cells); this
module reads what belongs to an account as a whole: its id, Regions, long-term access keys, the roles
others may assume into it, and its request quotas. It imports only the reader, so `model` can import it.

- A `Quota` is a budget of `rate` requests per *simulated* second, per account and Region, shared by the
  operations listed together (KMS counts each operation on its own: one operation per quota is the AWS
  figure, aws-xks-facts.md §8.1). Simulated seconds, because the tool paces itself in simulated seconds
  (its poll interval is divided by the time scale it is told): a tool that keeps to 5 requests/s at scale 1
  keeps to it at any scale, and the world's log (whose `t` is simulated) shows the same rate.
- A `Role` is assumable by the principals in `trusted` (an account id or `arn:aws:iam::ID:root` for any
  principal of that account, a user or role ARN for that one principal, `*` for anyone), with the
  `external_id` when one is set, for up to `max_session_seconds` (IAM's MaxSessionDuration: 3600..43200).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from migrator.rehearsal.world.reader import Reader

ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
# AWS access key ids: 16-128 word characters (AKIA.../ASIA... in practice; tests use shorter dummies).
ACCESS_KEY = re.compile(r"^[A-Za-z0-9]{16,128}$")
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
PRINCIPAL = re.compile(r"^(\*|[0-9]{12}|arn:aws:(iam|sts)::[0-9]{12}:[\w+=,.@/:-]+)$")
OPERATION = re.compile(r"^[A-Z][A-Za-z0-9]+$")
MIN_SESSION, DEFAULT_SESSION, MAX_SESSION = 900, 3600, 43200  # STS DurationSeconds; IAM MaxSessionDuration
CHAINED_SESSION_MAX = 3600  # role chaining: "at most one hour", not raisable (aws-xks-facts.md, disagree 4)


@dataclass
class Quota:
    operations: list[str]
    rate: float  # requests per simulated second, per account and Region, shared by `operations`


@dataclass
class Role:
    name: str
    trusted: list[str] = field(default_factory=list)
    external_id: str = ""  # "" = no sts:ExternalId condition
    max_session_seconds: int = DEFAULT_SESSION

    def arn(self, account_id: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{self.name}"

    def trusts(self, principal_arn: str) -> bool:
        """Whether the trust policy names this principal (by ARN, its account, or everyone)."""
        account = principal_arn.split(":")[4] if principal_arn.count(":") >= 5 else ""
        return any(t == "*" or t == principal_arn or t in (account, f"arn:aws:iam::{account}:root")
                   for t in self.trusted)


@dataclass
class Account:
    """One account of the world; its per-Region items live in the world's cells (`model.World.cells`)."""

    id: str
    regions: list[str]
    access_keys: list[str] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
    quotas: list[Quota] | None = None  # None: the world's `[[quotas]]`

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.name == name), None)


def read_quotas(tables: list[Reader]) -> list[Quota]:
    out = []
    for r in tables:
        quota = Quota(operations=r.strings("operations", pattern=OPERATION), rate=r.get("rate", float))
        if not quota.operations:
            raise r.fail("operations", "name at least one operation (e.g. \"DescribeCustomKeyStores\")")
        if quota.rate <= 0:
            raise r.fail("rate", "must be positive (requests per simulated second)")
        r.done()
        out.append(quota)
    return out


def read_account(r: Reader, default_account: str, default_region: str) -> Account:
    """The account-wide keys of one `[[accounts]]` table; the caller reads its items, iam, and calls done()."""
    account_id = r.get("id", str, pattern=ACCOUNT_ID)
    regions = r.strings("regions", [default_region], pattern=REGION)
    if not regions:
        raise r.fail("regions", "name at least one Region")
    if len(set(regions)) != len(regions):
        raise r.fail("regions", "names a Region twice")
    if account_id == default_account and default_region not in regions:
        regions = [default_region, *regions]  # the top-level tables live in [world] region
    roles: list[Role] = []
    for t in r.tables("roles"):
        role = Role(name=t.get("name", str, pattern=ROLE_NAME),
                    trusted=t.strings("trusted", [default_account], pattern=PRINCIPAL),
                    external_id=t.get("external_id", str, "", pattern=re.compile(rf"^$|{EXTERNAL_ID.pattern}")),
                    max_session_seconds=t.get("max_session_seconds", int, DEFAULT_SESSION))
        if not DEFAULT_SESSION <= role.max_session_seconds <= MAX_SESSION:
            raise t.fail("max_session_seconds", f"must be {DEFAULT_SESSION}-{MAX_SESSION} (IAM MaxSessionDuration)")
        if any(other.name == role.name for other in roles):
            raise t.fail("name", f"another role of account {account_id} is named {role.name!r}")
        t.done()
        roles.append(role)
    quotas = read_quotas(r.tables("quotas")) if "quotas" in r.table else None
    return Account(id=account_id, regions=regions, access_keys=r.strings("access_keys", pattern=ACCESS_KEY),
                   roles=roles, quotas=quotas)
