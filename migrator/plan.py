"""plan.toml -> a typed, validated Plan.

Every error is one line naming the file, the key and the reason (`PlanError`), raised before any AWS
call. Validation uses the KMS model's own patterns and lengths and the connectivity rules of
UpdateCustomKeyStore (facts §1.1-1.2). Plans never contain secrets: a credential's secret is a
reference (`env:NAME`, `file:PATH`, `secretsmanager:ARN`), resolved only when needed.

Plan file keys:

    [plan]
    name = "..."                       # required
    region = "us-east-1"               # required
    account_id = "111122223333"        # optional guard: refuse to run in another account
    max_disconnected = "15m"           # downtime budget (default 15m)
    poll_interval = "5s"               # DescribeCustomKeyStores interval (default 5s, minimum 1s)
    request_rate = 1                   # the run's requests per second per account-Region for Describe, Connect,
                                       # Disconnect and Update (default 1, at most AWS's quota 5, which every
                                       # caller in the account shares); its looks stay at most 1 a second
    extra_trusted_roots = ["ca.pem"]   # optional PEM files trusted besides KMS's 130 roots (rehearsals)
    role_name = "xks-migrator"         # optional: the role assumed in each store's account_id (when the store
                                       # gives no role_arn); the custom key store APIs are not cross-account
    external_id = "..."                # optional: the external id those roles want (not a secret)

    [preflight]                        # optional
    accept_unverified = ["proxy.credential"]  # checks that could not be made, run anyway (journaled with who
                                       # and when; RUNBOOK.md#accepting-unverified-checks); a block never is

    [[keystores]]
    id = "cks-..." | name = "..."      # exactly one
    probe = "host:port"                # optional address to reach the target endpoint for TLS checks
    region = "eu-west-1"               # optional: the store's Region (default: [plan] region)
    account_id = "444455556666"        # optional: the store's account (default: [plan] account_id)
    role_arn = "arn:aws:iam::444455556666:role/xks-migrator"  # optional: reach the account through this
                                       # role (default: [plan] role_name in account_id; else own credentials)
    external_id = "..."                # optional: overrides [plan] external_id for this role

    [keystores.target]
    connectivity = "VPC_ENDPOINT_SERVICE" | "PUBLIC_ENDPOINT"
    uri_endpoint = "https://host"
    uri_path = "/prefix/kms/xks/v1"    # optional: unchanged when absent
    vpc_endpoint_service_name = "..."  # required for VPC, forbidden for PUBLIC
    vpc_endpoint_service_owner = "..." # optional, 12 digits, VPC only

    [keystores.target.credential]      # optional: only when the target proxy needs another credential
    access_key_id = "..."
    secret = "env:NEW_XKS_SECRET"

    [keystores.original_credential]    # the secret of the credential in use today (for rollback)
    secret = "env:OLD_XKS_SECRET"      # required when target.credential is set, unless:
    # accept_no_rollback = true        # the operator explicitly accepts a run that cannot roll back

    [keystores.verify]
    key_ids = []                       # empty: up to 3 Enabled keys of the store
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migrator.aws.secret_refs import REFERENCE_FORMS, is_reference
from migrator.plan_toml import PlanError, Table, decode_toml, one_line, show, type_name

PUBLIC = "PUBLIC_ENDPOINT"
VPC = "VPC_ENDPOINT_SERVICE"


@dataclass(frozen=True)
class CredentialRef:
    access_key_id: str  # "" when not given (original_credential: taken from the snapshot)
    secret_ref: str  # env:NAME | file:PATH | secretsmanager:ARN


@dataclass(frozen=True)
class Target:
    connectivity: str
    uri_endpoint: str
    uri_path: str | None = None  # None: keep the current path
    vpc_endpoint_service_name: str | None = None
    vpc_endpoint_service_owner: str | None = None
    credential: CredentialRef | None = None

    @property
    def credential_access_key_id(self) -> str | None:
        """The access key id the target sets (None: the current one is kept)."""
        return self.credential.access_key_id if self.credential else None

    def as_config(self) -> dict[str, str | None]:
        """The configuration fields this target sets (None = unchanged), for journal and output."""
        return {
            "connectivity": self.connectivity,
            "uri_endpoint": self.uri_endpoint,
            "uri_path": self.uri_path,
            "vpc_endpoint_service_name": self.vpc_endpoint_service_name or "",
            "vpc_endpoint_service_owner": self.vpc_endpoint_service_owner,
            "access_key_id": self.credential.access_key_id if self.credential else None,
        }


@dataclass(frozen=True)
class KeystorePlan:
    id: str | None
    name: str | None
    target: Target
    verify_key_ids: tuple[str, ...] = ()
    original_credential: CredentialRef | None = None
    accept_no_rollback: bool = False
    probe: str | None = None
    region: str = ""  # the store's Region: the plan's unless the store names one
    account_id: str | None = None  # the store's account: the plan's unless the store names one
    role_arn: str | None = None  # the role assumed in that account (None: the caller's own credentials)
    external_id: str | None = None

    @property
    def ref(self) -> str:
        """How the plan names the store: its id, or its name."""
        return self.id or self.name or ""

    @property
    def cell(self) -> tuple[str | None, str]:
        """(account, Region): the stores of one cell share its request budget and its poller."""
        return (self.account_id, self.region)


@dataclass(frozen=True)
class Plan:
    name: str
    region: str
    keystores: tuple[KeystorePlan, ...]
    max_disconnected: float = 900.0  # seconds
    poll_interval: float = 5.0  # seconds
    request_rate: float = 1.0  # requests per second per account-Region cell (aws/rate_budget.py)
    account_id: str | None = None
    extra_trusted_roots: tuple[str, ...] = ()
    accept_unverified: tuple[str, ...] = ()  # check ids the operator accepts as unverified ([preflight])
    path: str = ""
    text: str = field(default="", repr=False)
    fingerprint: str = ""  # sha256 hex of the file's bytes

    def for_store(self, ks: KeystorePlan) -> Plan:
        """The plan as one store sees it: its Region and account (what preflight and the driver check)."""
        if (ks.region or self.region, ks.account_id) == (self.region, self.account_id):
            return self
        return replace(self, region=ks.region or self.region, account_id=ks.account_id)

    @property
    def cells(self) -> list[tuple[str | None, str]]:
        """Every (account, Region) the plan reaches, in plan order."""
        return list(dict.fromkeys(ks.cell for ks in self.keystores))


# ---------------------------------------------------------------------------------------------
# Loading. Patterns and lengths are the KMS model's (facts §1.2); anything else is refused early.

MAX_PLAN_BYTES = 1024 * 1024
MAX_VERIFY_KEYS = 10
RE_REGION = re.compile(r"^[a-z]{2}(-[a-z]+){1,2}-\d{1,2}$")
RE_ACCOUNT = re.compile(r"^[0-9]{12}$")
RE_STORE_ID = re.compile(r"^cks-[0-9a-f]{17}$")
RE_ENDPOINT = re.compile(r"^https://[a-zA-Z0-9.-]+$")
RE_PATH = re.compile(r"^(/[a-zA-Z0-9\/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$")
RE_SERVICE = re.compile(r"^(com|eu)\.amazonaws\.vpce\.([a-z]+-){2,3}\d+\.vpce-svc-[0-9a-z]+$")
RE_ACCESS_KEY_ID = re.compile(r"^[A-Z2-7]+$")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
RE_KEY_ID = re.compile(rf"^{_UUID}$|^arn:aws[a-z-]*:kms:[a-z]{{2}}(-[a-z]+){{1,2}}-\d{{1,2}}:[0-9]{{12}}:key/{_UUID}$")
RE_CHECK_ID = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")  # a preflight check id: proxy.credential
RE_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
RE_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/(?:[\w+=,.@/-]*/)?[\w+=,.@-]{1,64}$")
RE_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
RE_PROBE = re.compile(r"^([a-zA-Z0-9.-]+|\[[0-9a-fA-F:.]+\]):([0-9]{1,5})$")
RE_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
def parse_duration(value: str | int | float, where: str) -> float:
    """`15m`, `5s`, `1h30m`, `250ms` (units in descending order) or a number of seconds -> seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PlanError(one_line(f"{where}: must be a duration like '15m' or '5s', not {type_name(value)}"))
    if isinstance(value, str):
        text = value.strip()
        parts = RE_DURATION_PART.findall(text)
        units = [unit for _, unit in parts]
        order = [list(_UNIT_SECONDS).index(u) for u in units]
        if not parts or "".join(n + u for n, u in parts) != text or order != sorted(set(order)):
            raise PlanError(one_line(f"{where}: {show(value)} is not a duration like '15m', '1h30m', '90s', '250ms'"))
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise PlanError(one_line(f"{where}: {show(value)} is not a finite, non-negative duration"))
    return seconds


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; relative `extra_trusted_roots` are taken from the plan's directory."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(one_line(f"{source}: cannot read: {exc.strerror or type(exc).__name__}")) from None
    plan = parse_plan(raw, source)
    roots = tuple(r if Path(r).is_absolute() else str(path.parent / r) for r in plan.extra_trusted_roots)
    return replace(plan, extra_trusted_roots=roots)


