"""The rehearsal world's objects: the dataclasses a world file becomes, and the values their fields take.

Plain data, no behaviour; `model` documents the file schema, reads files into these and re-exports them
(every module says `model.KeyStore`, `model.World`, ...). Split from `model` to keep each module readable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from migrator.rehearsal.world.accounts import Account, Quota
from migrator.rehearsal.world.balancing import LoadBalancer

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
# A captured twin (`xksmigrate capture`) never holds a secret: this placeholder stands in, and the world fills it
# (world.captured.fill_placeholders) with one value per access key id, the same for KMS's side and the proxy's.
SECRET_PLACEHOLDER = "placeholder:filled-by-the-rehearsal-world"
_SECRET = re.compile(r"^[a-zA-Z0-9/+=]{43,64}$|^placeholder:filled-by-the-rehearsal-world$")
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
    # The Region whose KMS signs requests to this proxy (SigV4 credential scope): "" = [world] region.
    region: str = ""


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
    account: str = ""  # only calls (and connects) in this account; "" = any
    region: str = ""  # only in this Region; "" = any


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
    # Every account, the default ([world] account_id) first; without [[accounts]] it is the only one.
    accounts: list[Account] = field(default_factory=list)
    quotas: list[Quota] = field(default_factory=list)  # [[quotas]]: none = no throttling (opt-in)
    # True when the file has [[accounts]]: requests are then routed strictly by the signing Region.
    declares_accounts: bool = False
    # [capture]: how a captured twin was made (tool, version, captured_at, scrubbed, key_check, unseen);
    # empty for a hand-written world. `placeholder_keys`: access key ids whose secret the world made up.
    capture: dict[str, object] = field(default_factory=dict)
    placeholder_keys: set[str] = field(default_factory=set)
    # The other (account, Region) cells, each a World of its own sharing proxies, key managers and
    # latencies with this one; this World is the cell ([world] account_id, [world] region).
    cells: dict[tuple[str, str], World] = field(default_factory=dict, repr=False, compare=False)

    def all_cells(self) -> dict[tuple[str, str], World]:
        """Every (account, Region) cell, this one first."""
        return {(self.account_id, self.region): self, **self.cells}

    def account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)
