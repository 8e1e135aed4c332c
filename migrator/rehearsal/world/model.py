"""The rehearsal world as data: what a world file (TOML) describes, typed and validated.

A world file is the simulated AWS account: key stores in their current configuration, KMS keys,
the XKS proxies (and the external key managers behind them), VPC endpoint services with their
network load balancers, latencies, a time scale and faults. Everything here is plain data; the
behaviour lives in `world.state` (live state and transitions) and the `kms`, `query` and `xks` packages.

Errors name the file, the key and the reason in one line (`WorldFileError`).

Schema (tables and their keys; every key not marked required has a default that keeps older files meaning
what they meant; accounts, roles and quotas: the end of this list and `world.accounts`):
- `[world]` account_id, region, time_scale, seed, update_state_rule (one of UPDATE_STATE_RULES, default
  "api_operation": which UpdateCustomKeyStore properties may change in which connection state, see
  `kms.stores`), vantage (one of VANTAGES, default "inside_vpc": where the machine running the tool stands,
  see `world.vantage`; "outside" reaches only public hostnames, like a laptop on the internet).
- `[latencies]` connect, disconnect, update_propagation, key_availability_after_connect (simulated seconds).
- `[[key_managers]]` name (required), keys = [{ id, usage, status }].
- `[[proxies]]` name, key_manager (required), public_hostnames, certificate_hosts, certificate (one of
  CERTIFICATE_KINDS, e.g. "via_intermediate" / "missing_intermediate"), certificate_days_valid,
  uri_path_prefix, credentials = [{ access_key_id, secret }], health, latency_ms, down,
  tls_max_version ("1.0" | "1.1" | "1.2" | "1.3", default "1.3").
- `[[load_balancers]]` name (required), type, scheme, availability_zones, listeners = [{ port, protocol,
  target_group }], state, and either proxy (shorthand: one healthy target) or `[[load_balancers.target_groups]]`
  with name (required), protocol, port, target_type and targets = [{ id (required), proxy, port, health (ELBv2
  TargetHealthStateEnum), reason, availability_zone }]; routing and fail-open are in `world.balancing`.
- `[[endpoint_services]]` service_id, load_balancer (required), private_dns_name, private_dns_state,
  allowed_principals, acceptance_required, service_type, state, owner.
- `[[keystores]]` id, name, connectivity, uri_endpoint, access_key_id, secret (required), uri_path,
  vpc_endpoint_service_name, vpc_endpoint_service_owner, state, connection_error_code.
- `[[keys]]` key_id, keystore, xks_key_id (required), state, description.
- `[[secrets]]` name and either value or keystore (the id of a key store whose current proxy secret it holds,
  read live). `[iam]` caller_arn, denied_actions, simulation_denied.
- `[[faults]]` see `Fault`; proxy_fault is one of PROXY_FAULT_KINDS (incl. "throttling", "dependency_timeout");
  optional account / region limit an API fault (and a connect outcome) to calls in that account / Region.
- `[capture]` (written by `xksmigrate capture`; see `world.captured`): tool, version, captured_at, scrubbed,
  key_check, unseen. A secret may be the placeholder "placeholder:filled-by-the-rehearsal-world".
- `[[proxies]] region`: the Region whose KMS signs to the proxy (SigV4 scope), default `[world] region`.

Many accounts and Regions (all optional; a file without them means exactly what it meant before):
- The top-level tables above are the *default account* (`[world] account_id`) in `[world] region`. Any access
  key the world does not know is the default account's, as before.
- `[[quotas]]` operations = ["DescribeCustomKeyStores", ...], rate (requests per simulated second, per account
  and Region, shared by the operations listed together; see `accounts`). None: no throttling (opt-in).
- `[[accounts]]` id (required), regions (default `[world] region`; a nested item's `region` defaults to the
  first), access_keys (long-term access key ids whose requests are this account's), `[accounts.iam]` (as
  `[iam]`), `[[accounts.roles]]` name, trusted (principals: account id, `arn:aws:iam::ID:root`, a user or
  role ARN, `*`; default the default account), external_id, max_session_seconds (3600..43200, default 3600),
  `[[accounts.quotas]]` (replaces the world's for this account), and the per-Region tables nested under the
  account with an optional `region` each: `[[accounts.load_balancers]]`, `[[accounts.endpoint_services]]`,
  `[[accounts.keystores]]`, `[[accounts.keys]]` (a key lives with its key store; no region), and
  `[[accounts.secrets]]`. An `[[accounts]]` table with the default account's id adds roles, access keys,
  Regions and items to it (its IAM stays `[iam]`).
- Each (account, Region) is a cell: a `World` of its own in `World.cells` (the default cell is the World
  itself) sharing proxies, key managers, latencies and the clock. References (keys to key stores, endpoint
  services to load balancers, secrets to key stores) resolve inside a cell; key store and key ids are unique
  across the world. With `[[accounts]]`, a request signed for a Region the account does not have is refused
  (UnrecognizedClientException); without, every Region answers from the one cell, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from migrator.rehearsal.world import accounts as _accounts
from migrator.rehearsal.world import captured
from migrator.rehearsal.world.accounts import Account as Account
from migrator.rehearsal.world.accounts import Quota as Quota
from migrator.rehearsal.world.accounts import Role as Role
from migrator.rehearsal.world.balancing import LB_SCHEMES as LB_SCHEMES
from migrator.rehearsal.world.balancing import LB_TYPES as LB_TYPES
from migrator.rehearsal.world.balancing import LoadBalancer as LoadBalancer
from migrator.rehearsal.world.balancing import Target as Target
from migrator.rehearsal.world.balancing import TargetGroup as TargetGroup
from migrator.rehearsal.world.balancing import read_load_balancer
from migrator.rehearsal.world.objects import (
    _ACCESS_KEY_ID,
    _ACCOUNT,
    _HOST,
    _KEYSTORE_ID,
    _SECRET,
    _SERVICE_ID,
    _URI_PATH,
    _XKS_KEY_ID,
)
from migrator.rehearsal.world.objects import CERTIFICATE_KINDS as CERTIFICATE_KINDS
from migrator.rehearsal.world.objects import CONNECTION_ERROR_CODES as CONNECTION_ERROR_CODES
from migrator.rehearsal.world.objects import CONNECTION_STATES as CONNECTION_STATES
from migrator.rehearsal.world.objects import CONNECTIVITIES as CONNECTIVITIES
from migrator.rehearsal.world.objects import HEALTH_STATES as HEALTH_STATES
from migrator.rehearsal.world.objects import KEY_STATES as KEY_STATES
from migrator.rehearsal.world.objects import PRIVATE_DNS_STATES as PRIVATE_DNS_STATES
from migrator.rehearsal.world.objects import PROXY_FAULT_KINDS as PROXY_FAULT_KINDS
from migrator.rehearsal.world.objects import SERVICE_STATES as SERVICE_STATES
from migrator.rehearsal.world.objects import SERVICE_TYPES as SERVICE_TYPES
from migrator.rehearsal.world.objects import TLS_VERSIONS as TLS_VERSIONS
from migrator.rehearsal.world.objects import UPDATE_STATE_RULES as UPDATE_STATE_RULES
from migrator.rehearsal.world.objects import VANTAGES as VANTAGES
from migrator.rehearsal.world.objects import EndpointService as EndpointService
from migrator.rehearsal.world.objects import Fault as Fault
from migrator.rehearsal.world.objects import Iam as Iam
from migrator.rehearsal.world.objects import Key as Key
from migrator.rehearsal.world.objects import KeyManager as KeyManager
from migrator.rehearsal.world.objects import KeyManagerKey as KeyManagerKey
from migrator.rehearsal.world.objects import KeyStore as KeyStore
from migrator.rehearsal.world.objects import Latencies as Latencies
from migrator.rehearsal.world.objects import Proxy as Proxy
from migrator.rehearsal.world.objects import ProxyCredential as ProxyCredential
from migrator.rehearsal.world.objects import Secret as Secret
from migrator.rehearsal.world.objects import World as World
from migrator.rehearsal.world.reader import Reader as _Reader
from migrator.rehearsal.world.reader import WorldFileError as WorldFileError
from migrator.rehearsal.world.reader import parse_toml_text as parse_toml_text

# ---------------------------------------------------------------------------------------------
# Loading


def load_world_file(path: str | Path) -> World:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorldFileError(f"{path}: cannot read: {exc.strerror}") from None
    return world_from_dict(parse_toml_text(raw, str(path)), str(path))


def load_fault_file(path: str | Path) -> list[Fault]:
    """A fault file holds only `[[faults]]` tables."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorldFileError(f"{path}: cannot read: {exc.strerror}") from None
    top = _Reader(str(path), "", parse_toml_text(raw, str(path)))
    faults = [_fault(r) for r in top.tables("faults")]
    top.done()
    return faults