def parse_plan(text: str | bytes, source: str) -> Plan:
    """Validate plan text; `source` names the file in messages and becomes `Plan.path`."""
    data, decoded, raw = decode_toml(text, source, MAX_PLAN_BYTES, "a plan file")
    plan = _plan_from_dict(Table(one_line(str(source)), "", data))
    return replace(plan, path=str(source), text=decoded, fingerprint=hashlib.sha256(raw).hexdigest())


def _plan_from_dict(top: Table) -> Plan:
    top.expect("plan", "preflight", "keystores")
    head = top.table("plan", required=True)
    assert head is not None
    head.expect("name", "region", "account_id", "max_disconnected", "poll_interval", "request_rate",
                "extra_trusted_roots", "role_name", "external_id")
    name = head.text("name", required=True)
    region = head.text("region", RE_REGION, required=True, lengths=(1, 32))
    account_id = head.text("account_id", RE_ACCOUNT, lengths=(12, 12))
    max_disc = _duration(head, "max_disconnected", "15m")
    poll = _duration(head, "poll_interval", "5s")
    if max_disc <= 0:
        raise head.fail("max_disconnected", "must be more than 0")
    if poll < 1:
        raise head.fail("poll_interval", "must be at least 1s: DescribeCustomKeyStores allows 5 requests/s "
                                         "per account and Region, shared with every other caller")
    if poll >= max_disc:
        raise head.fail("poll_interval", "must be shorter than max_disconnected")
    rate = request_rate(head)
    role_name = head.text("role_name", RE_ROLE_NAME, lengths=(1, 64))
    external_id = head.text("external_id", RE_EXTERNAL_ID, lengths=(2, 1224))
    roots = head.get("extra_trusted_roots", list, default=[])
    if not all(isinstance(r, str) and r and r.isprintable() for r in roots):
        raise head.fail("extra_trusted_roots", "must be an array of file names")
    head.done()

    accepted = _preflight(top.table("preflight"))
    reach = _PlanReach(region or "", account_id, role_name, external_id)
    stores = [_keystore(t, reach) for t in top.tables("keystores")]
    if not stores:
        raise top.fail("keystores", "at least one [[keystores]] table is required")
    top.done()
    check_unique(top.source, stores, [f"keystores[{i}]" for i in range(len(stores))])
    return Plan(name=name or "", region=region or "", keystores=tuple(stores), max_disconnected=max_disc,
                poll_interval=poll, request_rate=rate, account_id=account_id, extra_trusted_roots=tuple(roots),
                accept_unverified=accepted)


