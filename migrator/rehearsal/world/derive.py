"""A world derived from a plan, for `run --dry-run` without `--world`.

Each planned key store exists in the OTHER connectivity, CONNECTED, with three KMS keys (the plan's verify
key ids first), and everything its target needs is present and healthy: one proxy in front of the same key
manager serves both the current and the target host (certificate covering both), an endpoint service with a
verified private DNS name equal to the VPC host, the KMS principal allowed, an NLB in two AZs.

Credentials: the store's current credential uses the plan's `original_credential` (access key id and, when
`secrets` resolves its reference, the secret), so a rollback with the operator's secret works. The target
credential is accepted by the proxy only when `secrets` gives its secret, keyed by the plan's reference
string (e.g. {"env:NEW": "..."}). A `secretsmanager:` reference is served by the world's Secrets Manager,
with a value derived from the plan when `secrets` does not give it (the CLI cannot read it before the world
exists), and that same value is the store's (or the proxy's new) secret: the tool's signed probes work.
The world's vantage point is the default, "inside_vpc": the tool reaches the private DNS name too.
Names, ids and secrets not in the plan are derived from a hash, so the same plan yields the same world.
The plan is a plain dict (the parsed TOML); this module never imports the engine's plan module.

Accounts and Regions: the world's default account is `[plan] account_id` (else 111122223333) and its default
Region the plan's. A store's `region`, `account_id` and `role_arn` (whose account is the store's; or
`[plan] role_name` in the store's `account_id`) put the store, its keys, its NLB and endpoint service (in the
`vpc_endpoint_service_owner`'s account when the plan reaches that account) in that (account, Region) cell, and
its proxy in that Region (the Region whose KMS signs to it). Each role the plan names exists in its account,
trusts the default account (the dry run's dummy credentials are that account's), wants the store's (or the
plan's) external id, and allows IAM's default 3600 s sessions: a plan that needs longer ones is blocked by
the tool's preflight, as a real account would block it. A role named with two external ids keeps the first.
Then a `secretsmanager:` ARN's secret is in the account and Region the ARN names. A plan that reaches no
other cell and names no role derives the single-cell world it always did (no `[[accounts]]`).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from migrator.rehearsal.world import model

PUBLIC, VPC = "PUBLIC_ENDPOINT", "VPC_ENDPOINT_SERVICE"
DEFAULT_ACCOUNT = "111122223333"
ROLE_SESSION_SECONDS = 3600  # IAM's default MaxSessionDuration: what a role nobody raised allows
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CELL_KINDS = ("load_balancers", "endpoint_services", "keystores", "keys", "secrets")


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def _hex(*parts: str, n: int = 17) -> str:
    return _digest(*parts).hex()[:n]


def _access_key_id(*parts: str) -> str:
    return "".join(_B32[b % 32] for b in _digest("akid", *parts)[:20])


def _secret(*parts: str) -> str:
    return base64.b64encode(_digest("secret", *parts)).decode()


def _sibling(host: str, suffix: str) -> str:
    first, _, rest = host.partition(".")
    return f"{first}-{suffix}.{rest}" if rest else f"{first}-{suffix}"


@dataclass(frozen=True)
class Reach:
    """Where a planned store lives and how the tool gets there (the plan's rules, migrator/plan.py)."""

    account: str
    region: str
    role_arn: str = ""
    external_id: str = ""

    @property
    def cell(self) -> tuple[str, str]:
        return (self.account, self.region)


def store_reach(entry: dict[str, Any], header: dict[str, Any], account: str, region: str) -> Reach:
    """A `[[keystores]]` entry's account, Region, role and external id; its own keys first, then `[plan]`'s."""
    role_arn = entry.get("role_arn") or ""
    store_account = entry.get("account_id") or ""
    if role_arn:
        store_account = role_arn.split(":")[4]
    elif store_account and header.get("role_name"):
        role_arn = f"arn:aws:iam::{store_account}:role/{header['role_name']}"
    external_id = (entry.get("external_id") or header.get("external_id") or "") if role_arn else ""
    return Reach(store_account or account, entry.get("region") or region, role_arn, external_id)


class Cells:
    """The world file's tables, cell by cell: the default cell is the top level, the others `[[accounts]]`."""

    def __init__(self, data: dict[str, Any], reaches: list[Reach], account: str, region: str):
        self.data, self.home = data, (account, region)
        # False: one cell only (no [[accounts]]), every item in it, as before
        self.strict = any(r.cell != self.home or r.role_arn for r in reaches)
        self.accounts = {account, *(r.account for r in reaches)}  # every account the plan reaches
        self.others: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
        self.roles: dict[str, list[dict[str, Any]]] = {}

    @property
    def account(self) -> str:
        return self.home[0]

    def cell(self, account: str, region: str) -> dict[str, list[dict[str, Any]]]:
        """The item lists of (account, Region), made on first use."""
        if not self.strict or (account, region) == self.home:
            return self.data
        return self.others.setdefault((account, region), {kind: [] for kind in _CELL_KINDS})

    def add_role(self, role_arn: str, external_id: str) -> None:
        """The role behind `role_arn`: trusting the default account, with IAM's default session length."""
        account, name = role_arn.split(":")[4], role_arn.rsplit("/", 1)[-1]
        roles = self.roles.setdefault(account, [])
        if not any(r["name"] == name for r in roles):
            role: dict[str, Any] = {"name": name, "trusted": [self.account],
                                    "max_session_seconds": ROLE_SESSION_SECONDS}
            if external_id:
                role["external_id"] = external_id
            roles.append(role)

    def add_secret(self, ref: str, value: str, where: tuple[str, str]) -> None:
        """The secret of a `secretsmanager:` reference, in the cell its ARN names (else `where`), once."""
        name = secret_name(ref)
        cell = self.cell(*(secret_cell(ref) or where))
        if name and not any(s["name"] == name for s in cell["secrets"]):
            cell["secrets"].append({"name": name, "value": value})

    def finish(self) -> None:
        """Write the other cells and the roles as `[[accounts]]` tables (none: the world is one cell)."""
        tables: dict[str, dict[str, Any]] = {}
        for (account, region), lists in self.others.items():
            table = tables.setdefault(account, {"id": account, "regions": []})
            table["regions"].append(region)
            for kind, items in lists.items():
                table.setdefault(kind, []).extend(
                    item if kind == "keys" else {"region": region, **item} for item in items)
        for account, roles in self.roles.items():
            tables.setdefault(account, {"id": account, "regions": []})["roles"] = roles
        for table in tables.values():
            table["regions"] = table["regions"] or [self.home[1]]
        if tables:
            self.data["accounts"] = list(tables.values())


def world_for_plan(plan: dict[str, Any], secrets: dict[str, str] | None = None, *,
                   time_scale: float = 60.0) -> model.World:
    """Build (and validate) the world in which `plan` can succeed."""
    secrets = secrets or {}
    header = plan.get("plan", {})
    region = header.get("region", "us-east-1")
    account = header.get("account_id", DEFAULT_ACCOUNT)
    data: dict[str, Any] = {
        "world": {"account_id": account, "region": region, "time_scale": time_scale, "seed": 1,
                  "vantage": "inside_vpc"},
        "latencies": {"connect": 300.0, "disconnect": 300.0},
        "key_managers": [], "proxies": [], "load_balancers": [], "endpoint_services": [],
        "keystores": [], "keys": [], "secrets": [],
    }
    entries = plan.get("keystores", [])
    reaches = [store_reach(entry, header, account, region) for entry in entries]
    cells = Cells(data, reaches, account, region)
    for index, (entry, reach) in enumerate(zip(entries, reaches, strict=True)):
        if reach.role_arn:
            cells.add_role(reach.role_arn, reach.external_id)
        _add_store(cells, entry, index, reach, secrets)
    cells.finish()
    return model.world_from_dict(data, f"<world derived from plan {header.get('name', '')!r}>")


def secret_name(ref: object) -> str:
    """The Secrets Manager secret name of a `secretsmanager:ARN` (or `secretsmanager:NAME`) reference; "" if none."""
    if not isinstance(ref, str) or not ref.startswith("secretsmanager:"):
        return ""
    rest = ref.removeprefix("secretsmanager:")
    if ":secret:" in rest:
        return rest.split(":secret:", 1)[1]
    return "" if rest.startswith("arn:") else rest


def secret_cell(ref: str) -> tuple[str, str] | None:
    """(account, Region) of a `secretsmanager:arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME` reference."""
    parts = ref.removeprefix("secretsmanager:").split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[2] == "secretsmanager" and parts[3] and parts[4]:
        return (parts[4], parts[3])
    return None


def _served(ref: object) -> bool:
    """A `secretsmanager:` reference: the world's own Secrets Manager serves it, with a derived value if need be."""
    return bool(secret_name(ref))


def _key_id(key: str) -> str:
    """A key id of the plan's `verify.key_ids`: a UUID, or the UUID of a key ARN."""
    return key.rsplit("/", 1)[-1] if key.startswith("arn:") else key


def _add_store(cells: Cells, entry: dict[str, Any], index: int, reach: Reach, secrets: dict[str, str]) -> None:
    account, region = reach.cell
    target = entry.get("target", {})
    seed = entry.get("id") or entry.get("name") or str(index)
    store_id = entry.get("id") or f"cks-{_hex('store', seed)}"
    name = entry.get("name") or f"xks-store-{index + 1}"
    to_vpc = target.get("connectivity") == VPC
    target_host = target["uri_endpoint"].removeprefix("https://")
    current_host = _sibling(target_host, "public" if to_vpc else "private")
    public_host, private_host = (current_host, target_host) if to_vpc else (target_host, current_host)
    path = target.get("uri_path") or "/kms/xks/v1"
    prefix = path[: -len("/kms/xks/v1")] if path.endswith("/kms/xks/v1") else ""

    original = entry.get("original_credential", {})
    current_akid = original.get("access_key_id") or _access_key_id(seed)
    current_secret = secrets.get(original.get("secret", "")) or _secret(seed)
    if original.get("secret") in secrets or _served(original.get("secret")):
        cells.add_secret(original["secret"], current_secret, reach.cell)
    credentials = [{"access_key_id": current_akid, "secret": current_secret}]
    new = target.get("credential")
    if new and (new.get("secret") in secrets or _served(new.get("secret"))):
        new_secret = secrets.get(new["secret"]) or _secret("new", seed)
        credentials.append({"access_key_id": new.get("access_key_id") or current_akid, "secret": new_secret})
        cells.add_secret(new["secret"], new_secret, reach.cell)

    if to_vpc:
        service_name = target.get("vpc_endpoint_service_name", "")
        service_id = service_name.rsplit(".", 1)[-1] if service_name else f"vpce-svc-{_hex('svc', seed)}"
        owner = target.get("vpc_endpoint_service_owner", "")
    else:
        service_id, owner = f"vpce-svc-{_hex('svc', seed)}", ""
    current_service = "" if to_vpc else f"com.amazonaws.vpce.{region}.{service_id}"
    # A service owned by an account the plan reaches lives in that account (KMS looks for it there); one of
    # an account the world does not have stays beside the store, naming its owner.
    owned_apart = bool(owner) and owner != account and cells.strict and owner in cells.accounts
    home = cells.cell(account, region)
    service_home = cells.cell(owner, region) if owned_apart else home

    ekm, proxy, nlb = f"{name}-ekm", f"{name}-proxy", f"{name}-nlb"
    key_ids = [_key_id(k) for k in entry.get("verify", {}).get("key_ids", []) if k]
    while len(key_ids) < 3:
        key_ids.append(str(uuid.UUID(bytes=_digest("key", seed, str(len(key_ids)))[:16], version=4)))
    cells.data["key_managers"].append(
        {"name": ekm, "keys": [{"id": f"{name}-key-{i + 1}"} for i in range(len(key_ids))]})
    cells.data["proxies"].append({"name": proxy, "key_manager": ekm, "public_hostnames": [public_host],
                                  "certificate_hosts": [target_host, current_host], "uri_path_prefix": prefix,
                                  "credentials": credentials, "region": region})
    service_home["load_balancers"].append({"name": nlb, "type": "network", "scheme": "internal",
                                           "availability_zones": [f"{region}a", f"{region}b"], "proxy": proxy})
    service: dict[str, Any] = {"service_id": service_id, "load_balancer": nlb, "private_dns_name": private_host,
                               "private_dns_state": "verified",
                               "allowed_principals": [f"cks.kms.{region}.amazonaws.com"]}
    if owner and owner != account and not owned_apart:
        service["owner"] = owner
    service_home["endpoint_services"].append(service)
    store: dict[str, Any] = {
        "id": store_id, "name": name, "connectivity": PUBLIC if to_vpc else VPC,
        "uri_endpoint": f"https://{current_host}", "uri_path": path, "access_key_id": current_akid,
        "secret": current_secret, "state": "CONNECTED"}
    if current_service:
        store["vpc_endpoint_service_name"] = current_service
    home["keystores"].append(store)
    for i, key_id in enumerate(key_ids):
        home["keys"].append({"key_id": key_id, "keystore": store_id, "xks_key_id": f"{name}-key-{i + 1}"})
