"""Shared types and helpers of the preflight inspector (`migrator.preflight.inspector` re-exports the public ones).

Kept apart from `inspector.py` so the check modules (store, vpc, tls, proxy, keys) can import them
without a cycle. Nothing here imports boto3. Every check reads the store as one `Observation`
(`snapshot.config.<field>`, `snapshot.state`, `snapshot.id`): the same object the engine journals.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from migrator.aws.clients import ClientFactory, aws_error_code
from migrator.aws.secret_refs import SecretValue
from migrator.aws.store_config import KeyInfo, Observation, StoreConfig
from migrator.plan import VPC, KeystorePlan, Plan

PASS, WARN, BLOCK = "pass", "warn", "block"
# A check that could not be made is not a pass: it holds the run until it is made or the operator accepts it
# by name (ACCEPTED then, with who and when in the journal). A BLOCK can never be accepted.
UNVERIFIED, ACCEPTED = "unverified", "accepted"


@dataclass(frozen=True)
class Finding:
    check: str  # stable id, e.g. "vpc.private_dns_verified"
    status: str  # "pass" | "warn" | "block" | "unverified" | "accepted"
    message: str  # one line, for an operator
    remedy: str = ""  # the AWS CLI command or console action that fixes it ("" for pass)
    detail: dict[str, object] = field(default_factory=dict)  # JSON-safe, never secrets


def holding(findings: Sequence[Finding]) -> list[Finding]:
    """What holds the run (fail closed): every `block`, and every `unverified` the operator did not accept."""
    return [f for f in findings if f.status in (BLOCK, UNVERIFIED)]


def blocked(findings: Sequence[Finding]) -> bool:
    """Not ready: a `block`, or a check that could not be made and was not accepted; nothing is changed."""
    return bool(holding(findings))


# The findings that block only because the target already is the store's configuration (gate.py, store.py):
# a store held by nothing else needs no change, which `plan` and `run` report as "no changes", exit 0.
NOTHING_TO_DO = frozenset({"engine.target_differs", "keystore.target_differs"})
NO_CHANGES = "No changes: the key store already has the target configuration"


def nothing_to_do(findings: Sequence[Finding]) -> bool:
    """The store already has its target: it is blocked, and only by "nothing to do" (an unverified check
    does not matter then: nothing will be done)."""
    blocks = {f.check for f in findings if f.status == BLOCK}
    return bool(blocks) and blocks <= NOTHING_TO_DO


ACCEPT_SOURCES = {"cli": "with --accept-unverified {check}", "plan": "in the plan's [preflight] accept_unverified"}


def accept(findings: Sequence[Finding], accepted: Collection[str], by: str, source: str) -> list[Finding]:
    """`findings` with each `unverified` one named in `accepted` turned ACCEPTED (who and how in its message and
    detail). A `block` is never changed: only a check that could not be made can be accepted."""
    how = ACCEPT_SOURCES.get(source, "via " + source)
    return [replace(f, status=ACCEPTED, message=f"{f.message} (accepted by {by} {how.format(check=f.check)})",
                    detail={**f.detail, "accepted_by": by, "accepted_via": source})
            if f.status == UNVERIFIED and f.check in accepted else f for f in findings]


def unused_acceptances(findings: Sequence[Finding], accepted: Collection[str]) -> list[tuple[str, str]]:
    """(check, why) for each accepted name that accepted nothing here: reported, never an error."""
    status_of: dict[str, set[str]] = {}
    for f in findings:
        status_of.setdefault(f.check, set()).add(f.status)
    unused: list[tuple[str, str]] = []
    for check in sorted(set(accepted)):
        seen = status_of.get(check, set())
        if ACCEPTED in seen or UNVERIFIED in seen:
            continue
        if BLOCK in seen:
            unused.append((check, f"{check} blocks, and a block can never be accepted: fix it"))
        elif seen:
            unused.append((check, f"{check} was checked ({', '.join(sorted(seen))}), not unverified: "
                                  "nothing to accept"))
        else:
            unused.append((check, f"no check {check} ran here: nothing to accept"))
    return unused


@dataclass
class Answers:
    """Answers shared between checks: one AWS call, not one per check."""

    caller: dict[str, str] | None = None  # sts GetCallerIdentity: Account, Arn
    store_keys: list[KeyInfo] | None = None  # every KMS key in the store
    verify_keys: list[tuple[str, KeyInfo | None]] | None = None  # (key id asked for, its key or None: not found)
    tls_findings: list[Finding] | None = None  # the target's tls.* findings (the proxy probe reads them)


@dataclass
class PreflightContext:
    plan: Plan
    keystore: KeystorePlan
    snapshot: Observation | None  # the store as observed (None if it was not found)
    clients: ClientFactory
    secret_resolver: Callable[[str], SecretValue]
    extra_roots_pem: Sequence[bytes] = ()
    resolve: Callable[[str], str | None] | None = None  # host -> "ip:port"; None = DNS + 443
    unfinished_runs: Sequence[str] | None = ()  # None: the journal could not say (quota.concurrent_runs unverified)
    include_cloudwatch: bool = False
    cache: Answers = field(default_factory=Answers, repr=False, compare=False)


def ok(check: str, message: str, **detail: object) -> Finding:
    return Finding(check, PASS, message, "", detail)


def warn(check: str, message: str, remedy: str = "", **detail: object) -> Finding:
    return Finding(check, WARN, message, remedy, detail)


def block(check: str, message: str, remedy: str = "", **detail: object) -> Finding:
    return Finding(check, BLOCK, message, remedy, detail)


def unverified(check: str, message: str, remedy: str = "", **detail: object) -> Finding:
    """The check could not be made; `remedy` says what would make it checkable."""
    return Finding(check, UNVERIFIED, message, remedy, detail)


# -- AWS errors ------------------------------------------------------------------------------------

def _aws_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - botocore is a dependency
        return (OSError,)
    return (BotoCoreError, ClientError, OSError)


def is_aws_or_network_error(exc: BaseException) -> bool:
    """Errors preflight turns into findings rather than raising (the contract: never raise for these)."""
    return isinstance(exc, _aws_errors())


def short_error(exc: BaseException) -> str:
    """One line describing an AWS/network error, without request bodies."""
    code = aws_error_code(exc)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        message = (error.get("Message") if isinstance(error, Mapping) else "") or ""
        return f"{code}: {message}".strip().rstrip(":")[:300]
    return f"{code}: {exc}"[:300]


def is_access_denied(exc: BaseException) -> bool:
    code = aws_error_code(exc)
    return code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}


# -- the store and its target ----------------------------------------------------------------------

def host_of(uri_endpoint: str) -> str:
    return urlsplit(uri_endpoint).hostname or uri_endpoint.removeprefix("https://")


def store_id(ctx: PreflightContext) -> str:
    if ctx.snapshot and ctx.snapshot.id:
        return ctx.snapshot.id
    return ctx.keystore.id or ""


def current_config(ctx: PreflightContext) -> StoreConfig | None:
    """The store's configuration as observed (None if the store was not found)."""
    return ctx.snapshot.config if ctx.snapshot else None


def target_path(ctx: PreflightContext) -> str:
    """The URI path after the update: the plan's, or the current one when the plan keeps it."""
    current = current_config(ctx)
    return ctx.keystore.target.uri_path or (current.uri_path if current else "") or "/kms/xks/v1"


def target_owner(ctx: PreflightContext) -> str | None:
    """The endpoint service owner after the update (None: the caller's account)."""
    t = ctx.keystore.target
    if t.connectivity != VPC:
        return None
    if t.vpc_endpoint_service_owner:
        return t.vpc_endpoint_service_owner
    current = current_config(ctx)
    # UpdateCustomKeyStore leaves the owner unchanged when not given (facts §0).
    return (current.vpc_endpoint_service_owner or None) if current and current.connectivity == VPC else None


def caller_identity(ctx: PreflightContext) -> dict[str, str]:
    """sts GetCallerIdentity, once per context."""
    if ctx.cache.caller is None:
        ident = ctx.clients.client("sts").get_caller_identity()
        ctx.cache.caller = {"Account": str(ident.get("Account", "")), "Arn": str(ident.get("Arn", ""))}
    return ctx.cache.caller


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