def _preflight(t: Table | None) -> tuple[str, ...]:
    """`[preflight] accept_unverified`: a list of check ids, each once."""
    if t is None:
        return ()
    t.expect("accept_unverified")
    names = t.get("accept_unverified", list, default=[])
    for i, name in enumerate(names):
        if not isinstance(name, str) or not RE_CHECK_ID.fullmatch(name):
            raise t.fail(f"accept_unverified[{i}]", f"{show(name)} is not a check id like \"proxy.credential\"")
    if len(set(names)) != len(names):
        raise t.fail("accept_unverified", "lists a check twice")
    t.done()
    return tuple(names)


def request_rate(t: Table) -> float:
    """`request_rate` of a [plan] (or a fleet's [defaults]): the cell budget's requests per second, 1 by default."""
    rate: float = t.get("request_rate", float, default=1.0)
    if not 0 < rate <= 5:
        raise t.fail("request_rate", "must be more than 0 and at most 5 requests per second: AWS's quota per "
                                     "account and Region, shared with every other caller")
    return rate


def _duration(t: Table, key: str, default: str) -> float:
    t.used.add(key)
    value = t.data.get(key, default)
    return parse_duration(value, f"{t.source}: {t.where(key)}")


@dataclass(frozen=True)
class _PlanReach:
    """The [plan] defaults a store's Region, account and role fall back to."""

    region: str
    account_id: str | None
    role_name: str | None
    external_id: str | None


