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
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from migrator.cli.errors import fail, warn

if TYPE_CHECKING:
    from migrator.cli.output import Renderer
    from migrator.engine.hooks import Hooks
    from migrator.engine.runner import Environment, RunResult
    from migrator.journal.repository import Journal, RunView
    from migrator.plan import Plan

# One journal per user and machine, wherever the command is run from (two operators in two directories must
# share the journal and its locks): the XDG state directory, created 0700, the file 0600 (journal/db.py).
DEFAULT_STATE = "sqlite:///$XDG_STATE_HOME/xksmigrate/journal.db (else ~/.local/state/xksmigrate/journal.db)"
JOURNAL_NAME = "journal.db"
LEGACY_JOURNAL = os.path.join("state", "xksmigrate.db")  # the old default, relative to the current directory


# -- shared plumbing ---------------------------------------------------------------------------
def state_home() -> Path:
    """This user's xksmigrate state directory: $XDG_STATE_HOME/xksmigrate, else ~/.local/state/xksmigrate."""
    base = os.environ.get("XDG_STATE_HOME", "")
    try:
        root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"  # XDG: ignore a relative one
    except RuntimeError:
        raise fail("--state: no home directory to keep the journal in; set HOME or XDG_STATE_HOME, "
                   "or give --state") from None
    return root / "xksmigrate"


def default_journal_url(name: str = JOURNAL_NAME) -> str:
    return f"sqlite:///{state_home() / name}"


def _name_legacy_journal() -> None:
    """The old default journal, if one is here: its runs are not in the new default journal."""
    if os.path.isfile(LEGACY_JOURNAL):
        old = os.path.abspath(LEGACY_JOURNAL)
        warn(f"{old} (the old default journal) is not used any more; the journal is now {state_home() / JOURNAL_NAME}"
             f"; to keep using the old one: --state sqlite:///{old}")


def open_journal(url: str | None, *, rehearsal: bool = False, read_only: bool = False) -> Journal:
    """The journal at `url` (else $XKSMIGRATE_STATE, else this user's); `read_only` never creates or upgrades it.

    A rehearsal passes its own URL: XKSMIGRATE_STATE and the default name the real journal, never a rehearsal's.
    """
    from migrator.journal.db import parse_url
    from migrator.journal.repository import Journal, JournalError

    if url is None and not rehearsal:
        url = os.environ.get("XKSMIGRATE_STATE") or None
    if url is None:
        _name_legacy_journal()
        url = default_journal_url()
    try:
        parsed, backend = parse_url(url)
        if not rehearsal and backend == "sqlite" and (parsed.database or ":memory:") == ":memory:":
            # a run journaled in memory could never be resumed, and there is nothing to read in a new one
            raise fail("--state: an in-memory SQLite journal is gone when xksmigrate exits; give a file: "
                       "sqlite:///PATH")
        return Journal.open(url, read_only=read_only)
    except JournalError as exc:
        raise fail(f"--state: {exc}") from None


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
            return ask_yes_no(question)
        except (KeyboardInterrupt, EOFError):
            # Ctrl-C or end of input at the prompt is a "no": the engine ends the run blocked (declined), exit 3,
            # nothing changed; it is not an interruption to resume. The signal handler's "shutting down" mark
            # is cleared, and the line the prompt left open is ended so nothing is glued to it.
            _stopping.clear()
            sys.stderr.write("\n")
            sys.stderr.flush()
            return False
        finally:
            renderer.unpause()
    return approve


def ask_yes_no(question: str) -> bool:
    """`question [y/N]: ` on stderr; True only for y/yes. EOF raises EOFError, Ctrl-C KeyboardInterrupt.

    Not `input()`: the kernel may hand Ctrl-C's SIGINT to another thread (the lock heartbeat), and then a
    main thread blocked in read() never runs the Python handler. Waiting in short `select` slices returns
    to the interpreter often enough for the handler to run.
    """
    import select

    while True:
        sys.stderr.write(f"{question} [y/N]: ")
        sys.stderr.flush()
        while not select.select([sys.stdin], [], [], 0.2)[0]:
            pass
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        answer = line.strip().lower()
        if answer in ("", "n", "no"):
            return False
        if answer in ("y", "yes"):
            return True
        sys.stderr.write("Please answer y or n.\n")


def require_consent(yes: bool) -> None:
    if not yes and not sys.stdin.isatty():
        raise fail("no terminal to ask for confirmation before the disconnect; pass --yes to proceed unattended")


_stopping: list[int] = []  # the signal that started the shutdown, once one has


