"""What the CLI's commands share: building an engine Environment, opening the journal, prompts, parsing.

Nothing here talks to AWS: it decides *which* endpoint, credentials, clock and journal a command uses
(a real account, or an in-process rehearsal world for --dry-run) and turns bad input into one-line
`CliError`s with exit code 2. Heavy modules are imported inside the functions (start-up time).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from migrator.cli.output import Renderer
    from migrator.engine.hooks import Hooks
    from migrator.engine.runner import Environment, RunResult
    from migrator.journal.repository import Journal, RunView
    from migrator.plan import Plan

DEFAULT_STATE = "sqlite:///state/xksmigrate.db"


class CliError(Exception):
    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> CliError:
    return CliError(message, code)


# -- shared plumbing ---------------------------------------------------------------------------
def open_journal(url: str | None, *, rehearsal: bool = False) -> Journal:
    from migrator.journal.repository import Journal, JournalError

    try:
        journal = Journal.open(url or DEFAULT_STATE)
    except JournalError as exc:
        raise fail(f"--state: {exc}") from None
    if not rehearsal and journal.backend == "sqlite" and (journal.url.database or ":memory:") == ":memory:":
        journal.close()  # a run journaled in memory could never be resumed
        raise fail("--state: an in-memory SQLite journal is gone when xksmigrate exits; give a file: sqlite:///PATH")
    return journal


def load_plan(path: str) -> Plan:
    from migrator.plan import PlanError, load_plan

    try:
        return load_plan(path)
    except PlanError as exc:
        raise fail(str(exc)) from None


def approver(yes: bool, renderer: Renderer) -> Callable[[str], bool]:
    def approve(question: str) -> bool:
        if yes:
            return True
        renderer.pause()
        try:
            return typer.confirm(question, default=False, err=True)
        finally:
            renderer.unpause()
    return approve


def require_consent(yes: bool) -> None:
    if not yes and not sys.stdin.isatty():
        raise fail("no terminal to ask for confirmation before the disconnect; pass --yes to proceed unattended")


def interruptible() -> None:
    """SIGTERM behaves like Ctrl-C: the engine journals the interruption and exits 130."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def real_env(plan: Plan, *, journal: Journal, renderer: Renderer, yes: bool, profile: str | None, region: str | None,
             endpoint_url: str | None, time_scale: float | None, retry_stuck: bool = False) -> Environment:
    from migrator.aws.clients import ClientFactory
    from migrator.aws.secret_refs import resolve_secret
    from migrator.engine.clock import Clock
    from migrator.engine.runner import Environment

    scale = time_scale or 1.0
    if scale != 1.0 and not is_loopback(endpoint_url):
        raise fail("--time-scale: only a rehearsal endpoint on loopback may run on simulated time")
    if region and region != plan.region:
        raise fail(f"--region {region} differs from the plan's region {plan.region}")
    clients = ClientFactory(region=plan.region, profile=profile, endpoint_url=endpoint_url)
    return Environment(journal=journal, clients=clients, clock=Clock(scale), observer=renderer,
                       secret_resolver=lambda ref: resolve_secret(ref, client_factory=clients),
                       approve=approver(yes, renderer), who=who(), retry_stuck=retry_stuck,
                       extra_roots_pem=extra_roots(plan))


def extra_roots(plan: Plan) -> list[bytes]:
    roots = []
    for path in plan.extra_trusted_roots:
        try:
            with open(path, "rb") as fh:
                roots.append(fh.read())
        except OSError as exc:
            raise fail(f"{plan.path}: plan.extra_trusted_roots: cannot read {path}: {exc.strerror}") from None
    return roots


