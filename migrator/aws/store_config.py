"""The one shape of a key store's configuration, from DescribeCustomKeyStores to the journal and back.

`Observation` is what one DescribeCustomKeyStores entry said at one moment; `StoreConfig` is its
connectivity part (no secret: AWS never returns one). The engine journals `Observation.to_dict()`
as the snapshot, reads it back with `Observation.from_dict`, and hands the same objects to the
preflight gate, the inspector and the AWS CLI renderer, so nothing converts between CamelCase and
snake_case twice. `StoreConfig.diff` is the single answer to "what differs".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Protocol

PUBLIC = "PUBLIC_ENDPOINT"
VPC = "VPC_ENDPOINT_SERVICE"


class TargetLike(Protocol):
    """What `StoreConfig.for_target` reads from a plan's `[keystores.target]` (plan.Target)."""

    @property
    def connectivity(self) -> str: ...
    @property
    def uri_endpoint(self) -> str: ...
    @property
    def uri_path(self) -> str | None: ...
    @property
    def vpc_endpoint_service_name(self) -> str | None: ...
    @property
    def vpc_endpoint_service_owner(self) -> str | None: ...
    @property
    def credential_access_key_id(self) -> str | None: ...


@dataclass(frozen=True)
class Change:
    """One field that differs between two configurations."""

    field: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.field}: {self.before or '-'} -> {self.after or '-'}"


@dataclass(frozen=True)
class StoreConfig:
    """The connectivity configuration of an external key store (no secret: AWS never returns it)."""

    connectivity: str
    uri_endpoint: str
    uri_path: str
    vpc_endpoint_service_name: str = ""
    vpc_endpoint_service_owner: str = ""
    access_key_id: str = ""

    FIELDS = ("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name",
              "vpc_endpoint_service_owner", "access_key_id")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> StoreConfig:
        """From the snake_case form (a journaled snapshot or a `to_dict`); missing fields are ''."""
        return cls(*(str(data.get(name) or "") for name in cls.FIELDS))

    @classmethod
    def from_describe(cls, xks: Mapping[str, object]) -> StoreConfig:
        """From DescribeCustomKeyStores' `XksProxyConfiguration` (CamelCase)."""
        def get(key: str) -> str:
            return str(xks.get(key) or "")

        return cls(get("Connectivity"), get("UriEndpoint"), get("UriPath"), get("VpcEndpointServiceName"),
                   get("VpcEndpointServiceOwner"), get("AccessKeyId"))

    @classmethod
    def for_target(cls, target: TargetLike, current: StoreConfig) -> StoreConfig:
        """What the store should hold after the run: the plan's target, the rest kept from `current`.

        A PUBLIC target clears the VPC endpoint service name and owner; an absent path or credential
        keeps the current one. An absent owner is left empty, meaning "not constrained": the update does
        not send it, so KMS keeps the current owner, and an empty owner is never a difference (`diff`).
        """
        public = target.connectivity == PUBLIC
        return cls(
            connectivity=target.connectivity,
            uri_endpoint=target.uri_endpoint,
            uri_path=target.uri_path or current.uri_path,
            vpc_endpoint_service_name="" if public else (target.vpc_endpoint_service_name or ""),
            vpc_endpoint_service_owner="" if public else (target.vpc_endpoint_service_owner or ""),
            access_key_id=target.credential_access_key_id or current.access_key_id,
        )

    def diff(self, other: StoreConfig) -> list[Change]:
        """The fields where `other` differs from this one (self = before, other = after).

        An owner left empty on either side means "not constrained" (KMS fills in the caller's
        account), so it is never a difference.
        """
        changes = []
        for name in self.FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "vpc_endpoint_service_owner" and (not mine or not theirs):
                continue
            if mine != theirs:
                changes.append(Change(name, mine, theirs))
        return changes

    def matches(self, other: StoreConfig) -> bool:
        """Equal on every field KMS reports (an empty owner is not a constraint)."""
        return not self.diff(other)

    def describe_diff(self, other: StoreConfig) -> str:
        """`diff` as one line, e.g. for a drift or a rejected update."""
        return ", ".join(str(c) for c in self.diff(other)) or "no difference"


@dataclass(frozen=True)
class Observation:
    """What DescribeCustomKeyStores said about one store at one moment."""

    id: str
    name: str
    type: str
    state: str
    error_code: str
    config: StoreConfig

    @property
    def is_external(self) -> bool:
        return self.type == "EXTERNAL_KEY_STORE"

    def to_dict(self) -> dict[str, str]:
        """The journaled (snake_case) form; `from_dict` reads it back."""
        return {"id": self.id, "name": self.name, "type": self.type, "connection_state": self.state,
                "connection_error_code": self.error_code, **self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Observation:
        def get(key: str) -> str:
            return str(data.get(key) or "")

        return cls(get("id"), get("name"), get("type"), get("connection_state"), get("connection_error_code"),
                   StoreConfig.from_dict(data))

    @classmethod
    def from_describe(cls, entry: Mapping[str, object]) -> Observation:
        """From one entry of DescribeCustomKeyStores' `CustomKeyStores` list."""
        xks = entry.get("XksProxyConfiguration")
        state = str(entry.get("ConnectionState") or "")
        return cls(
            id=str(entry.get("CustomKeyStoreId") or ""),
            name=str(entry.get("CustomKeyStoreName") or ""),
            type=str(entry.get("CustomKeyStoreType") or ""),
            state=state,
            error_code=str(entry.get("ConnectionErrorCode") or "") if state == "FAILED" else "",
            config=StoreConfig.from_describe(xks if isinstance(xks, Mapping) else {}),
        )

    def __str__(self) -> str:  # what a progress line shows, never a Python repr
        code = f" ({self.error_code})" if self.error_code else ""
        return f"{self.id} {self.state}{code}"


# Key states that make one key unusable for its own reason (not its store's): such a verify key is left out.
KEY_OWN_STATES = frozenset({"Disabled", "PendingDeletion", "PendingReplicaDeletion", "PendingImport"})


@dataclass(frozen=True)
class KeyInfo:
    """DescribeKey's answer, the parts the engine and preflight use."""

    key_id: str
    arn: str
    state: str
    custom_key_store_id: str
    xks_key_id: str


assert tuple(f.name for f in fields(StoreConfig)) == StoreConfig.FIELDS
