"""The `xksmigrate` command line: parsing, prompts, exit codes and the choice of renderer.

Commands are thin: they build an `engine.Environment` and hand over. Heavy modules (boto3, the
engine, the rehearsal wing) are imported inside the command bodies so `xksmigrate --help` starts
fast. Errors are one line on stderr with a stable exit code (README: 0 ok, 1 internal, 2 usage or
invalid plan, 3 blocked, 4 rolled back, 5 stuck, 6 locked, 130 interrupted); tracebacks appear only
with XKSMIGRATE_DEBUG=1 and never show local variables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

app = typer.Typer(name="xksmigrate", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_show_locals=False,
                  help="Safely switch an AWS KMS external key store between public and VPC endpoint connectivity.")
sim_app = typer.Typer(help="The rehearsal world: a local AWS endpoint and XKS proxies.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")

DEFAULT_STATE = "sqlite:///state/xksmigrate.db"

StateOpt = Annotated[str | None, typer.Option("--state", envvar="XKSMIGRATE_STATE", show_envvar=True,
                                              help=f"Journal database URL [default: {DEFAULT_STATE}]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="NDJSON on stdout: a version line, events, a summary line")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before the disconnect")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", envvar="AWS_PROFILE", help="AWS profile")]
RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS Region (default: the plan's)")]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint-url", envvar="AWS_ENDPOINT_URL",
                                                 help="AWS endpoint (a rehearsal world started by `sim serve`)")]
HooksOpt = Annotated[str | None, typer.Option("--hooks", help="Directory of hook executables (see RUNBOOK.md)")]
ScaleOpt = Annotated[float | None, typer.Option("--time-scale", envvar="XKSMIGRATE_TIME_SCALE",
                                                help="Simulated seconds per real second (rehearsal endpoints only)")]


class CliError(Exception):
    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> CliError:
    return CliError(message, code)


# -- shared plumbing ---------------------------------------------------------------------------
def _open_journal(url: str | None, *, rehearsal: bool = False) -> Any:
    from migrator.journal import Journal, JournalError

    try:
        journal = Journal.open(url or DEFAULT_STATE)
    except JournalError as exc:
        raise fail(f"--state: {exc}") from None
    if not rehearsal and journal.backend == "sqlite" and (journal.url.database or ":memory:") == ":memory:":
        journal.close()  # a run journaled in memory could never be resumed
        raise fail("--state: an in-memory SQLite journal is gone when xksmigrate exits; give a file: sqlite:///PATH")
    return journal


def _load_plan(path: str) -> Any:
    from migrator.plan import PlanError, load_plan

    try:
        return load_plan(path)
    except PlanError as exc:
        raise fail(str(exc)) from None


def _approver(yes: bool, renderer: Any) -> Any:
    def approve(question: str) -> bool:
        if yes:
            return True
        pause, unpause = getattr(renderer, "pause", None), getattr(renderer, "unpause", None)
        if pause:
            pause()
        try:
            return typer.confirm(question, default=False, err=True)
        finally:
            if unpause:
                unpause()
    return approve


def _require_consent(yes: bool) -> None:
    if not yes and not sys.stdin.isatty():
        raise fail("no terminal to ask for confirmation before the disconnect; pass --yes to proceed unattended")


def _interruptible() -> None:
    """SIGTERM behaves like Ctrl-C: the engine journals the interruption and exits 130."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _real_env(plan: Any, *, journal: Any, renderer: Any, yes: bool, profile: str | None, region: str | None,
              endpoint_url: str | None, time_scale: float | None, retry_stuck: bool = False) -> Any:
    from migrator.aws import ClientFactory
    from migrator.clock import Clock
    from migrator.engine import Environment
    from migrator.secrets import resolve_secret

    scale = time_scale or 1.0
    if scale != 1.0 and not _is_loopback(endpoint_url):
        raise fail("--time-scale: only a rehearsal endpoint on loopback may run on simulated time")
    if region and region != plan.region:
        raise fail(f"--region {region} differs from the plan's region {plan.region}")
    clients = ClientFactory(region=plan.region, profile=profile, endpoint_url=endpoint_url)
    return Environment(journal=journal, clients=clients, clock=Clock(scale), observer=renderer,
                       secret_resolver=lambda ref: resolve_secret(ref, client_factory=clients),
                       approve=_approver(yes, renderer), who=_who(), retry_stuck=retry_stuck,
                       extra_roots_pem=_extra_roots(plan))