def world_from_dict(data: dict[str, Any], source: str = "<world>") -> World:
    top = _Reader(source, "", data)
    w = top.table_reader("world")
    world = World(
        account_id=w.get("account_id", str, "111122223333", pattern=_ACCOUNT),
        region=w.get("region", str, "us-east-1", pattern=re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")),
        time_scale=w.get("time_scale", float, 60.0),
        seed=w.get("seed", int, 1),
        update_state_rule=w.get("update_state_rule", str, "api_operation", choices=UPDATE_STATE_RULES),
        vantage=w.get("vantage", str, "inside_vpc", choices=VANTAGES),
    )
    if world.time_scale <= 0:
        raise w.fail("time_scale", "must be positive")
    w.done()

    lat = top.table_reader("latencies")
    world.latencies = Latencies(
        connect=lat.get("connect", float, 300.0),
        disconnect=lat.get("disconnect", float, 300.0),
        update_propagation=lat.get("update_propagation", float, 0.0),
        key_availability_after_connect=lat.get("key_availability_after_connect", float, 0.0),
    )
    lat.done()

    for r in top.tables("key_managers"):
        keys = []
        for k in r.tables("keys"):
            keys.append(KeyManagerKey(
                id=k.get("id", str, pattern=_XKS_KEY_ID),
                usage=k.strings("usage", ["ENCRYPT", "DECRYPT"], choices=("ENCRYPT", "DECRYPT")),
                status=k.get("status", str, "ENABLED", choices=("ENABLED", "DISABLED")),
            ))
            k.done()
        world.key_managers.append(KeyManager(name=r.get("name", str), keys=keys))
        r.done()

    for r in top.tables("proxies"):
        creds = []
        for c in r.tables("credentials"):
            creds.append(ProxyCredential(
                access_key_id=c.get("access_key_id", str, pattern=_ACCESS_KEY_ID),
                secret=c.get("secret", str, pattern=_SECRET),
            ))
            c.done()
        world.proxies.append(Proxy(
            name=r.get("name", str),
            key_manager=r.get("key_manager", str),
            public_hostnames=r.strings("public_hostnames", pattern=_HOST),
            certificate_hosts=r.strings("certificate_hosts", pattern=re.compile(r"^[a-zA-Z0-9.*-]+$")),
            certificate=r.get("certificate", str, "valid", choices=CERTIFICATE_KINDS),
            certificate_days_valid=r.get("certificate_days_valid", int, 365),
            uri_path_prefix=r.get("uri_path_prefix", str, "", pattern=re.compile(r"^(/[a-zA-Z0-9/_-]+)?$")),
            credentials=creds,
            health=r.get("health", str, "ACTIVE", choices=HEALTH_STATES),
            latency_ms=r.get("latency_ms", float, 2.0),
            down=r.get("down", bool, False),
            tls_max_version=r.get("tls_max_version", str, "1.3", choices=TLS_VERSIONS),
            region=r.get("region", str, world.region, pattern=_accounts.REGION),
        ))
        if not 1 <= world.proxies[-1].certificate_days_valid <= 36500:  # else the proxy's TLS setup fails
            raise r.fail("certificate_days_valid", "must be 1-36500 (for an expired one: certificate = \"expired\")")
        r.done()

    paths: dict[int, str] = {}  # id(item) -> where it is in the file, for errors about nested items
    _read_items(top, lambda r: world, paths)
    world.iam = _iam(top.table_reader("iam"))
    world.faults = [_fault(r) for r in top.tables("faults")]
    world.quotas = _accounts.read_quotas(top.tables("quotas"))
    world.accounts = [Account(id=world.account_id, regions=[world.region])]
    _read_accounts(top, world, paths)
    world.capture = captured.read_capture_table(top.table_reader("capture"))
    top.done()
    _check_references(world, source, paths)
    captured.fill_placeholders(world)
    return world


def _iam(r: _Reader) -> Iam:
    iam = Iam(caller_arn=r.get("caller_arn", str, ""), denied_actions=r.strings("denied_actions"),
              simulation_denied=r.get("simulation_denied", bool, False))
    r.done()
    return iam


def _new_cell(world: World, account: Account, region: str, iam: Iam) -> World:
    """An (account, Region) cell: its own AWS resources, the world's proxies, key managers and latencies;
    `accounts` holds just its own account (its roles, for IAM GetRole)."""
    return World(account_id=account.id, region=region, time_scale=world.time_scale, seed=world.seed,
                 update_state_rule=world.update_state_rule, vantage=world.vantage, latencies=world.latencies,
                 key_managers=world.key_managers, proxies=world.proxies, iam=iam, accounts=[account],
                 quotas=world.quotas, declares_accounts=True)


def _read_accounts(top: _Reader, world: World, paths: dict[int, str]) -> None:
    """`[[accounts]]`: each account's header (`accounts.read_account`), iam and per-Region items into cells."""
    tables = top.tables("accounts")
    world.declares_accounts = bool(tables)
    owners: dict[str, str] = {}
    listed: set[str] = set()
    for r in tables:
        account = _accounts.read_account(r, world.account_id, world.region)
        if account.id in listed:
            raise r.fail("id", f"account {account.id} is listed twice")
        listed.add(account.id)
        if account.id == world.account_id:
            if "iam" in r.table:
                raise r.fail("iam", "the default account's IAM is the top-level [iam] table")
            iam = world.iam
            world.accounts[0] = account
        else:
            iam = _iam(r.table_reader("iam"))
            world.accounts.append(account)
        for key in account.access_keys:
            if key in owners:
                raise r.fail("access_keys", f"{key} is already an access key of account {owners[key]}")
            owners[key] = account.id
        for region in account.regions:
            if (account.id, region) != (world.account_id, world.region):
                world.cells[(account.id, region)] = _new_cell(world, account, region, iam)

        def place(item: _Reader, account: Account = account) -> World:
            region = item.get("region", str, account.regions[0], pattern=_accounts.REGION)
            if region not in account.regions:
                raise item.fail("region", f"{region!r} is not one of the account's regions "
                                          f"({', '.join(account.regions)})")
            return world.all_cells()[(account.id, region)]

        _read_items(r, place, paths, [world.all_cells()[(account.id, region)] for region in account.regions])
        r.done()


def _read_items(parent: _Reader, place: Callable[[_Reader], World], paths: dict[int, str],
                account_cells: list[World] | None = None) -> None:
    """The AWS resources of a cell: load balancers, endpoint services, key stores, keys, secrets.

    `place` picks the cell of each item (top level: the default one; under [[accounts]]: by its `region`).
    A key nested under an account lives with its key store, found among `account_cells`.
    """
    for r in parent.tables("load_balancers"):
        cell = place(r)
        cell.load_balancers.append(read_load_balancer(r, cell.region))
        paths[id(cell.load_balancers[-1])] = r.path
        r.done()

    for r in parent.tables("endpoint_services"):
        cell = place(r)
        cell.endpoint_services.append(EndpointService(
            service_id=r.get("service_id", str, pattern=_SERVICE_ID),
            load_balancer=r.get("load_balancer", str),
            private_dns_name=r.get("private_dns_name", str, "", pattern=re.compile(r"^[a-zA-Z0-9.-]*$")),
            private_dns_state=r.get("private_dns_state", str, "verified", choices=PRIVATE_DNS_STATES),
            allowed_principals=r.strings("allowed_principals",
                                         [f"cks.kms.{cell.region}.amazonaws.com"]),
            acceptance_required=r.get("acceptance_required", bool, False),
            service_type=r.get("service_type", str, "Interface", choices=SERVICE_TYPES),
            state=r.get("state", str, "Available", choices=SERVICE_STATES),
            owner=r.get("owner", str, "", pattern=re.compile(r"^([0-9]{12})?$")),
        ))
        paths[id(cell.endpoint_services[-1])] = r.path
        r.done()

    for r in parent.tables("keystores"):
        cell = place(r)
        ks = KeyStore(
            id=r.get("id", str, pattern=_KEYSTORE_ID),
            name=r.get("name", str),
            connectivity=r.get("connectivity", str, choices=CONNECTIVITIES),
            uri_endpoint=r.get("uri_endpoint", str, pattern=re.compile(r"^https://[a-zA-Z0-9.-]+$")),
            uri_path=r.get("uri_path", str, "/kms/xks/v1", pattern=_URI_PATH),
            access_key_id=r.get("access_key_id", str, pattern=_ACCESS_KEY_ID),
            secret=r.get("secret", str, pattern=_SECRET),
            vpc_endpoint_service_name=r.get("vpc_endpoint_service_name", str, ""),
            vpc_endpoint_service_owner=r.get("vpc_endpoint_service_owner", str, "",
                                             pattern=re.compile(r"^([0-9]{12})?$")),
            state=r.get("state", str, "CONNECTED", choices=CONNECTION_STATES),
            connection_error_code=r.get("connection_error_code", str, "",
                                        choices=("", *CONNECTION_ERROR_CODES)),
        )
        if ks.connectivity == "VPC_ENDPOINT_SERVICE" and not ks.vpc_endpoint_service_name:
            raise r.fail("vpc_endpoint_service_name", "is required for VPC_ENDPOINT_SERVICE connectivity")
        cell.keystores.append(ks)
        paths[id(ks)] = r.path
        r.done()

    for r in parent.tables("keys"):
        key = Key(
            key_id=r.get("key_id", str, pattern=re.compile(r"^[0-9a-f-]{36}$")),
            keystore=r.get("keystore", str, pattern=_KEYSTORE_ID),
            xks_key_id=r.get("xks_key_id", str, pattern=_XKS_KEY_ID),
            state=r.get("state", str, "Enabled", choices=KEY_STATES),
            description=r.get("description", str, ""),
        )
        r.done()
        homes = [c for c in account_cells or [] if any(ks.id == key.keystore for ks in c.keystores)]
        cell = homes[0] if homes else place(r)
        cell.keys.append(key)
        paths[id(key)] = r.path

    for r in parent.tables("secrets"):
        cell = place(r)
        secret = Secret(name=r.get("name", str), value=r.get("value", str, ""),
                        keystore=r.get("keystore", str, "", pattern=re.compile(r"^(cks-[0-9a-f]{17})?$")))
        if bool(secret.value) == bool(secret.keystore):
            raise r.fail("value", "give exactly one of value or keystore (the store whose current secret it is)")
        cell.secrets.append(secret)
        paths[id(secret)] = r.path
        r.done()


def _fault(r: _Reader) -> Fault:
    f = Fault(
        operation=r.get("operation", str, ""),
        error_code=r.get("error_code", str, ""),
        http_status=r.get("http_status", int, 400),
        message=r.get("message", str, ""),
        latency_seconds=r.get("latency_seconds", float, 0.0),
        connection_error_code=r.get("connection_error_code", str, "", choices=("", *CONNECTION_ERROR_CODES)),
        proxy=r.get("proxy", str, ""),
        proxy_fault=r.get("proxy_fault", str, "", choices=("", *PROXY_FAULT_KINDS)),
        latency_ms=r.get("latency_ms", float, 0.0),
        count=r.get("count", int, None),
        probability=r.get("probability", float, None),
        after=r.get("after", int, 0),
        account=r.get("account", str, "", pattern=re.compile(r"^([0-9]{12})?$")),
        region=r.get("region", str, "", pattern=re.compile(rf"^$|{_accounts.REGION.pattern}")),
    )
    effects = [bool(f.error_code), bool(f.latency_seconds), bool(f.connection_error_code), bool(f.proxy_fault)]
    if sum(effects) != 1:
        raise r.fail("error_code", "a fault needs exactly one of error_code, latency_seconds, "
                                   "connection_error_code, proxy_fault")
    if f.proxy_fault and not f.proxy:
        raise r.fail("proxy", "is required with proxy_fault")
    if not f.proxy_fault and not f.operation:
        raise r.fail("operation", "is required (an AWS action name or \"*\")")
    if f.probability is not None and not 0.0 <= f.probability <= 1.0:
        raise r.fail("probability", "must be between 0 and 1")
    if f.count is not None and f.count < 0:
        raise r.fail("count", "must not be negative")
    if f.after < 0:
        raise r.fail("after", "must not be negative")
    if not 400 <= f.http_status <= 599:  # anything else broke the connection instead of answering an error
        raise r.fail("http_status", f"must be an HTTP error status 400-599; got {f.http_status}")
    r.done()
    return f


def _check_references(world: World, source: str, paths: dict[int, str]) -> None:
    """Every reference resolves inside its own cell; ids KMS makes unique stay unique across the world."""
    managers = {m.name for m in world.key_managers}
    proxies = {p.name for p in world.proxies}
    for i, p in enumerate(world.proxies):
        if p.key_manager not in managers:
            raise WorldFileError(f"{source}: proxies[{i}].key_manager: no key manager named {p.key_manager!r}")
    for i, f in enumerate(world.faults):
        if f.proxy and f.proxy not in proxies:
            raise WorldFileError(f"{source}: faults[{i}].proxy: no proxy named {f.proxy!r}")
    seen: dict[str, str] = {}
    for cell in world.all_cells().values():
        here = "" if cell is world else f" in account {cell.account_id} {cell.region}"
        _check_cell(cell, source, paths, proxies, here)
        for kind, items, ident in (("keystores", cell.keystores, "id"), ("keys", cell.keys, "key_id")):
            for i, item in enumerate(items):
                value = getattr(item, ident)
                if value in seen:
                    raise WorldFileError(f"{source}: {paths.get(id(item), f'{kind}[{i}]')}.{ident}: {value} is "
                                         f"also {seen[value]}")
                seen[value] = paths.get(id(item), f"{kind}[{i}]")


def _check_cell(cell: World, source: str, paths: dict[int, str], proxies: set[str], here: str) -> None:
    def at(kind: str, i: int, item: object) -> str:
        return f"{source}: {paths.get(id(item), f'{kind}[{i}]')}"

    lbs = {lb.name for lb in cell.load_balancers}
    stores = {ks.id for ks in cell.keystores}
    group_names: set[str] = set()
    for i, lb in enumerate(cell.load_balancers):
        if lb.proxy and lb.proxy not in proxies:
            raise WorldFileError(f"{at('load_balancers', i, lb)}.proxy: no proxy named {lb.proxy!r}")
        for j, group in enumerate(lb.target_groups):
            where = f"{at('load_balancers', i, lb)}.target_groups[{j}]"
            if group.name in group_names:  # ELBv2 names are unique per account and Region
                raise WorldFileError(f"{where}.name: another target group is named {group.name!r}")
            group_names.add(group.name)
            for n, target in enumerate(group.targets):
                if target.proxy and target.proxy not in proxies:
                    raise WorldFileError(f"{where}.targets[{n}].proxy: no proxy named {target.proxy!r}")
    for i, svc in enumerate(cell.endpoint_services):
        if svc.load_balancer not in lbs:
            raise WorldFileError(f"{at('endpoint_services', i, svc)}.load_balancer: no load balancer named "
                                 f"{svc.load_balancer!r}{here}")
    for i, secret in enumerate(cell.secrets):
        if secret.keystore and secret.keystore not in stores:
            raise WorldFileError(f"{at('secrets', i, secret)}.keystore: no key store {secret.keystore!r}{here}")
    for i, k in enumerate(cell.keys):
        if k.keystore not in stores:
            raise WorldFileError(f"{at('keys', i, k)}.keystore: no key store {k.keystore!r}{here}")