def _store_reach(t: Table, plan: _PlanReach) -> tuple[str, str | None, str | None, str | None]:
    """A store's (region, account_id, role_arn, external_id), its own keys first, then the plan's."""
    region = t.text("region", RE_REGION, lengths=(1, 32)) or plan.region
    account = t.text("account_id", RE_ACCOUNT, lengths=(12, 12))
    role_arn = t.text("role_arn", RE_ROLE_ARN, lengths=(20, 2048), hint=" (arn:aws:iam::ACCOUNT:role/NAME)")
    external_id = t.text("external_id", RE_EXTERNAL_ID, lengths=(2, 1224)) or plan.external_id
    if role_arn is not None:
        role_account = role_arn.split(":")[4]
        if account is not None and account != role_account:
            raise t.fail("role_arn", f"is a role in account {role_account}, but the store's account_id is {account}")
        account = role_account
    elif account is not None and plan.role_name is not None:
        role_arn = f"arn:aws:iam::{account}:role/{plan.role_name}"
    elif account is not None and plan.account_id is not None and account != plan.account_id:
        raise t.fail("account_id", f"is another account than the plan's {plan.account_id}: the custom key store "
                                   "APIs cannot be used across accounts, so give role_arn (or [plan] role_name)")
    return region, account or plan.account_id, role_arn, external_id if role_arn else None


def _keystore(t: Table, plan: _PlanReach) -> KeystorePlan:
    t.expect("id", "name", "probe", "target", "original_credential", "accept_no_rollback", "verify", "region",
             "account_id", "role_arn", "external_id")
    region, account_id, role_arn, external_id = _store_reach(t, plan)
    store_id = t.text("id", RE_STORE_ID, lengths=(21, 21))
    name = t.text("name", lengths=(1, 256))
    if (store_id is None) == (name is None):
        raise t.fail("id", "give exactly one of id (cks-...) or name" if store_id else "id or name is required")
    probe = t.text("probe", RE_PROBE, lengths=(3, 300), hint=" (host:port)")
    if probe is not None and not 1 <= int(probe.rsplit(":", 1)[1]) <= 65535:
        raise t.fail("probe", f"{show(probe)}: port must be 1-65535")
    target_table = t.table("target", required=True)
    assert target_table is not None
    target = _target(target_table, region)

    accept = t.get("accept_no_rollback", bool, default=False)
    original = None
    orig = t.table("original_credential")
    if orig is not None:
        accept = orig.get("accept_no_rollback", bool, default=False) or accept
        original = _credential(orig, require_key_id=False, require_secret=not accept)
    if target.credential is not None and original is None and not accept:
        raise t.fail("original_credential", "is required when target.credential is set (rollback needs the "
                                            "secret in use today); or set accept_no_rollback = true")
    verify = t.table("verify")
    key_ids: list[str] = []
    if verify is not None:
        verify.expect("key_ids")
        key_ids = verify.get("key_ids", list, default=[])
        if len(key_ids) > MAX_VERIFY_KEYS:
            raise verify.fail("key_ids", f"at most {MAX_VERIFY_KEYS} keys (each costs an Encrypt+Decrypt)")
        for i, key_id in enumerate(key_ids):
            if not isinstance(key_id, str) or not RE_KEY_ID.fullmatch(key_id):
                raise verify.fail(f"key_ids[{i}]", f"{show(key_id)} is not a key id (UUID) or key ARN")
            if region and key_id.startswith("arn:") and key_id.split(":")[3] != region:
                raise verify.fail(f"key_ids[{i}]", f"{show(key_id)} is not in the key store's region {region}")
        if len(set(key_ids)) != len(key_ids):
            raise verify.fail("key_ids", "lists a key twice")
        verify.done()
    t.done()
    return KeystorePlan(id=store_id, name=name, target=target, verify_key_ids=tuple(key_ids),
                        original_credential=original, accept_no_rollback=accept, probe=probe, region=region,
                        account_id=account_id, role_arn=role_arn, external_id=external_id)