def _extra_roots(plan: Any) -> list[bytes]:
    roots = []
    for path in plan.extra_trusted_roots:
        try:
            with open(path, "rb") as fh:
                roots.append(fh.read())
        except OSError as exc:
            raise fail(f"{plan.path}: plan.extra_trusted_roots: cannot read {path}: {exc.strerror}") from None
    return roots


def _is_loopback(url: str | None) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url or "").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def _environment(plan: Any, *, dry_run: bool, json_output: bool, command: str, yes: bool, state: str | None,
                 world: str | None, faults: str | None, profile: str | None, region: str | None,
                 endpoint_url: str | None, time_scale: float | None) -> Iterator[Any]:
    """The Environment for a real account, or for an in-process rehearsal world (--dry-run)."""
    from migrator import report

    if (world or faults) and not dry_run:
        raise fail("--world and --faults belong to --dry-run")
    if not dry_run:
        journal = _open_journal(state)
        renderer = report.make_renderer(json_output, command)
        yield _real_env(plan, journal=journal, renderer=renderer, yes=yes, profile=profile, region=region,
                        endpoint_url=endpoint_url, time_scale=time_scale)
        return
    from migrator import dryrun
    from migrator.engine import Environment
    from migrator.secrets import SecretError, resolve_secret

    journal = _open_journal(state or os.environ.get("XKSMIGRATE_REHEARSAL_STATE") or dryrun.DEFAULT_REHEARSAL_STATE,
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
            renderer = report.make_renderer(json_output, command)
            yield Environment(journal=journal, clients=rh.clients, clock=rh.clock, observer=renderer,
                              secret_resolver=lambda ref: resolve_secret(ref, client_factory=rh.clients),
                              approve=_approver(yes, renderer), who=_who(), dry_run=True,
                              extra_roots_pem=rh.extra_roots_pem + _extra_roots(plan), resolve=rh.resolve)
    except dryrun.RehearsalError as exc:
        raise fail(str(exc)) from None


def _finish(renderer: Any, result: Any) -> int:
    summary = result.summary()
    renderer.finish(summary)
    return int(result.exit_code)


# -- commands ----------------------------------------------------------------------------------
@app.command()
def run(plan_file: Annotated[str, typer.Argument(metavar="PLAN", help="plan.toml")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Rehearse against an in-process world")] = False,
        yes: YesOpt = False, json_output: JsonOpt = False, state: StateOpt = None,
        world: Annotated[str | None, typer.Option("--world", help="World file for --dry-run")] = None,
        faults: Annotated[str | None, typer.Option("--faults", help="Fault file for --dry-run")] = None,
        profile: ProfileOpt = None, region: RegionOpt = None, endpoint_url: EndpointOpt = None,
        time_scale: ScaleOpt = None, hooks: HooksOpt = None,
        postpone_cutover: Annotated[bool, typer.Option(
            "--postpone-cutover", help="After preflight, wait before the disconnect until `xksmigrate proceed`")]
        = False,
        postpone_flag_file: Annotated[str | None, typer.Option(
            "--postpone-flag-file", help="Postpone while this file exists (created if missing)")] = None,
        cutover_at: Annotated[str | None, typer.Option(
            "--cutover-at", help="Wait before the disconnect until this local time (HH:MM or ISO 8601)")] = None
        ) -> None:
    """Migrate the key stores of PLAN: snapshot, preflight, disconnect, update, connect, verify."""
    from migrator import engine

    plan = _load_plan(plan_file)
    when = _parse_cutover_at(cutover_at) if cutover_at else None
    _require_consent(yes)
    _interruptible()
    with _environment(plan, dry_run=dry_run, json_output=json_output, command="run", yes=yes, state=state,
                      world=world, faults=faults, profile=profile, region=region, endpoint_url=endpoint_url,
                      time_scale=time_scale) as env:
        env.hooks = _hooks(hooks)
        env.postpone, env.postpone_flag_file, env.cutover_at = postpone_cutover, postpone_flag_file, when
        code = _finish(env.observer, engine.start(plan, env))
    raise typer.Exit(code)


def _hooks(directory: str | None) -> Any:
    if directory is None:
        return None
    from migrator.hooks import Hooks

    if not os.path.isdir(directory):
        raise fail(f"--hooks: {directory} is not a directory")
    return Hooks(directory)


def _parse_cutover_at(value: str) -> float:
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


@app.command("plan")
def plan_command(plan_file: Annotated[str, typer.Argument(metavar="PLAN", help="plan.toml")],
                 dry_run: Annotated[bool, typer.Option("--dry-run", help="Against an in-process world")] = False,
                 json_output: JsonOpt = False, state: StateOpt = None,
                 world: Annotated[str | None, typer.Option("--world", help="World file for --dry-run")] = None,
                 faults: Annotated[str | None, typer.Option("--faults", help="Fault file for --dry-run")] = None,
                 profile: ProfileOpt = None, region: RegionOpt = None, endpoint_url: EndpointOpt = None) -> None:
    """Read-only: snapshot, every preflight check, the exact call sequence and the rollback sequence."""
    from migrator import planner

    plan = _load_plan(plan_file)
    with _environment(plan, dry_run=dry_run, json_output=json_output, command="plan", yes=False, state=state,
                      world=world, faults=faults, profile=profile, region=region, endpoint_url=endpoint_url,
                      time_scale=None) as env:
        report = planner.make_report(plan, env)
        planner.render(report, json_output)
    raise typer.Exit(report.exit_code)


@app.command()
def resume(run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest unfinished run)")] = None,
           yes: YesOpt = False, json_output: JsonOpt = False, state: StateOpt = None,
           retry_stuck: Annotated[bool, typer.Option("--retry-stuck",
                                                     help="Try the rollback of a stuck run again")] = False,
           profile: ProfileOpt = None, region: RegionOpt = None, endpoint_url: EndpointOpt = None,
           time_scale: ScaleOpt = None, hooks: HooksOpt = None) -> None:
    """Continue an interrupted run exactly where it stood (it re-observes the key store first)."""
    from migrator import engine, report
    from migrator.plan import PlanError, parse_plan

    journal = _open_journal(state)
    run_view = _find_run(journal, run_id, unfinished=True, allow_stuck=retry_stuck)
    if run_view.dry_run and not endpoint_url:
        raise fail(f"{run_view.id} was an in-process --dry-run rehearsal; its world is gone, so it cannot be "
                   "resumed: rehearse again")
    try:
        plan = parse_plan(run_view.plan_text, run_view.plan_path or run_view.id)
    except PlanError as exc:
        raise fail(f"the plan recorded for {run_view.id} no longer parses: {exc}") from None
    _require_consent(yes)
    _interruptible()
    scale = time_scale or float((run_view.options or {}).get("time_scale") or 1.0)
    renderer = report.make_renderer(json_output, "resume")
    env = _real_env(plan, journal=journal, renderer=renderer, yes=yes, profile=profile, region=region,
                    endpoint_url=endpoint_url, time_scale=scale, retry_stuck=retry_stuck)
    env.hooks = _hooks(hooks)
    raise typer.Exit(_finish(renderer, engine.resume(plan, env, run_view.id)))


@app.command()
def proceed(run_id: Annotated[str, typer.Argument(help="The postponed run")], state: StateOpt = None) -> None:
    """Release a postponed cut-over: the waiting run re-checks preflight and disconnects."""
    journal = _open_journal(state)
    run_view = _find_run(journal, run_id)
    if run_view.outcome not in ("running", "interrupted"):
        raise fail(f"{run_id} already ended: {run_view.outcome}")
    journal.record(run_id, kind="note", outcome="proceed", detail={"message": f"released by {_who()}"})
    typer.echo(f"{run_id}: cut-over released; the runner re-runs preflight, then disconnects")


@app.command()
def rollback(run_id: Annotated[str, typer.Argument(help="A completed run")], yes: YesOpt = False,
             json_output: JsonOpt = False, state: StateOpt = None, profile: ProfileOpt = None,
             region: RegionOpt = None, endpoint_url: EndpointOpt = None, time_scale: ScaleOpt = None,
             hooks: HooksOpt = None) -> None:
    """Return a completed run's key stores to their recorded original configuration, verified."""
    from migrator import engine, report
    from migrator.plan import PlanError, parse_plan

    journal = _open_journal(state)
    run_view = _find_run(journal, run_id)
    if run_view.outcome != "completed":
        raise fail(f"{run_id} is {run_view.outcome}; only a completed run can be rolled back "
                   "(an unfinished one: xksmigrate resume)")
    if run_view.dry_run and not endpoint_url:
        raise fail(f"{run_id} was an in-process --dry-run rehearsal; its world is gone")
    try:
        plan = parse_plan(run_view.plan_text, run_view.plan_path or run_view.id)
    except PlanError as exc:
        raise fail(f"the plan recorded for {run_view.id} no longer parses: {exc}") from None
    _require_consent(yes)
    _interruptible()
    scale = time_scale or float((run_view.options or {}).get("time_scale") or 1.0)
    renderer = report.make_renderer(json_output, "rollback")
    env = _real_env(plan, journal=journal, renderer=renderer, yes=yes, profile=profile, region=region,
                    endpoint_url=endpoint_url, time_scale=scale)
    env.hooks = _hooks(hooks)
    raise typer.Exit(_finish(renderer, engine.rollback(plan, env, run_view.id)))


def _find_run(journal: Any, run_id: str | None, *, unfinished: bool = False, allow_stuck: bool = False) -> Any:
    from migrator.journal import JournalError

    if run_id:
        try:
            run_view = journal.get_run(run_id)
        except JournalError as exc:
            raise fail(str(exc)) from None
        if unfinished and run_view.outcome not in ("running", "interrupted", "failed") and not (
                allow_stuck and run_view.outcome == "stuck"):
            raise fail(f"{run_id} already ended: {run_view.outcome}", 2)
        return run_view
    run_view = journal.latest_unfinished_run()
    if run_view is None:
        raise fail(f"no unfinished run in {journal.url_for_display}")
    return run_view


@app.command()
def status(run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest run)")] = None,
           watch: Annotated[bool, typer.Option("--watch", help="Follow the run until it ends")] = False,
           timeout: Annotated[float, typer.Option("--timeout", help="Give up watching after N seconds (0: never)")]
           = 0.0, json_output: JsonOpt = False, state: StateOpt = None) -> None:
    """Where a run stands, from the journal (works while another process runs it)."""
    from migrator import views

    journal = _open_journal(state)
    if run_id is None:
        runs = journal.list_runs(limit=1)
        if not runs:
            raise fail(f"no runs in {journal.url_for_display}")
        run_id = runs[0].id
    _find_run(journal, run_id)
    raise typer.Exit(views.status(journal, run_id, watch=watch, timeout=timeout, json_output=json_output))


