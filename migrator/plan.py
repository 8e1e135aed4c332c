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
    extra_trusted_roots = ["ca.pem"]   # optional PEM files trusted besides KMS's 130 roots (rehearsals)

    [[keystores]]
    id = "cks-..." | name = "..."      # exactly one
    probe = "host:port"                # optional address to reach the target endpoint for TLS checks

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

from dataclasses import dataclass, field

PUBLIC = "PUBLIC_ENDPOINT"
VPC = "VPC_ENDPOINT_SERVICE"


class PlanError(ValueError):
    """The plan is unusable; str() is one line: `FILE: KEY: reason`."""


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

    @property
    def ref(self) -> str:
        """How the plan names the store: its id, or its name."""
        return self.id or self.name or ""


@dataclass(frozen=True)
class Plan:
    name: str
    region: str
    keystores: tuple[KeystorePlan, ...]
    max_disconnected: float = 900.0  # seconds
    poll_interval: float = 5.0  # seconds
    account_id: str | None = None
    extra_trusted_roots: tuple[str, ...] = ()
    path: str = ""
    text: str = field(default="", repr=False)
    fingerprint: str = ""  # sha256 hex of the file's bytes