def _target(t: Table, region: str | None) -> Target:
    t.expect("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name", "vpc_endpoint_service_owner",
             "credential")
    conn = t.get("connectivity", str, required=True)
    if conn not in (PUBLIC, VPC):
        raise t.fail("connectivity", f"must be {PUBLIC} or {VPC}, not {show(conn)}")
    endpoint = t.text("uri_endpoint", RE_ENDPOINT, lengths=(10, 128), required=True,
                      hint=_endpoint_hint(t.data.get("uri_endpoint")))
    path = t.text("uri_path", RE_PATH, lengths=(10, 128), hint=" (the proxy's path prefix ending in /kms/xks/v1)")
    service = t.text("vpc_endpoint_service_name", RE_SERVICE, lengths=(20, 64))
    owner = t.text("vpc_endpoint_service_owner", RE_ACCOUNT, lengths=(12, 12))
    if conn == VPC and service is None:
        raise t.fail("vpc_endpoint_service_name", f"is required when connectivity is {VPC}")
    if conn == PUBLIC:
        for key in ("vpc_endpoint_service_name", "vpc_endpoint_service_owner"):
            if t.has(key):
                raise t.fail(key, f"must not be set when connectivity is {PUBLIC} (KMS clears it)")
    if service is not None and region and service.split(".")[3] != region:
        raise t.fail("vpc_endpoint_service_name", f"is in Region {service.split('.')[3]}, but the key store's "
                                                  f"Region is {region}; the service must be in that Region")
    cred = t.table("credential")
    credential = _credential(cred, require_key_id=True, require_secret=True) if cred is not None else None
    t.done()
    return Target(connectivity=conn, uri_endpoint=endpoint or "", uri_path=path, vpc_endpoint_service_name=service,
                  vpc_endpoint_service_owner=owner, credential=credential)


def _endpoint_hint(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    if re.match(r"^https://[^/]*:\d*$", value):
        return " (KMS takes no port; it always uses 443)"
    if value.startswith("http://"):
        return " (KMS connects only over HTTPS)"
    if re.match(r"^https://[^/]+/", value):
        return " (no path or trailing slash here; the path goes in uri_path)"
    return ""


def _credential(t: Table, *, require_key_id: bool, require_secret: bool) -> CredentialRef | None:
    t.expect("access_key_id", "secret", *(("accept_no_rollback",) if not require_key_id else ()))
    key_id = t.text("access_key_id", RE_ACCESS_KEY_ID, lengths=(20, 30), required=require_key_id, secret=True)
    t.used.add("secret")
    secret = t.data.get("secret")
    if secret is None and require_secret:
        raise t.fail("secret", f"is required: a reference ({REFERENCE_FORMS})")
    if secret is not None and not (isinstance(secret, str) and is_reference(secret)):
        raise t.fail("secret", f"must be a reference ({REFERENCE_FORMS}), never the secret itself; "
                               "the value given is not shown")
    t.done()
    if secret is None:
        return None
    return CredentialRef(access_key_id=key_id or "", secret_ref=secret)


def check_unique(source: str, stores: Sequence[KeystorePlan], wheres: Sequence[str]) -> None:
    """KMS refuses two stores sharing an endpoint or a service in a Region, across accounts too (facts §1.3);
    a name is unique per account and Region, an id everywhere. Caught before any call; `wheres` names each
    store's table in the file (a plan's `keystores[i]`, a fleet's `targets[i].stores[j]`)."""
    seen: dict[tuple[str, str], int] = {}
    for i, store in enumerate(stores):
        in_region = f"{store.region} " if len({s.region for s in stores}) > 1 else ""
        checks = [("id", store.id, ""),
                  ("name", store.name, f"{store.account_id or ''} {store.region}"),
                  ("target.uri_endpoint", store.target.uri_endpoint, store.region),
                  ("target.vpc_endpoint_service_name", store.target.vpc_endpoint_service_name, store.region)]
        for key, value, scope in checks:
            if value is None:
                continue
            first = seen.setdefault((key, f"{scope} {value}"), i)
            if first != i:
                raise PlanError(one_line(f"{source}: {wheres[i]}.{key}: {show(value)} is also used by {wheres[first]}"
                                         + (f" in {in_region.strip()}" if in_region and key != "id" else "")))


def store_from_table(t: Table, *, region: str, account_id: str | None, role_arn: str | None,
                     external_id: str | None) -> KeystorePlan:
    """One `[[keystores]]`-shaped table whose Region and reach were decided elsewhere (a fleet's target group):
    validated exactly as a plan's store, its errors naming `t`'s own file and key."""
    ks = _keystore(t, _PlanReach(region, account_id, None, None))
    return replace(ks, account_id=account_id, role_arn=role_arn, external_id=external_id if role_arn else None)