@app.command()
def history(limit: Annotated[int, typer.Option("--limit", help="How many runs")] = 20,
            json_output: JsonOpt = False, state: StateOpt = None) -> None:
    """Past runs with their outcome and disconnected window."""
    from migrator import views

    views.history(_open_journal(state), limit=limit, json_output=json_output)


@app.command()
def unlock(lock_id: Annotated[str, typer.Argument(help="The lock id printed by the runner that holds it")],
           state: StateOpt = None) -> None:
    """Remove a lock left by a runner that is gone (check first that it really is)."""
    journal = _open_journal(state)
    removed = journal.force_unlock(lock_id)
    if removed is None:
        raise fail(f"no lock {lock_id} in {journal.url_for_display}")
    typer.echo(f"removed {lock_id} ({removed.resource}, held by {removed.owner}@{removed.host} pid {removed.pid})")


@app.command()
def graph() -> None:
    """The state machine as a mermaid stateDiagram-v2."""
    from migrator import machine

    typer.echo(machine.mermaid())


@sim_app.command("serve")
def sim_serve(world: Annotated[str | None, typer.Option("--world", help="World file (default: built-in)")] = None,
              port: Annotated[int, typer.Option("--port", help="0 = any free port")] = 0,
              faults: Annotated[str | None, typer.Option("--faults", help="Fault file")] = None,
              log: Annotated[str | None, typer.Option("--log", help="Append the world's call log here")] = None
              ) -> None:
    """Start the rehearsal world: KMS, EC2, ELBv2, IAM, STS and Secrets Manager on loopback."""
    from migrator.rehearsal.serve_main import run_serve

    raise typer.Exit(run_serve(world, port, faults, log))