def interruptible() -> None:
    """SIGTERM behaves like Ctrl-C: the engine journals the interruption and exits 130.

    A second signal while it does so exits 130 at once: every journal write is its own committed
    transaction, so stopping there is as safe as the SIGKILL the crash matrix proves safe. (Without
    this the second one could land in the interpreter's shutdown, after Python has put the default
    handler back, and the process would die by the signal: exit -15.) A SIGINT that the parent
    ignores (a background job) stays ignored.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if _stopping:
            os.write(2, b"xksmigrate: second signal: stopping now; the run can be resumed (xksmigrate resume)\n")
            os._exit(130)
        _stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_signal)


def quiet_exit() -> None:
    """Right before the process exits: a late signal must not turn the exit code into death by signal."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def real_env(plan: Plan, *, journal: Journal, renderer: Renderer, yes: bool, profile: str | None, region: str | None,
             endpoint_url: str | None, time_scale: float | None, retry_stuck: bool = False,
             roots_required: bool = True, resolve: list[str] | None = None, scale_check: bool = True) -> Environment:
    """An Environment for an AWS account (or a `sim serve` endpoint); `roots_required=False` (a resume) only warns
    about an unreadable extra trusted root: they serve preflight, and a store mid-window must not wait on them.
    `resolve` (--resolve HOST=IP:PORT, with XKSMIGRATE_RESOLVE and a loopback world's own) is the vantage point."""
    from migrator.aws.clients import ClientFactory
    from migrator.aws.secret_refs import resolve_secret
    from migrator.cli import vantage
    from migrator.engine.clock import Clock
    from migrator.engine.runner import Environment
    from migrator.preflight.accounts import secret_clients

    explicit = vantage.explicit_resolve(resolve)
    scale = time_scale or 1.0
    if scale != 1.0 and not is_loopback(endpoint_url):
        raise fail("--time-scale: only a rehearsal endpoint on loopback may run on simulated time")
    if region and region != plan.region:
        raise fail(f"--region {region} differs from the plan's region {plan.region}")
    roots = extra_roots(plan, required=roots_required)
    world = vantage.ask_rehearsal(endpoint_url) if endpoint_url and is_loopback(endpoint_url) else None
    if world is not None and scale_check and (told := vantage.scale_warning(world.time_scale, time_scale)):
        warn(told)  # after every refusal above: an error stays the one line a bad command prints
    clients = ClientFactory(region=plan.region, profile=profile, endpoint_url=endpoint_url,
                            cell_rate=plan.request_rate, time_scale=scale, account_id=plan.account_id)
    return Environment(journal=journal, clients=clients, clock=Clock(scale), observer=renderer,
                       secret_resolver=lambda ref: resolve_secret(ref, client_factory=secret_clients(plan, ref,
                                                                                                     clients)),
                       approve=approver(yes, renderer), who=who(), retry_stuck=retry_stuck,
                       extra_roots_pem=roots + list(world.trusted_roots_pem if world else ()),
                       resolve=vantage.resolver(explicit, world.resolve if world else None))


def extra_roots(plan: Plan, required: bool = True) -> list[bytes]:
    roots = []
    for path in plan.extra_trusted_roots:
        try:
            with open(path, "rb") as fh:
                roots.append(fh.read())
        except OSError as exc:
            message = f"{plan.path}: plan.extra_trusted_roots: cannot read {path}: {exc.strerror}"
            if required:
                raise fail(message) from None
            warn(message + "; a TLS check that needs it will say so")
    return roots


def is_loopback(url: str | None) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url or "").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def environment(plan: Plan, *, dry_run: bool, json_output: bool, command: str, yes: bool, state: str | None,
                world: str | None, faults: str | None, profile: str | None, region: str | None,
                endpoint_url: str | None, time_scale: float | None, observe: bool = True,
                resolve: list[str] | None = None,
                world_log: str | None = None) -> Iterator[tuple[Environment, Renderer]]:
    """The Environment for a real account, or for an in-process rehearsal world (--dry-run), and its renderer.

    `observe=False` (plan) gives the engine a renderer that shows nothing: the command renders its own report.
    `world_log`: where the rehearsal world writes its log (every call and state change, on its clock).
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
                       endpoint_url=endpoint_url, time_scale=time_scale, resolve=resolve,
                       scale_check=command != "plan"), renderer
        return
    from migrator import dryrun
    from migrator.aws.secret_refs import SecretError, resolve_secret
    from migrator.cli import vantage
    from migrator.engine.runner import Environment
    from migrator.preflight.accounts import secret_clients

    # only a --state given on this command line, never XKSMIGRATE_STATE (gh-ost #1769: a dry run touched real progress)
    journal = open_journal(state or os.environ.get("XKSMIGRATE_REHEARSAL_STATE")
                           or default_journal_url(dryrun.REHEARSAL_JOURNAL_NAME), rehearsal=True)
    known: dict[str, str] = {}
    for ks in plan.keystores:
        for cred in (ks.target.credential, ks.original_credential):
            if cred and not cred.secret_ref.startswith("secretsmanager:"):
                with contextlib.suppress(SecretError):  # the preflight gate reports it
                    known[cred.secret_ref] = resolve_secret(cred.secret_ref).reveal()
    try:
        with dryrun.rehearsal(plan, world_path=world, faults_path=faults, secrets=known,
                              time_scale=time_scale, log_path=world_log) as rh:
            renderer = make_renderer()
            yield Environment(journal=journal, clients=rh.clients, clock=rh.clock, observer=renderer,
                              secret_resolver=lambda ref: resolve_secret(
                                  ref, client_factory=secret_clients(plan, ref, rh.clients)),
                              approve=approver(yes, renderer), who=who(), dry_run=True,
                              extra_roots_pem=rh.extra_roots_pem + extra_roots(plan),
                              resolve=vantage.first(vantage.explicit_resolve(resolve), rh.resolve)), renderer
    except dryrun.RehearsalError as exc:
        raise fail(str(exc)) from None


def finish(renderer: Renderer, result: RunResult, journal: Journal | None = None) -> int:
    """Hand the run's summary (with the acceptances and the operator's abort/extend its journal holds) to the
    renderer; the run's exit code."""
    summary = result.summary()
    if journal is not None:
        from migrator.engine.controls import controls_of
        from migrator.engine.run_context import accepted_unverified

        with contextlib.suppress(Exception):  # a journal that cannot be read: the summary says what it can
            events = journal.events(result.run_id)
            summary["accepted_unverified"] = accepted_unverified(events)
            summary["operator_controls"] = [c.to_dict() for c in controls_of(events)]
    renderer.finish(summary)
    return int(result.exit_code)


