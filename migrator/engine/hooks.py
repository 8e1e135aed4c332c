"""Hooks: executables in `--hooks DIR` called at run events (gh-ost's model).

An event `E` runs `DIR/E` (or `DIR/E.*`, in name order) synchronously with XKSMIGRATE_* variables.
Its output and exit code go to the journal. A failing `before-disconnect` hook stops the run before
anything changes; failures of other hooks are journaled and shown but change nothing, because by then
the store's fate is decided by AWS, not by a notification.

Hooks never see the plan's secrets: environment variables named by `env:` references in the plan
are removed from the hook's environment.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

EVENTS = ("before-disconnect", "after-disconnect", "after-connect", "verified", "rolling-back", "rolled-back",
          "stuck", "completed", "postponed")
BLOCKING = ("before-disconnect",)
OUTPUT_LIMIT = 4000


class HookFailed(Exception):
    """A blocking hook exited non-zero (or could not run)."""


class Hooks:
    def __init__(self, directory: str, timeout: float = 60.0):
        self.directory = Path(directory)
        self.timeout = timeout

    def scripts(self, event: str) -> list[Path]:
        if not self.directory.is_dir():
            return []
        found = [p for p in sorted(self.directory.iterdir())
                 if (p.name == event or p.name.startswith(event + ".")) and p.is_file() and os.access(p, os.X_OK)]
        return found

    def environment(self, event: str, ctx: Any, driver: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _secret_env_names(ctx.plan)}
        window = driver.window()
        env.update({
            "XKSMIGRATE_EVENT": event,
            "XKSMIGRATE_RUN_ID": ctx.run_id,
            "XKSMIGRATE_PLAN": ctx.plan.name,
            "XKSMIGRATE_REGION": ctx.plan.region,
            "XKSMIGRATE_KEYSTORE_ID": driver.store_id,
            "XKSMIGRATE_KEYSTORE_STATE": driver.state,  # XKSMIGRATE_STATE stays the journal URL
            "XKSMIGRATE_WINDOW_SECONDS": "" if window is None else f"{window:.3f}",
            "XKSMIGRATE_BUDGET_SECONDS": f"{ctx.plan.max_disconnected:g}",
            "XKSMIGRATE_DRY_RUN": "1" if ctx.env.dry_run else "0",
            "XKSMIGRATE_TARGET_CONNECTIVITY": driver.ks.target.connectivity,
            "XKSMIGRATE_TARGET_ENDPOINT": driver.ks.target.uri_endpoint,
        })
        return env

    def fire(self, event: str, ctx: Any, driver: Any) -> None:
        for script in self.scripts(event):
            env = self.environment(event, ctx, driver)
            try:
                done = subprocess.run([str(script)], env=env, capture_output=True, timeout=self.timeout,
                                      stdin=subprocess.DEVNULL, check=False)
                code, output = done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")
            except (OSError, subprocess.TimeoutExpired) as exc:
                code, output = -1, f"could not run: {exc}"
            ctx.record(driver.mid, kind="hook", operation=event, outcome="ok" if code == 0 else "failed",
                       detail={"hook": script.name, "event": event, "exit_code": code,
                               "output": output[-OUTPUT_LIMIT:]})
            if code != 0 and event in BLOCKING:
                raise HookFailed(f"hook {script.name} for {event} exited {code}: "
                                 f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}")


def _secret_env_names(plan: Any) -> set[str]:
    names = set()
    for ks in plan.keystores:
        for cred in (ks.target.credential, ks.original_credential):
            if cred and cred.secret_ref.startswith("env:"):
                names.add(cred.secret_ref[4:])
    return names
