"""Shared types and helpers of the preflight inspector (`migrator.inspect` re-exports the public ones).

Kept apart from `inspect.py` so the check modules (inspect_store, inspect_vpc, inspect_tls,
inspect_proxy, inspect_keys) can import them without a cycle. Nothing here imports boto3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from migrator.aws.clients import ClientFactory, aws_error_code
from migrator.aws.secret_refs import SecretValue
from migrator.plan import VPC, KeystorePlan, Plan

PASS, WARN, BLOCK = "pass", "warn", "block"


@dataclass(frozen=True)
class Finding:
    check: str  # stable id, e.g. "vpc.private_dns_verified"
    status: str  # "pass" | "warn" | "block"
    message: str  # one line, for an operator
    remedy: str = ""  # the AWS CLI command or console action that fixes it ("" for pass)
    detail: dict = field(default_factory=dict)  # JSON-safe, never secrets


@dataclass
class PreflightContext:
    plan: Plan
    keystore: KeystorePlan
    snapshot: dict | None  # the DescribeCustomKeyStores entry (None if the store was not found)
    clients: ClientFactory
    secret_resolver: Callable[[str], SecretValue]
    extra_roots_pem: list[bytes] = field(default_factory=list)
    resolve: Callable[[str], str] | None = None  # host -> "ip:port"; None = DNS + 443
    unfinished_runs: list[str] = field(default_factory=list)
    include_cloudwatch: bool = False
    # Answers shared between checks (caller identity, the store's keys): one AWS call, not one per check.
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def ok(check: str, message: str, **detail: Any) -> Finding:
    return Finding(check, PASS, message, "", detail)


def warn(check: str, message: str, remedy: str = "", **detail: Any) -> Finding:
    return Finding(check, WARN, message, remedy, detail)


def block(check: str, message: str, remedy: str = "", **detail: Any) -> Finding:
    return Finding(check, BLOCK, message, remedy, detail)


# -- AWS errors ------------------------------------------------------------------------------------

def is_aws_or_network_error(exc: BaseException) -> bool:
    """Errors preflight turns into findings rather than raising (the contract: never raise for these)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - botocore is a dependency
        return isinstance(exc, OSError)
    return isinstance(exc, BotoCoreError | ClientError | OSError)


def short_error(exc: BaseException) -> str:
    """One line describing an AWS/network error, without request bodies."""
    code = aws_error_code(exc)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        message = response.get("Error", {}).get("Message") or ""
        return f"{code}: {message}".strip().rstrip(":")[:300]
    return f"{code}: {exc}"[:300]


def is_access_denied(exc: BaseException) -> bool:
    code = aws_error_code(exc)
    return code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}


# -- the store and its target ----------------------------------------------------------------------

def host_of(uri_endpoint: str) -> str:
    return urlsplit(uri_endpoint).hostname or uri_endpoint.removeprefix("https://")


def store_id(ctx: PreflightContext) -> str:
    if ctx.snapshot and ctx.snapshot.get("CustomKeyStoreId"):
        return str(ctx.snapshot["CustomKeyStoreId"])
    return ctx.keystore.id or ""


def xks_config(snapshot: dict | None) -> dict[str, Any]:
    return dict((snapshot or {}).get("XksProxyConfiguration") or {})


def target_path(ctx: PreflightContext) -> str:
    """The URI path after the update: the plan's, or the current one when the plan keeps it."""
    return ctx.keystore.target.uri_path or xks_config(ctx.snapshot).get("UriPath") or "/kms/xks/v1"


def target_owner(ctx: PreflightContext) -> str | None:
    """The endpoint service owner after the update (None: the caller's account)."""
    t = ctx.keystore.target
    if t.connectivity != VPC:
        return None
    if t.vpc_endpoint_service_owner:
        return t.vpc_endpoint_service_owner
    cfg = xks_config(ctx.snapshot)
    # UpdateCustomKeyStore leaves the owner unchanged when not given (facts §0).
    return cfg.get("VpcEndpointServiceOwner") if cfg.get("Connectivity") == VPC else None


def caller_identity(ctx: PreflightContext) -> dict[str, str]:
    """sts GetCallerIdentity, once per context."""
    if "caller" not in ctx.cache:
        ident = ctx.clients.client("sts").get_caller_identity()
        ctx.cache["caller"] = {"Account": ident.get("Account", ""), "Arn": ident.get("Arn", "")}
    return ctx.cache["caller"]


def address_for(ctx: PreflightContext, host: str, *, use_probe: bool) -> tuple[str | None, str]:
    """Where to dial `host` from here: ("ip:port" or None for plain DNS:443, how it was chosen)."""
    if use_probe and ctx.keystore.probe:
        return ctx.keystore.probe, "plan probe"
    if ctx.resolve is not None:
        try:
            resolved = ctx.resolve(host)
        except Exception:  # a resolver that does not know the host: not reachable that way
            resolved = None
        if resolved:
            return resolved, "resolver"
        return "", "resolver (host unknown)"
    return None, "DNS:443"


def resolve_secret_safely(ctx: PreflightContext, ref: str) -> tuple[SecretValue | None, str]:
    """(secret, "") or (None, why) - the reason names the reference, never a value."""
    try:
        return ctx.secret_resolver(ref), ""
    except Exception as exc:  # SecretError, AWS errors from secretsmanager:, a missing env var...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, reason[:300]
