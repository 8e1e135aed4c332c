"""What a resume and a rollback take from the journal, not from the command line they are started with.

A run depends on more than its plan text: the hooks directory (its before-disconnect hook may stop the
disconnect), the AWS endpoint and the account it preflighted, the plan's extra trusted roots (paths
relative to the plan file). `run_facts` resolves them when the run starts (absolute paths, the caller
identity's account) and the run records them in its options; the postponed cut-over's options and the
time scale are recorded by the engine itself. `derive` rebuilds them for a resume or a rollback: the
journal's value wins where the command line says nothing, and a command line that contradicts the
journal (another endpoint, another hooks directory) is refused with exit 2 and one line, as is another
account (`check_account`), before any call that changes something.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrator.cli.errors import fail, warn

if TYPE_CHECKING:
    from migrator.aws.clients import ClientFactory
    from migrator.journal.repository import RunView
    from migrator.plan import Plan


@dataclass(frozen=True)
class Derived:
    """The outside facts of a recorded run, as a resume or rollback must use them."""

    endpoint_url: str | None
    hooks_dir: str | None
    allow_insecure_hooks: bool
    extra_trusted_roots: tuple[str, ...]
    account_id: str | None  # the account the run must continue in (None: nothing recorded to compare)
    hooks_recorded: bool  # hooks_dir comes from the journal (it may have gone since)


def run_facts(plan: Plan, *, hooks_dir: str | None, allow_insecure_hooks: bool, endpoint_url: str | None,
              account_id: str | None, dry_run: bool) -> dict[str, object]:
    """What a new run records besides the engine's own options (no secret: paths, a URL, an account id)."""
    facts: dict[str, object] = {
        "hooks_dir": os.path.abspath(hooks_dir) if hooks_dir else None,
        "allow_insecure_hooks": allow_insecure_hooks,
        "extra_trusted_roots": [os.path.abspath(root) for root in plan.extra_trusted_roots],
    }
    if not dry_run:  # a --dry-run's world lived in its own process: there is no endpoint to return to
        facts["endpoint_url"] = _normal(endpoint_url)
        facts["account_id"] = account_id
    return facts


def caller_account(clients: ClientFactory) -> str | None:
    """The account of the credentials in use (sts GetCallerIdentity, read-only); None if it cannot be told."""
    try:
        return str(clients.client("sts").get_caller_identity()["Account"])
    except Exception:  # no credentials, no network: preflight says so in its own words
        return None


def derive(run_view: RunView, plan: Plan, *, endpoint_url: str | None, hooks: str | None,
           allow_insecure_hooks: bool) -> Derived:
    """The recorded facts of `run_view`, checked against what the command line gives."""
    options = run_view.options or {}
    run_id = run_view.id
    endpoint = _normal(endpoint_url)
    if "endpoint_url" in options:
        recorded = _normal(_text(options["endpoint_url"]))
        if endpoint_url and endpoint != recorded:
            raise fail(f"--endpoint-url {endpoint_url} is not the endpoint {run_id} ran against "
                       f"({recorded or 'the AWS default'}); leave it out: a resume uses the journal's")
        endpoint = recorded
    hooks_dir, allow, hooks_recorded = hooks, allow_insecure_hooks, False
    if "hooks_dir" in options:
        recorded_hooks = _text(options["hooks_dir"])
        if hooks is not None and os.path.realpath(hooks) != os.path.realpath(recorded_hooks or ""):
            ran_with = f"with the hooks in {recorded_hooks}" if recorded_hooks else "without hooks"
            raise fail(f"--hooks {hooks}: {run_id} ran {ran_with}; leave --hooks out: a resume uses the journal's")
        hooks_dir, hooks_recorded = recorded_hooks, recorded_hooks is not None
        allow = allow or bool(options.get("allow_insecure_hooks"))
    if isinstance(options.get("extra_trusted_roots"), list):
        roots = tuple(str(r) for r in options["extra_trusted_roots"])
    else:  # a run recorded before the roots were: relative to the plan file, if its path says where that was
        base = os.path.dirname(run_view.plan_path or "")
        roots = tuple(r if os.path.isabs(r) else os.path.join(base, r) for r in plan.extra_trusted_roots)
    account = _text(options.get("account_id")) or plan.account_id
    return Derived(endpoint, hooks_dir, allow, roots, account, hooks_recorded)


def check_account(clients: ClientFactory, expected: str | None, run_id: str) -> None:
    """Refuse to continue `run_id` with credentials of another account than the one it ran in."""
    if expected is None:
        return
    actual = caller_account(clients)
    if actual is None:
        warn(f"could not confirm that these credentials are for account {expected}, where {run_id} ran "
             "(sts GetCallerIdentity failed); continuing")
    elif actual != expected:
        raise fail(f"these credentials are for account {actual}, but {run_id} ran in account {expected}; "
                   "use the credentials (--profile) it ran with")


def _normal(url: str | None) -> str | None:
    return url.rstrip("/") if url else None


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)