@sim_app.command("proxy")
def sim_proxy(host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
              port: Annotated[int, typer.Option("--port", help="0 = any free port")] = 0,
              uri_path_prefix: Annotated[str, typer.Option("--uri-path-prefix")] = "",
              region: Annotated[str, typer.Option("--region")] = "us-east-1",
              access_key_id: Annotated[list[str] | None, typer.Option("--access-key-id")] = None,
              secret: Annotated[list[str] | None, typer.Option("--secret", help="env:NAME or file:PATH")] = None,
              key: Annotated[list[str] | None, typer.Option("--key", help="ID[:ENCRYPT,DECRYPT]")] = None,
              hostname: Annotated[list[str] | None, typer.Option("--hostname", help="Name(s) in the cert")] = None,
              key_manager: Annotated[str, typer.Option("--key-manager")] = "rehearsal-ekm",
              ca_dir: Annotated[str | None, typer.Option("--ca-dir")] = None,
              no_tls: Annotated[bool, typer.Option("--no-tls", help="Plain HTTP")] = False) -> None:
    """Start one XKS proxy that follows the XKS proxy API spec to the letter."""
    from migrator.rehearsal.proxy_main import run_proxy

    ids, secrets = access_key_id or [], secret or []
    if len(ids) != len(secrets):
        raise fail("--access-key-id and --secret come in pairs")
    raise typer.Exit(run_proxy(host=host, port=port, uri_path_prefix=uri_path_prefix, region=region,
                               credentials=list(zip(ids, secrets, strict=True)), keys=key or [], tls=not no_tls,
                               hostnames=hostname or [], ca_dir=ca_dir, key_manager=key_manager))


# -- entry point -------------------------------------------------------------------------------
def main() -> None:
    try:
        code = app(args=sys.argv[1:], prog_name="xksmigrate", standalone_mode=False)
    except CliError as exc:
        print(f"xksmigrate: error: {exc}", file=sys.stderr)
        code = exc.code
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("xksmigrate: interrupted", file=sys.stderr)
        code = 130
    except typer.TyperException as exc:  # usage errors from the argument parser
        show = getattr(exc, "show", None)
        if show:
            show()
        else:
            print(f"xksmigrate: error: {exc}", file=sys.stderr)
        code = int(getattr(exc, "exit_code", 2))
    except Exception as exc:
        if os.environ.get("XKSMIGRATE_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"xksmigrate: internal error: {type(exc).__name__}: {first} (XKSMIGRATE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
