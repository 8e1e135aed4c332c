"""A fleet file -> a typed, validated FleetSpec; every error one line naming the file and the key (exit 2).

Fleet file keys (plans/fleet-example.toml is a complete one):

    [fleet]
    name = "..."                          # required
    account_id = "111122223333"           # optional guard: the caller's own account
    extra_trusted_roots = ["ca.pem"]      # as in a plan (relative to the fleet file)

    [defaults]                            # shared by every store
    max_disconnected = "15m"              # each store's downtime budget
    poll_interval = "5s"
    request_rate = 1                      # requests per second per account-Region, shared by the fleet's stores
                                          # there (Describe, Connect, Disconnect, Update; 0 < rate <= 5)
    accept_unverified = ["proxy.credential"]  # as a plan's [preflight]

    [access]                              # how each account is reached, unless [accounts.X] says otherwise
    role_name = "xks-migrator"            # or role_arn = "arn:aws:iam::{account_id}:role/xks-migrator"
    external_id = "..."                   # optional (not a secret)
    session_duration = "1h"               # optional: the longest session the roles allow; `fleet plan` blocks
                                          # when it is shorter than a store's budget plus its rollback's

    [accounts.payments]                   # a label the targets refer to
    account_id = "111122223333"           # required
    role_arn = "..." | role_name = "..."  # optional: this account's own role; external_id likewise
                                          # (no role anywhere: the caller's own credentials, its own account only)

    [rollout]
    canary = ["cks-..."]                  # stores that go first, each alone (default: none)
    waves = [["cks-...", "name"], [...]]  # optional explicit waves after the canary, by store id or name
    ramp = "exponential"                  # the stores no wave names: waves of 2, 4, 8, ... ("exponential",
                                          # the default) or "one_wave"
    max_in_flight = 5                     # never more stores disconnected at once (default 1)
    failure_tolerance = 0                 # failed stores (rolled back, stuck) tolerated before no new store
                                          # starts (default 0)
    bake = "5m"                           # between waves, after the health gate (default 0s)
    alarms = ["xks-proxy-errors"]         # optional CloudWatch alarms that must be OK at each gate
    approval = false                      # true: a person says "proceed with wave N" (`fleet proceed`)

    [[targets]]                           # one group per account and Region
    account = "payments"                  # a label of [accounts]
    region = "us-east-1"
    [[targets.stores]]                    # a plan's [[keystores]] table, without region/account_id/role_arn/
    id = "cks-..."                        # external_id (the group and [accounts] decide those)
    [targets.stores.target]
    connectivity = "VPC_ENDPOINT_SERVICE"
    ...

Each store becomes a single-store plan (`FleetStore.plan`, its text a plan file `parse_plan` accepts), so its
run has its own journal record, lock, resume and rollback exactly as `xksmigrate run` would; `FleetSpec.whole`
holds every store in one plan for `fleet plan`'s preflight and the checks across accounts.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from migrator.plan import (
    RE_ACCOUNT,
    RE_EXTERNAL_ID,
    RE_REGION,
    RE_ROLE_ARN,
    RE_ROLE_NAME,
    KeystorePlan,
    Plan,
    check_unique,
    parse_duration,
    parse_plan,
    request_rate,
    store_from_table,
)
from migrator.plan_toml import PlanError, Table, decode_toml, show

MAX_FLEET_BYTES = 4 * 1024 * 1024
RE_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RE_ALARM = re.compile(r"^[^\x00-\x1f]{1,255}$")
RAMPS = ("exponential", "one_wave")
GROUP_KEYS = ("region", "account_id", "role_arn", "external_id")  # a fleet store takes these from its group


@dataclass(frozen=True)
class AccountAccess:
    """How one account is reached: its role (None: the caller's own credentials) and external id."""

    label: str
    account_id: str
    role_arn: str | None
    external_id: str | None


@dataclass(frozen=True)
class Rollout:
    canary: tuple[str, ...] = ()
    waves: tuple[tuple[str, ...], ...] = ()
    ramp: str = "exponential"
    max_in_flight: int = 1
    failure_tolerance: int = 0
    bake: float = 0.0
    alarms: tuple[str, ...] = ()
    approval: bool = False


@dataclass(frozen=True)
class FleetStore:
    """One store of the fleet and the single-store plan its run is driven by."""

    ref: str  # its id or name: how waves and the summary name it
    where: str  # its table in the fleet file: targets[i].stores[j]
    account: AccountAccess
    plan: Plan

    @property
    def keystore(self) -> KeystorePlan:
        return self.plan.keystores[0]

    @property
    def cell(self) -> tuple[str, str]:
        return (self.account.account_id, self.keystore.region)


@dataclass(frozen=True)
class FleetSpec:
    name: str
    stores: tuple[FleetStore, ...]
    whole: Plan
    rollout: Rollout
    accounts: tuple[AccountAccess, ...]
    session_duration: float | None = None
    path: str = ""
    text: str = field(default="", repr=False)
    fingerprint: str = ""

    def store(self, ref: str) -> FleetStore:
        return next(s for s in self.stores if s.ref == ref)


def load_fleet(path: str | Path) -> FleetSpec:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FLEET_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    return parse_fleet(raw, str(path), base=path.parent)


def parse_fleet(text: str | bytes, source: str, base: Path | None = None) -> FleetSpec:
    data, decoded, raw = decode_toml(text, source, MAX_FLEET_BYTES, "a fleet file")
    top = Table(source, "", data)
    top.expect("fleet", "defaults", "access", "accounts", "rollout", "targets")
    head = _fleet_head(top, base)
    defaults = _defaults(top.table("defaults"))
    access = top.table("access")
    session = _session(access)
    accounts = _accounts(top, access, head.get("account_id"))
    stores = _targets(top, accounts, head, defaults)
    rollout = _rollout(top.table("rollout"), stores)
    top.done()
    whole = _whole_plan(head, defaults, stores, source)
    return FleetSpec(name=str(head["name"]), stores=tuple(stores), whole=whole, rollout=rollout,
                     accounts=tuple(accounts.values()), session_duration=session, path=source, text=decoded,
                     fingerprint=hashlib.sha256(raw).hexdigest())


def _fleet_head(top: Table, base: Path | None) -> dict[str, Any]:
    t = top.table("fleet", required=True)
    assert t is not None
    t.expect("name", "account_id", "extra_trusted_roots")
    name = t.text("name", required=True)
    account = t.text("account_id", RE_ACCOUNT, lengths=(12, 12))
    roots = t.get("extra_trusted_roots", list, default=[])
    if not all(isinstance(r, str) and r and r.isprintable() for r in roots):
        raise t.fail("extra_trusted_roots", "must be an array of file names")
    t.done()
    absolute = [r if Path(r).is_absolute() or base is None else str((base / r).resolve()) for r in roots]
    head: dict[str, Any] = {"name": name, "extra_trusted_roots": absolute}
    if account:
        head["account_id"] = account
    return head


def _defaults(t: Table | None) -> dict[str, Any]:
    """The [plan]/[preflight] values every store's plan takes, checked here so an error names [defaults]."""
    if t is None:
        return {}
    t.expect("max_disconnected", "poll_interval", "request_rate", "accept_unverified")
    out: dict[str, Any] = {key: t.data[key] for key in ("max_disconnected", "poll_interval", "accept_unverified")
                           if key in t.data}
    t.used.update(out)
    if "request_rate" in t.data:
        out["request_rate"] = request_rate(t)
    budget = parse_duration(out.get("max_disconnected", "15m"), f"{t.source}: {t.where('max_disconnected')}")
    poll = parse_duration(out.get("poll_interval", "5s"), f"{t.source}: {t.where('poll_interval')}")
    if budget <= 0:
        raise t.fail("max_disconnected", "must be more than 0")
    if poll < 1:
        raise t.fail("poll_interval", "must be at least 1s: DescribeCustomKeyStores allows 5 requests/s per account "
                                      "and Region, shared with every other caller")
    if poll >= budget:
        raise t.fail("poll_interval", "must be shorter than max_disconnected")
    t.done()
    return out


def _role(t: Table, account_id: str, template: str | None) -> str | None:
    """A role ARN from `role_arn` (a template may say {account_id}) or `role_name`; the ARN's account checked."""
    arn, name = t.data.get("role_arn", template), t.text("role_name", RE_ROLE_NAME, lengths=(1, 64))
    t.used.add("role_arn")
    if "role_arn" in t.data and name is not None:
        raise t.fail("role_name", "give role_arn or role_name, not both")
    if name is not None:
        return f"arn:aws:iam::{account_id}:role/{name}"
    if arn is None:
        return None
    if not isinstance(arn, str):
        raise t.fail("role_arn", "must be a string")
    arn = arn.replace("{account_id}", account_id)
    if not RE_ROLE_ARN.fullmatch(arn):
        raise t.fail("role_arn", f"{show(arn)} is not a role ARN (arn:aws:iam::{{account_id}}:role/NAME)")
    if arn.split(":")[4] != account_id:
        raise t.fail("role_arn", f"{show(arn)} is a role in account {arn.split(':')[4]}, not {account_id}")
    return arn


def _accounts(top: Table, access: Table | None, caller: str | None) -> dict[str, AccountAccess]:
    default_role: str | None = None
    default_external: str | None = None
    if access is not None:
        access.expect("role_name", "role_arn", "external_id", "session_duration")
        template = access.text("role_arn", lengths=(20, 2048))
        if template is not None and "{account_id}" not in template and not RE_ROLE_ARN.fullmatch(template):
            raise access.fail("role_arn", f"{show(template)} is not a role ARN or a template with {{account_id}}")
        role_name = access.text("role_name", RE_ROLE_NAME, lengths=(1, 64))
        if template is not None and role_name is not None:
            raise access.fail("role_name", "give role_arn or role_name, not both")
        default_role = template or (f"arn:aws:iam::{{account_id}}:role/{role_name}" if role_name else None)
        default_external = access.text("external_id", RE_EXTERNAL_ID, lengths=(2, 1224))
        access.done()
    table = top.table("accounts", required=True)
    assert table is not None
    accounts: dict[str, AccountAccess] = {}
    seen: dict[str, str] = {}
    for label in table.data:
        if not RE_LABEL.fullmatch(label):
            raise table.fail(label, "an account label is letters, digits, _ and - (at most 64)")
        t = table.table(label, required=True)
        assert t is not None
        t.expect("account_id", "role_arn", "role_name", "external_id")
        account_id = t.text("account_id", RE_ACCOUNT, lengths=(12, 12), required=True) or ""
        if account_id in seen:
            raise t.fail("account_id", f"{account_id} is also accounts.{seen[account_id]}")
        seen[account_id] = label
        own = "role_arn" in t.data or "role_name" in t.data
        role = _role(t, account_id, None) if own else (
            default_role.replace("{account_id}", account_id) if default_role else None)
        if not own and role and role.split(":")[4] != account_id and access is not None:
            raise access.fail("role_arn", f"{show(role)} is a role in account {role.split(':')[4]}, not in "
                                          f"accounts.{label}'s {account_id}; write {{account_id}} in its place")
        external = t.text("external_id", RE_EXTERNAL_ID, lengths=(2, 1224)) or default_external
        if role is None and caller is not None and account_id != caller:
            raise t.fail("account_id", f"is another account than the caller's {caller}: the custom key store APIs "
                                       "cannot be used across accounts, so give role_arn or role_name (here or in "
                                       "[access])")
        t.done()
        accounts[label] = AccountAccess(label, account_id, role, external if role else None)
    if not accounts:
        raise top.fail("accounts", "at least one account is required ([accounts.LABEL] account_id = ...)")
    return accounts


def _targets(top: Table, accounts: dict[str, AccountAccess], head: dict[str, Any],
             defaults: dict[str, Any]) -> list[FleetStore]:
    stores: list[FleetStore] = []
    groups = top.tables("targets")
    if not groups:
        raise top.fail("targets", "at least one [[targets]] group is required")
    for group in groups:
        group.expect("account", "region", "stores")
        label = group.text("account", lengths=(1, 64), required=True) or ""
        if label not in accounts:
            raise group.fail("account", f"{show(label)} is not an account of [accounts] "
                                        f"(known: {', '.join(sorted(accounts))})")
        region = group.text("region", RE_REGION, lengths=(1, 32), required=True) or ""
        account = accounts[label]
        tables = group.tables("stores")
        if not tables:
            raise group.fail("stores", "at least one [[targets.stores]] table is required")
        for t in tables:
            for key in GROUP_KEYS:
                if t.has(key):
                    raise t.fail(key, "comes from the group ([[targets]] region, [accounts] account_id and role), "
                                      "not the store")
            ks = store_from_table(t, region=region, account_id=account.account_id, role_arn=account.role_arn,
                                  external_id=account.external_id)
            plan = _store_plan(head, defaults, t.data, ks, account, top.source, t.path)
            stores.append(FleetStore(ref=ks.ref, where=t.path, account=account, plan=plan))
        group.done()
    check_unique(top.source, [s.keystore for s in stores], [s.where for s in stores])
    refs: dict[str, str] = {}
    for s in stores:
        if s.ref in refs:
            raise PlanError(f"{top.source}: {s.where}: {show(s.ref)} is also the name of {refs[s.ref]}; waves and "
                            "summaries name a store by its id or name, so give this one its id")
        refs[s.ref] = s.where
    return stores


def _plan_head(head: dict[str, Any], defaults: dict[str, Any], name: str, region: str) -> dict[str, Any]:
    plan: dict[str, Any] = {"name": name, "region": region}
    for key in ("account_id", "extra_trusted_roots"):
        if head.get(key):
            plan[key] = head[key]
    for key in ("max_disconnected", "poll_interval", "request_rate"):
        if key in defaults:
            plan[key] = defaults[key]
    return plan


def _store_table(raw: dict[str, Any], ks: KeystorePlan, account: AccountAccess) -> dict[str, Any]:
    store = {**raw, "region": ks.region, "account_id": account.account_id}
    if account.role_arn:
        store["role_arn"] = account.role_arn
        if account.external_id:
            store["external_id"] = account.external_id
    return store


def _document(plan: dict[str, Any], defaults: dict[str, Any], stores: list[dict[str, Any]]) -> str:
    doc: dict[str, Any] = {"plan": plan, "keystores": stores}
    if defaults.get("accept_unverified"):
        doc["preflight"] = {"accept_unverified": defaults["accept_unverified"]}
    return "# generated by xksmigrate from a fleet file\n" + tomli_w.dumps(doc)


def _store_plan(head: dict[str, Any], defaults: dict[str, Any], raw: dict[str, Any], ks: KeystorePlan,
                account: AccountAccess, source: str, where: str) -> Plan:
    """The plan file of one store's own run: the fleet's defaults, its group's reach and its own table."""
    plan_head = _plan_head(head, defaults, f"{head['name']}: {ks.ref}", ks.region)
    text = _document(plan_head, defaults, [_store_table(raw, ks, account)])
    return parse_plan(text, f"{source} {where}")  # valid: each part was checked where the fleet file says it


def _whole_plan(head: dict[str, Any], defaults: dict[str, Any], stores: list[FleetStore], source: str) -> Plan:
    region = stores[0].keystore.region
    tables = [_keystore_table(s) for s in stores]
    text = _document(_plan_head(head, defaults, str(head["name"]), region), defaults, tables)
    return replace(parse_plan(text, source), path=source)


def _keystore_table(store: FleetStore) -> dict[str, Any]:
    """A store's [[keystores]] table as its own plan holds it."""
    table = tomllib.loads(store.plan.text)["keystores"][0]
    assert isinstance(table, dict)
    return table


def _refs(t: Table, key: str, value: Any, known: dict[str, FleetStore], placed: dict[str, str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise t.fail(key, "must be an array of store ids or names")
    for i, ref in enumerate(value):
        if ref not in known:
            raise t.fail(f"{key}[{i}]", f"{show(ref)} is not a store of this fleet")
        if ref in placed:
            raise t.fail(f"{key}[{i}]", f"{show(ref)} is already in {placed[ref]}")
        placed[ref] = t.where(key)
    return tuple(value)


def _rollout(t: Table | None, stores: list[FleetStore]) -> Rollout:
    if t is None:
        return Rollout()
    t.expect("canary", "waves", "ramp", "max_in_flight", "failure_tolerance", "bake", "alarms", "approval")
    known = {s.ref: s for s in stores}
    placed: dict[str, str] = {}
    canary = _refs(t, "canary", t.get("canary", list, default=[]), known, placed)
    waves_raw = t.get("waves", list, default=[])
    waves = []
    for i, wave in enumerate(waves_raw):
        refs = _refs(t, f"waves[{i}]", wave, known, placed)
        if not refs:
            raise t.fail(f"waves[{i}]", "is empty")
        waves.append(refs)
    ramp = t.get("ramp", str, default="exponential")
    if ramp not in RAMPS:
        raise t.fail("ramp", f"must be one of {', '.join(RAMPS)}, not {show(ramp)}")
    in_flight = t.get("max_in_flight", int, default=1)
    if in_flight < 1:
        raise t.fail("max_in_flight", f"must be 1 or more, not {in_flight}")
    tolerance = t.get("failure_tolerance", int, default=0)
    if tolerance < 0:
        raise t.fail("failure_tolerance", f"must be 0 or more, not {tolerance}")
    t.used.add("bake")
    bake = parse_duration(t.data.get("bake", 0), f"{t.source}: {t.where('bake')}")
    alarms = t.get("alarms", list, default=[])
    for i, alarm in enumerate(alarms):
        if not isinstance(alarm, str) or not RE_ALARM.fullmatch(alarm):
            raise t.fail(f"alarms[{i}]", "must be a CloudWatch alarm name (1-255 characters)")
    approval = t.get("approval", bool, default=False)
    t.done()
    return Rollout(canary=canary, waves=tuple(waves), ramp=ramp, max_in_flight=in_flight,
                   failure_tolerance=tolerance, bake=bake, alarms=tuple(alarms), approval=approval)


def _session(access: Table | None) -> float | None:
    if access is None or not access.has("session_duration"):
        return None
    access.used.add("session_duration")
    return parse_duration(access.data["session_duration"], f"{access.source}: {access.where('session_duration')}")
