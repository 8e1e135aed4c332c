"""The rehearsal world as data: what a world file (TOML) describes, typed and validated.

A world file is the simulated AWS account: key stores in their current configuration, KMS keys,
the XKS proxies (and the external key managers behind them), VPC endpoint services with their
network load balancers, latencies, a time scale and faults. Everything here is plain data; the
behaviour lives in `world.state` (live state and transitions) and the `kms`, `query` and `xks` packages.

Errors name the file, the key and the reason in one line (`WorldFileError`).

Schema (tables and their keys; every key not marked required has a default that keeps older files meaning
what they meant):
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
- `[[faults]]` see `Fault`; proxy_fault is one of PROXY_FAULT_KINDS (incl. "throttling", "dependency_timeout").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.rehearsal.world.balancing import LB_SCHEMES as LB_SCHEMES
from migrator.rehearsal.world.balancing import LB_TYPES as LB_TYPES
from migrator.rehearsal.world.balancing import LoadBalancer as LoadBalancer
from migrator.rehearsal.world.balancing import Target as Target
from migrator.rehearsal.world.balancing import TargetGroup as TargetGroup
from migrator.rehearsal.world.balancing import read_load_balancer
from migrator.rehearsal.world.reader import Reader as _Reader
from migrator.rehearsal.world.reader import WorldFileError as WorldFileError
from migrator.rehearsal.world.reader import parse_toml_text as parse_toml_text

CONNECTIVITIES = ("PUBLIC_ENDPOINT", "VPC_ENDPOINT_SERVICE")
CONNECTION_STATES = ("CONNECTED", "CONNECTING", "FAILED", "DISCONNECTED", "DISCONNECTING")
KEY_STATES = ("Enabled", "Disabled", "PendingDeletion")
HEALTH_STATES = ("ACTIVE", "DEGRADED", "UNAVAILABLE")
# via_intermediate: the leaf is signed by an intermediate CA and served with it (a valid chain);
# missing_intermediate: the same leaf served without its intermediate (a chain clients cannot build).
CERTIFICATE_KINDS = ("valid", "expired", "wrong_host", "untrusted_ca", "self_signed", "via_intermediate",
                     "missing_intermediate")
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
PRIVATE_DNS_STATES = ("verified", "pendingVerification", "failed")
SERVICE_TYPES = ("Interface", "Gateway", "GatewayLoadBalancer")
SERVICE_STATES = ("Pending", "Available", "Deleting", "Deleted", "Failed")
CONNECTION_ERROR_CODES = (
    "INVALID_CREDENTIALS",
    "NETWORK_ERRORS",
    "INTERNAL_ERROR",
    "XKS_PROXY_ACCESS_DENIED",
    "XKS_PROXY_NOT_REACHABLE",
    "XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND",
    "XKS_PROXY_INVALID_RESPONSE",
    "XKS_PROXY_INVALID_CONFIGURATION",
    "XKS_VPC_ENDPOINT_SERVICE_INVALID_CONFIGURATION",
    "XKS_PROXY_TIMED_OUT",
    "XKS_PROXY_INVALID_TLS_CONFIGURATION",
)
# throttling / dependency_timeout: the proxy answers the spec's 429 ThrottlingException / 503
# DependencyTimeoutException (xks-proxy-spec.md, error table: "all" APIs, GetHealthStatus included).
PROXY_FAULT_KINDS = ("down", "slow", "unhealthy", "reject_credentials", "invalid_response", "access_denied",
                     "throttling", "dependency_timeout")
# Which UpdateCustomKeyStore properties may change in which connection state; the AWS texts disagree
# (aws-xks-facts.md, "Where the documents disagree" 1). `kms.stores.UPDATE_STATE_RULES` quotes each one.
UPDATE_STATE_RULES = ("api_operation", "api_exception", "developer_guide")
# The tool's vantage point: inside the VPC (every proxy host, private DNS names too) or outside it (public only).
VANTAGES = ("inside_vpc", "outside")

_ACCOUNT = re.compile(r"^[0-9]{12}$")
_KEYSTORE_ID = re.compile(r"^cks-[0-9a-f]{17}$")
_ACCESS_KEY_ID = re.compile(r"^[A-Z2-7]{20,30}$")
_SECRET = re.compile(r"^[a-zA-Z0-9/+=]{43,64}$")
_XKS_KEY_ID = re.compile(r"^[a-zA-Z0-9\-_.]{1,128}$")
_HOST = re.compile(r"^[a-zA-Z0-9.-]+$")
_URI_PATH = re.compile(r"^(/[a-zA-Z0-9/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$")
_SERVICE_ID = re.compile(r"^vpce-svc-[0-9a-z]+$")


@dataclass
class Latencies:
    """Simulated seconds. `time_scale` simulated seconds pass per real second."""

    connect: float = 300.0
    disconnect: float = 300.0
    # After an update, KMS hosts pick the new values up gradually ("up to five minutes"):
    # crypto may fail with KMSInvalidStateException for this long after a connect that follows one.
    update_propagation: float = 0.0
    # After CONNECTED, keys may stay Unavailable for this long (models eventual consistency).
    key_availability_after_connect: float = 0.0


@dataclass
class KeyManagerKey:
    id: str  # the external key id (XksKeyId)
    usage: list[str] = field(default_factory=lambda: ["ENCRYPT", "DECRYPT"])
    status: str = "ENABLED"  # ENABLED | DISABLED


@dataclass
class KeyManager:
    """An external key manager. Proxies in front of the same key manager share key material."""

    name: str
    keys: list[KeyManagerKey] = field(default_factory=list)


@dataclass
class ProxyCredential:
    access_key_id: str
    secret: str  # the world is a simulation: its proxies' secrets live in the world file


@dataclass
class Proxy:
    """An XKS proxy: which hostnames it serves, its certificate, credentials and key manager."""

    name: str
    key_manager: str
    # Hosts reachable from the internet, i.e. usable with PUBLIC_ENDPOINT connectivity.
    public_hostnames: list[str] = field(default_factory=list)
    # Names in the certificate's SAN (first one also the CN). Empty: public_hostnames plus the
    # private DNS names of every endpoint service that fronts this proxy.
    certificate_hosts: list[str] = field(default_factory=list)
    certificate: str = "valid"  # one of CERTIFICATE_KINDS
    certificate_days_valid: int = 365
    uri_path_prefix: str = ""  # the proxy serves <prefix>/kms/xks/v1
    credentials: list[ProxyCredential] = field(default_factory=list)
    health: str = "ACTIVE"  # fleet health reported by GetHealthStatus
    latency_ms: float = 2.0  # added to every proxy response (real milliseconds, not scaled)
    down: bool = False  # refuses TCP connections
    # Highest TLS version offered: "1.0"/"1.1" make a real TLS 1.0/1.1-only server, which KMS (TLS >= 1.2)
    # cannot talk to; "1.2" offers 1.2 only; "1.3" (default) offers 1.2 and 1.3.
    tls_max_version: str = "1.3"


@dataclass
class EndpointService:
    service_id: str
    load_balancer: str
    private_dns_name: str = ""
    private_dns_state: str = "verified"
    allowed_principals: list[str] = field(default_factory=list)
    acceptance_required: bool = False
    service_type: str = "Interface"
    state: str = "Available"
    owner: str = ""  # account id; "" = the world's account

    def service_name(self, region: str) -> str:
        return f"com.amazonaws.vpce.{region}.{self.service_id}"


@dataclass
class KeyStore:
    id: str
    name: str
    connectivity: str
    uri_endpoint: str
    uri_path: str
    access_key_id: str
    secret: str
    vpc_endpoint_service_name: str = ""
    vpc_endpoint_service_owner: str = ""
    state: str = "CONNECTED"
    connection_error_code: str = ""  # only when state == FAILED


@dataclass
class Key:
    key_id: str  # KMS key id (uuid form)
    keystore: str  # custom key store id
    xks_key_id: str
    state: str = "Enabled"  # Enabled | Disabled | PendingDeletion
    description: str = ""


@dataclass
class Fault:
    """One fault. Exactly one of the effect fields is set; `count` or `probability` bounds it.

    - API error: `operation` (KMS/EC2/ELBv2 action name or "*") + `error_code` (+ `http_status`)
    - API latency: `operation` + `latency_seconds` (simulated seconds added before answering)
    - connect outcome: `operation = "ConnectCustomKeyStore"` + `connection_error_code`
    - proxy fault: `proxy` + `proxy_fault` (one of PROXY_FAULT_KINDS; "slow" uses `latency_ms`)
    """

    operation: str = ""
    error_code: str = ""
    http_status: int = 400
    message: str = ""
    latency_seconds: float = 0.0
    connection_error_code: str = ""
    proxy: str = ""
    proxy_fault: str = ""
    latency_ms: float = 0.0
    count: int | None = None  # None with probability None: always
    probability: float | None = None
    after: int = 0  # let this many matching calls through first


@dataclass
class Secret:
    """A Secrets Manager secret served by the world (for plans that say `secretsmanager:ARN`)."""

    name: str
    value: str = ""
    keystore: str = ""  # a key store id: the value is that store's current secret, read when asked

    def arn(self, region: str, account_id: str) -> str:
        return f"arn:aws:secretsmanager:{region}:{account_id}:secret:{self.name}"


@dataclass
class Iam:
    """What IAM answers: SimulatePrincipalPolicy results, or simulation itself denied."""

    caller_arn: str = ""  # "" = arn:aws:iam::<account>:user/rehearsal-operator
    denied_actions: list[str] = field(default_factory=list)
    simulation_denied: bool = False


@dataclass
class World:
    account_id: str = "111122223333"
    region: str = "us-east-1"
    time_scale: float = 60.0
    seed: int = 1
    update_state_rule: str = "api_operation"  # one of UPDATE_STATE_RULES
    vantage: str = "inside_vpc"  # one of VANTAGES
    latencies: Latencies = field(default_factory=Latencies)
    key_managers: list[KeyManager] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)
    load_balancers: list[LoadBalancer] = field(default_factory=list)
    endpoint_services: list[EndpointService] = field(default_factory=list)
    keystores: list[KeyStore] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    iam: Iam = field(default_factory=Iam)
    faults: list[Fault] = field(default_factory=list)


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
        ))
        if not 1 <= world.proxies[-1].certificate_days_valid <= 36500:  # else the proxy's TLS setup fails
            raise r.fail("certificate_days_valid", "must be 1-36500 (for an expired one: certificate = \"expired\")")
        r.done()

    for r in top.tables("load_balancers"):
        world.load_balancers.append(read_load_balancer(r, world.region))
        r.done()

    for r in top.tables("endpoint_services"):
        world.endpoint_services.append(EndpointService(
            service_id=r.get("service_id", str, pattern=_SERVICE_ID),
            load_balancer=r.get("load_balancer", str),
            private_dns_name=r.get("private_dns_name", str, "", pattern=re.compile(r"^[a-zA-Z0-9.-]*$")),
            private_dns_state=r.get("private_dns_state", str, "verified", choices=PRIVATE_DNS_STATES),
            allowed_principals=r.strings("allowed_principals",
                                         [f"cks.kms.{world.region}.amazonaws.com"]),
            acceptance_required=r.get("acceptance_required", bool, False),
            service_type=r.get("service_type", str, "Interface", choices=SERVICE_TYPES),
            state=r.get("state", str, "Available", choices=SERVICE_STATES),
            owner=r.get("owner", str, "", pattern=re.compile(r"^([0-9]{12})?$")),
        ))
        r.done()

    for r in top.tables("keystores"):
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
        world.keystores.append(ks)
        r.done()

    for r in top.tables("keys"):
        world.keys.append(Key(
            key_id=r.get("key_id", str, pattern=re.compile(r"^[0-9a-f-]{36}$")),
            keystore=r.get("keystore", str, pattern=_KEYSTORE_ID),
            xks_key_id=r.get("xks_key_id", str, pattern=_XKS_KEY_ID),
            state=r.get("state", str, "Enabled", choices=KEY_STATES),
            description=r.get("description", str, ""),
        ))
        r.done()

    for r in top.tables("secrets"):
        secret = Secret(name=r.get("name", str), value=r.get("value", str, ""),
                        keystore=r.get("keystore", str, "", pattern=re.compile(r"^(cks-[0-9a-f]{17})?$")))
        if bool(secret.value) == bool(secret.keystore):
            raise r.fail("value", "give exactly one of value or keystore (the store whose current secret it is)")
        world.secrets.append(secret)
        r.done()

    iam = top.table_reader("iam")
    world.iam = Iam(
        caller_arn=iam.get("caller_arn", str, ""),
        denied_actions=iam.strings("denied_actions"),
        simulation_denied=iam.get("simulation_denied", bool, False),
    )
    iam.done()

    world.faults = [_fault(r) for r in top.tables("faults")]
    top.done()
    _check_references(world, source)
    return world


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


def _check_references(world: World, source: str) -> None:
    managers = {m.name for m in world.key_managers}
    proxies = {p.name for p in world.proxies}
    lbs = {lb.name for lb in world.load_balancers}
    stores = {ks.id for ks in world.keystores}
    for i, p in enumerate(world.proxies):
        if p.key_manager not in managers:
            raise WorldFileError(f"{source}: proxies[{i}].key_manager: no key manager named {p.key_manager!r}")
    group_names: set[str] = set()
    for i, lb in enumerate(world.load_balancers):
        if lb.proxy and lb.proxy not in proxies:
            raise WorldFileError(f"{source}: load_balancers[{i}].proxy: no proxy named {lb.proxy!r}")
        for j, group in enumerate(lb.target_groups):
            where = f"{source}: load_balancers[{i}].target_groups[{j}]"
            if group.name in group_names:  # ELBv2 names are unique per account and Region
                raise WorldFileError(f"{where}.name: another target group is named {group.name!r}")
            group_names.add(group.name)
            for n, target in enumerate(group.targets):
                if target.proxy and target.proxy not in proxies:
                    raise WorldFileError(f"{where}.targets[{n}].proxy: no proxy named {target.proxy!r}")
    for i, svc in enumerate(world.endpoint_services):
        if svc.load_balancer not in lbs:
            raise WorldFileError(
                f"{source}: endpoint_services[{i}].load_balancer: no load balancer named {svc.load_balancer!r}")
    for i, secret in enumerate(world.secrets):
        if secret.keystore and secret.keystore not in stores:
            raise WorldFileError(f"{source}: secrets[{i}].keystore: no key store {secret.keystore!r}")
    for i, k in enumerate(world.keys):
        if k.keystore not in stores:
            raise WorldFileError(f"{source}: keys[{i}].keystore: no key store {k.keystore!r}")
    for i, f in enumerate(world.faults):
        if f.proxy and f.proxy not in proxies:
            raise WorldFileError(f"{source}: faults[{i}].proxy: no proxy named {f.proxy!r}")