def make_hooks(directory: str | None, *, allow_insecure: bool = False, recorded: bool = False) -> Hooks | None:
    """The hooks in `directory` (absolute); refused (exit 2) when other users may write it, unless allowed.

    `recorded` (a resume's directory, from the journal): one that is gone is named, not refused; the engine
    then fails the blocking before-disconnect event rather than disconnect unchecked (engine/hooks.py).
    """
    if directory is None:
        return None
    from migrator.engine.hooks import Hooks, insecure_reason

    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        if not recorded:
            raise fail(f"--hooks: {directory} is not a directory")
        warn(f"the run's hooks directory {path} is gone: its hooks cannot run, and a disconnect still to come "
             "is refused (before-disconnect)")
        return Hooks(path, allow_insecure=allow_insecure)
    reason = insecure_reason(Path(path))
    if reason and not allow_insecure:
        raise fail(f"--hooks: {reason}: another user could run code with your AWS credentials; "
                   "make it writable by you only (chmod go-w) or pass --allow-insecure-hooks")
    if reason:
        warn(f"--allow-insecure-hooks: {reason}")
    return Hooks(path, allow_insecure=allow_insecure)


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
                     hooks: str | None, retry_stuck: bool = False, allow_insecure_hooks: bool = False,
                     resolve: list[str] | None = None) -> tuple[Plan, Environment, Renderer]:
    """The plan recorded with a run, an Environment to continue it (resume, rollback) and its renderer.

    Everything the run depends on comes from the journal (cli/recorded.py): a command line that contradicts
    it, or credentials of another account, are refused here, before anything can change.
    """
    from dataclasses import replace

    from migrator.cli import output, recorded
    from migrator.plan import PlanError, parse_plan

    if run_view.dry_run and not endpoint_url:
        raise fail(f"{run_view.id} was an in-process --dry-run rehearsal; its world is gone, so it cannot be "
                   f"continued: rehearse again")
    try:
        plan = parse_plan(run_view.plan_text, run_view.plan_path or run_view.id)
    except PlanError as exc:
        raise fail(f"the plan recorded for {run_view.id} no longer parses: {exc}") from None
    derived = recorded.derive(run_view, plan, endpoint_url=endpoint_url, hooks=hooks,
                              allow_insecure_hooks=allow_insecure_hooks)
    plan = replace(plan, extra_trusted_roots=derived.extra_trusted_roots)
    require_consent(yes)
    scale = float((run_view.options or {}).get("time_scale") or 1.0)  # the run's: its window and budget use it
    if time_scale and abs(time_scale - scale) > 1e-9:
        raise fail(f"--time-scale {time_scale:g} contradicts the {scale:g} that {run_view.id} was run with; "
                   "leave it out (the journal knows it)")
    env = real_env(plan, journal=journal, renderer=output.Renderer(), yes=yes, profile=profile, region=region,
                   endpoint_url=derived.endpoint_url, time_scale=scale, retry_stuck=retry_stuck, roots_required=False,
                   resolve=resolve)
    env.hooks = make_hooks(derived.hooks_dir, allow_insecure=derived.allow_insecure_hooks,
                           recorded=derived.hooks_recorded)
    recorded.check_account(env.clients, derived.account_id, run_view.id)
    interruptible()
    renderer = output.make_renderer(json_output, command)
    renderer.stores = [m.keystore_id or m.keystore_ref for m in run_view.migrations]
    renderer.use_clock(env.clock.scale)
    env.observer, env.approve = renderer, approver(yes, renderer)
    return plan, env, renderer
