"""Hooks: executables in `--hooks DIR` called at run events (gh-ost's model).

An event `E` runs `DIR/E` (or `DIR/E.*`, in name order) synchronously with XKSMIGRATE_* variables
built from a frozen `HookFacts` (hooks never see the driver). Each script's exit code and output go
to the journal through the `record` callback the caller passes. A failing `before-disconnect` hook
stops the run before anything changes; failures of other hooks are journaled and shown but change
nothing, because by then the store's fate is decided by AWS, not by a notification.

Hooks never see the plan's secrets: environment variables named by `env:` references in the plan
are removed from the hook's environment (`HookFacts.hidden_env`). A hook runs with the operator's AWS
credentials, so a directory (or script) that other users may write is refused (`insecure_reason`)
unless the operator allowed it (`--allow-insecure-hooks`); a hooks directory that is gone fails the
blocking event rather than letting the disconnect go ahead unchecked.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from migrator.plan import KeystorePlan, Plan

EVENTS = ("before-disconnect", "after-disconnect", "after-connect", "verified", "rolling-back", "rolled-back",
          "stuck", "completed", "postponed")
BLOCKING = ("before-disconnect",)
OUTPUT_LIMIT = 4000


class HookFailed(Exception):
    """A blocking hook exited non-zero (or could not run)."""


@dataclass(frozen=True)
class HookFacts:
    """What a hook is told about the run at the moment of its event."""

    run_id: str
    plan_name: str
    region: str
    store_id: str
    store_state: str
    window_seconds: float | None
    budget_seconds: float
    dry_run: bool
    target_connectivity: str
    target_endpoint: str
    hidden_env: frozenset[str] = frozenset()  # env: secret references of the plan

    def environment(self, event: str, base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in self.hidden_env}
        env.update({
            "XKSMIGRATE_EVENT": event,
            "XKSMIGRATE_RUN_ID": self.run_id,
            "XKSMIGRATE_PLAN": self.plan_name,
            "XKSMIGRATE_REGION": self.region,
            "XKSMIGRATE_KEYSTORE_ID": self.store_id,
            "XKSMIGRATE_KEYSTORE_STATE": self.store_state,  # XKSMIGRATE_STATE stays the journal URL
            "XKSMIGRATE_WINDOW_SECONDS": "" if self.window_seconds is None else f"{self.window_seconds:.3f}",
            "XKSMIGRATE_BUDGET_SECONDS": f"{self.budget_seconds:g}",
            "XKSMIGRATE_DRY_RUN": "1" if self.dry_run else "0",
            "XKSMIGRATE_TARGET_CONNECTIVITY": self.target_connectivity,
            "XKSMIGRATE_TARGET_ENDPOINT": self.target_endpoint,
        })
        return env


@dataclass(frozen=True)
class HookResult:
    """One script's run, as the journal records it."""

    event: str
    hook: str
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def insecure_reason(directory: Path) -> str | None:
    """Why another user could change what runs from `directory` (None: only its owner or root can)."""
    me = os.getuid()
    paths = [directory] + ([p for p in sorted(directory.iterdir()) if p.is_file()] if directory.is_dir() else [])
    for path in paths:
        info = path.stat()
        what = "directory" if path == directory else "hook"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            who = "everyone" if info.st_mode & stat.S_IWOTH else "its group"
            return f"the hooks {what} {path} is writable by {who} (mode {stat.S_IMODE(info.st_mode):o})"
        if info.st_uid not in (me, 0):
            return f"the hooks {what} {path} belongs to another user (uid {info.st_uid})"
    return None


class Hooks:
    def __init__(self, directory: str, timeout: float = 60.0, allow_insecure: bool = False):
        self.directory = Path(directory)
        self.timeout = timeout
        self.allow_insecure = allow_insecure
        # Variables every hook gets on top of the process's, read at each event: the CLI's TRACEPARENT when
        # tracing is on (cli/tracing.py), so a hook's spans join the run's trace.
        self.context: Callable[[], Mapping[str, str]] | None = None

    def scripts(self, event: str) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in sorted(self.directory.iterdir())
                if (p.name == event or p.name.startswith(event + ".")) and p.is_file() and os.access(p, os.X_OK)]

    def fire(self, event: str, facts: HookFacts, record: Callable[[HookResult], None]) -> int:
        """Run every script of `event` (returns how many ran); `record` journals each result; a blocking
        failure raises HookFailed."""
        refusal = self._refusal()
        if refusal:
            record(HookResult(event, str(self.directory), -1, refusal))
            if event in BLOCKING:
                raise HookFailed(f"{event} hooks: {refusal}")
            return 0
        ran = 0
        for script in self.scripts(event):
            ran += 1
            env = facts.environment(event, {**os.environ, **(self.context() if self.context else {})})
            try:
                done = subprocess.run([str(script)], env=env, capture_output=True, timeout=self.timeout,
                                      stdin=subprocess.DEVNULL, check=False)
                code, output = done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")
            except (OSError, subprocess.TimeoutExpired) as exc:
                code, output = -1, f"could not run: {exc}"
            result = HookResult(event, script.name, code, output[-OUTPUT_LIMIT:])
            record(result)
            if not result.ok and event in BLOCKING:
                last = output.strip().splitlines()[-1] if output.strip() else "no output"
                raise HookFailed(f"hook {script.name} for {event} exited {code}: {last}")
        return ran

    def _refusal(self) -> str | None:
        """Why no hook may run now: the directory is gone, or others may write it (unless allowed)."""
        if not self.directory.is_dir():
            return f"the hooks directory {self.directory} is gone; not running hooks"
        if self.allow_insecure:
            return None
        reason = insecure_reason(self.directory)
        return f"{reason}; refusing to run hooks from it (--allow-insecure-hooks)" if reason else None


def facts_for(plan: Plan, keystore: KeystorePlan, *, run_id: str, store_id: str, store_state: str,
              window_seconds: float | None, dry_run: bool) -> HookFacts:
    """The facts a hook sees for one store of `plan` (the plan's env: secrets hidden)."""
    return HookFacts(run_id=run_id, plan_name=plan.name, region=plan.region, store_id=store_id,
                     store_state=store_state, window_seconds=window_seconds, budget_seconds=plan.max_disconnected,
                     dry_run=dry_run, target_connectivity=keystore.target.connectivity,
                     target_endpoint=keystore.target.uri_endpoint, hidden_env=secret_env_names(plan))


def secret_env_names(plan: Plan) -> frozenset[str]:
    """Environment variables that `env:` secret references of the plan name."""
    names = set()
    for ks in plan.keystores:
        for cred in (ks.target.credential, ks.original_credential):
            if cred and cred.secret_ref.startswith("env:"):
                names.add(cred.secret_ref[4:])
    return frozenset(names)