def is_loopback(url: str | None) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url or "").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def environment(plan: Plan, *, dry_run: bool, json_output: bool, command: str, yes: bool, state: str | None,
                world: str | None, faults: str | None, profile: str | None, region: str | None,
                endpoint_url: str | None, time_scale: float | None,
                observe: bool = True) -> Iterator[tuple[Environment, Renderer]]:
    """The Environment for a real account, or for an in-process rehearsal world (--dry-run), and its renderer.

    `observe=False` (plan) gives the engine a renderer that shows nothing: the command renders its own report.
    """
    from migrator.cli import output

    def make_renderer() -> Renderer:
        return output.make_renderer(json_output, command) if observe else output.Renderer()

    if (world or faults) and not dry_run:
        raise fail("--world and --faults belong to --dry-run")
    if not dry_run:
        journal = open_journal(state)
        renderer = make_renderer()
        yield real_env(plan, journal=journal, renderer=renderer, yes=yes, profile=profile, region=region,
                       endpoint_url=endpoint_url, time_scale=time_scale), renderer
        return
    from migrator import dryrun
    from migrator.aws.secret_refs import SecretError, resolve_secret
    from migrator.engine.runner import Environment

    journal = open_journal(state or os.environ.get("XKSMIGRATE_REHEARSAL_STATE") or dryrun.DEFAULT_REHEARSAL_STATE,
                           rehearsal=True)
    known: dict[str, str] = {}
    for ks in plan.keystores:
        for cred in (ks.target.credential, ks.original_credential):
            if cred and not cred.secret_ref.startswith("secretsmanager:"):
                with contextlib.suppress(SecretError):  # the preflight gate reports it
                    known[cred.secret_ref] = resolve_secret(cred.secret_ref).reveal()
    try:
        with dryrun.rehearsal(plan, world_path=world, faults_path=faults, secrets=known,
                              time_scale=time_scale) as rh:
            renderer = make_renderer()
            yield Environment(journal=journal, clients=rh.clients, clock=rh.clock, observer=renderer,
                              secret_resolver=lambda ref: resolve_secret(ref, client_factory=rh.clients),
                              approve=approver(yes, renderer), who=who(), dry_run=True,
                              extra_roots_pem=rh.extra_roots_pem + extra_roots(plan), resolve=rh.resolve), renderer
    except dryrun.RehearsalError as exc:
        raise fail(str(exc)) from None


def finish(renderer: Renderer, result: RunResult) -> int:
    """Hand the run's summary to the renderer; the run's exit code."""
    summary = result.summary()
    renderer.finish(summary)
    return int(result.exit_code)


def make_hooks(directory: str | None) -> Hooks | None:
    if directory is None:
        return None
    from migrator.engine.hooks import Hooks

    if not os.path.isdir(directory):
        raise fail(f"--hooks: {directory} is not a directory")
    return Hooks(directory)


def parse_cutover_at(value: str) -> float:
    """HH:MM (the next time the clock shows it) or an ISO 8601 date-time, local time unless it says otherwise."""
    import datetime as dt

    now = dt.datetime.now().astimezone()
    try:
        if len(value) <= 5 and ":" in value:
            hour, minute = (int(x) for x in value.split(":"))
            when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if when <= now:
                when += dt.timedelta(days=1)
        else:
            when = dt.datetime.fromisoformat(value)
            if when.tzinfo is None:
                when = when.astimezone()
    except ValueError:
        raise fail(f"--cutover-at: {value!r} is not HH:MM or an ISO 8601 date-time") from None
    if when <= now:
        raise fail(f"--cutover-at: {value} is in the past")
    return when.timestamp()


def find_run(journal: Journal, run_id: str | None, *, unfinished: bool = False, allow_stuck: bool = False) -> RunView:
    from migrator.journal.repository import JournalError

    if run_id:
        try:
            run_view = journal.get_run(run_id)
        except JournalError as exc:
            raise fail(str(exc)) from None
        if unfinished and run_view.outcome not in ("running", "interrupted", "failed") and not (
                allow_stuck and run_view.outcome == "stuck"):
            raise fail(f"{run_id} already ended: {run_view.outcome}", 2)
        return run_view
    latest = journal.latest_unfinished_run()
    if latest is None:
        raise fail(f"no unfinished run in {journal.url_for_display}")
    return latest


def recorded_run_env(journal: Journal, run_view: RunView, *, command: str, json_output: bool, yes: bool,
                     profile: str | None, region: str | None, endpoint_url: str | None, time_scale: float | None,
                     hooks: str | None, retry_stuck: bool = False) -> tuple[Plan, Environment, Renderer]:
    """The plan recorded with a run, an Environment to continue it (resume, rollback) and its renderer."""
    from migrator.cli import output
    from migrator.plan import PlanError, parse_plan

    if run_view.dry_run and not endpoint_url:
        raise fail(f"{run_view.id} was an in-process --dry-run rehearsal; its world is gone, so it cannot be "
                   f"continued: rehearse again")
    try:
        plan = parse_plan(run_view.plan_text, run_view.plan_path or run_view.id)
    except PlanError as exc:
        raise fail(f"the plan recorded for {run_view.id} no longer parses: {exc}") from None
    require_consent(yes)
    interruptible()
    scale = time_scale or float((run_view.options or {}).get("time_scale") or 1.0)
    renderer = output.make_renderer(json_output, command)
    env = real_env(plan, journal=journal, renderer=renderer, yes=yes, profile=profile, region=region,
                   endpoint_url=endpoint_url, time_scale=scale, retry_stuck=retry_stuck)
    env.hooks = make_hooks(hooks)
    return plan, env, renderer
