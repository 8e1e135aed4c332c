"""The `xksmigrate` command line: the typer app, its options, and the exit code of every outcome.

Commands are thin: each parses its arguments, calls one function (`actions.py`, `views.py`) and exits
with the code it returns. Everything those import (boto3, SQLAlchemy, rich, the engine, preflight, the
rehearsal wing) is imported inside the command bodies so `xksmigrate --help` starts fast; typer's plain
help formatter is used (`rich_markup_mode=None`) because its rich one imports rich, markdown-it and
pygments, which cost more than typer itself. This module has no `from __future__ import annotations` on
purpose: with it typer would `eval` every annotation string of every command on each start (~20 ms).

Errors are one line on stderr with a stable exit code (README: 0 ok, 1 internal, 2 usage or invalid
plan, 3 blocked, 4 rolled back, 5 stuck, 6 locked, 130 interrupted); tracebacks appear only with
XKSMIGRATE_DEBUG=1 and never show local variables.
"""

import contextlib
import os
import sys
from typing import Annotated

import typer

from migrator.cli.errors import CliError
from migrator.cli.fleet import fleet_app
from migrator.cli.options import (
    AcceptOpt,
    EndpointOpt,
    HooksOpt,
    InsecureHooksOpt,
    JsonOpt,
    MetricsOpt,
    ProfileOpt,
    RegionOpt,
    ReportOpt,
    ResolveOpt,
    ScaleOpt,
    StateOpt,
    YesOpt,
)
from migrator.cli.text import one_line

app = typer.Typer(name="xksmigrate", add_completion=True, no_args_is_help=True,
                  pretty_exceptions_show_locals=False, rich_markup_mode=None,
                  help="Safely switch an AWS KMS external key store between public and VPC endpoint connectivity.")
sim_app = typer.Typer(help="The rehearsal world: a local AWS endpoint and XKS proxies.", no_args_is_help=True,
                      rich_markup_mode=None)
app.add_typer(sim_app, name="sim")
app.add_typer(fleet_app, name="fleet", help="Many key stores across accounts and Regions, in waves: the canary "
              "alone first, then waves (a fleet file; plans/fleet-example.toml).")


def _print_version(value: bool) -> None:
    if value:
        from migrator import __version__

        print(f"xksmigrate {__version__}")
        raise typer.Exit(0)


@app.callback()
def _top_level(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                                     help="Print the version and exit")] = False) -> None:
    """Safely switch an AWS KMS external key store between public and VPC endpoint connectivity."""


# -- commands: parse, call one function in actions.py or views.py, exit with its code -----------
@app.command()
def run(plan_file: Annotated[str, typer.Argument(metavar="PLAN", help="plan.toml")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Rehearse against an in-process world")] = False,
        yes: YesOpt = False, json_output: JsonOpt = False, state: StateOpt = None,
        world: Annotated[str | None, typer.Option("--world", help="World file for --dry-run")] = None,
        faults: Annotated[str | None, typer.Option("--faults", help="Fault file for --dry-run")] = None,
        profile: ProfileOpt = None, region: RegionOpt = None, endpoint_url: EndpointOpt = None,
        time_scale: ScaleOpt = None, hooks: HooksOpt = None, allow_insecure_hooks: InsecureHooksOpt = False,
        postpone_cutover: Annotated[bool, typer.Option(
            "--postpone-cutover", help="After preflight, wait before the disconnect until `xksmigrate proceed`")]
        = False,
        postpone_flag_file: Annotated[str | None, typer.Option(
            "--postpone-flag-file", help="Postpone while this file exists (created if missing)")] = None,
        cutover_at: Annotated[str | None, typer.Option(
            "--cutover-at", help="Wait before the disconnect until this local time (HH:MM or ISO 8601)")] = None,
        accept_unverified: AcceptOpt = None, resolve: ResolveOpt = None, metrics_file: MetricsOpt = None,
        report: ReportOpt = None) -> None:
    """Migrate the key stores of PLAN: snapshot, preflight, disconnect, update, connect, verify."""
    from migrator.cli import actions

    raise typer.Exit(actions.run(plan_file, dry_run=dry_run, yes=yes, json_output=json_output, state=state,
                                 world=world, faults=faults, profile=profile, region=region,
                                 endpoint_url=endpoint_url, time_scale=time_scale, hooks=hooks,
                                 postpone_cutover=postpone_cutover, postpone_flag_file=postpone_flag_file,
                                 cutover_at=cutover_at, allow_insecure_hooks=allow_insecure_hooks,
                                 accept_unverified=accept_unverified or [], resolve=resolve or [],
                                 metrics_file=metrics_file, report=report))


@app.command("plan")
def plan_command(plan_file: Annotated[str, typer.Argument(metavar="PLAN", help="plan.toml")],
                 dry_run: Annotated[bool, typer.Option("--dry-run", help="Against an in-process world")] = False,
                 json_output: JsonOpt = False, state: StateOpt = None,
                 world: Annotated[str | None, typer.Option("--world", help="World file (a twin from `capture`, "
                                                           "a hand-written world): implies --dry-run")] = None,
                 faults: Annotated[str | None, typer.Option("--faults", help="Fault file for --dry-run")] = None,
                 profile: ProfileOpt = None, region: RegionOpt = None, endpoint_url: EndpointOpt = None,
                 accept_unverified: AcceptOpt = None, resolve: ResolveOpt = None) -> None:
    """Read-only: snapshot, every preflight check, the exact call sequence and the rollback sequence."""
    from migrator.cli import actions

    raise typer.Exit(actions.plan(plan_file, dry_run=dry_run, json_output=json_output, state=state, world=world,
                                  faults=faults, profile=profile, region=region, endpoint_url=endpoint_url,
                                  accept_unverified=accept_unverified or [], resolve=resolve or []))


@app.command()
def capture(plan_file: Annotated[str | None, typer.Option("--plan", metavar="PLAN", help="Capture what PLAN's stores "
                                                          "use and will use (their proxies probed with its secrets)")]
            = None,
            keystore: Annotated[list[str] | None, typer.Option("--keystore", metavar="ID",
                                                               help="A key store id (repeatable; with --region)")]
            = None,
            out: Annotated[str, typer.Option("--out", metavar="FILE", help="The world file to write")] = "world.toml",
            no_scrub: Annotated[bool, typer.Option("--no-scrub", help="Keep real names (a private twin)")] = False,
            key: Annotated[str | None, typer.Option("--key", metavar="REF", help="Pseudonym key: env:NAME or "
                                                    "file:PATH (default $XKSMIGRATE_CAPTURE_KEY, else capture.key "
                                                    "beside the journal)")] = None,
            profile: ProfileOpt = None, region: RegionOpt = None, endpoint_url: EndpointOpt = None,
            resolve: ResolveOpt = None) -> None:
    """Read-only: write a rehearsal world that is a twin of the account (scrubbed by default)."""
    from migrator.cli import capture as capture_cli

    raise typer.Exit(capture_cli.capture(plan_file=plan_file, keystores=keystore or [], out=out, scrub=not no_scrub,
                                         key_ref=key, profile=profile, region=region, endpoint_url=endpoint_url,
                                         resolve=resolve or []))


@app.command()
def resume(run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest unfinished run)")] = None,
           yes: YesOpt = False, json_output: JsonOpt = False, state: StateOpt = None,
           retry_stuck: Annotated[bool, typer.Option("--retry-stuck",
                                                     help="Try the rollback of a stuck run again")] = False,
           profile: ProfileOpt = None, region: RegionOpt = None, endpoint_url: EndpointOpt = None,
           time_scale: ScaleOpt = None, hooks: HooksOpt = None,
           allow_insecure_hooks: InsecureHooksOpt = False, resolve: ResolveOpt = None,
           metrics_file: MetricsOpt = None, report: ReportOpt = None) -> None:
    """Continue an interrupted run exactly where it stood (it re-observes the key store first)."""
    from migrator.cli import actions

    raise typer.Exit(actions.resume(run_id, yes=yes, json_output=json_output, state=state, retry_stuck=retry_stuck,
                                    profile=profile, region=region, endpoint_url=endpoint_url,
                                    time_scale=time_scale, hooks=hooks, allow_insecure_hooks=allow_insecure_hooks,
                                    resolve=resolve or [], metrics_file=metrics_file, report=report))


@app.command()
def proceed(run_id: Annotated[str, typer.Argument(help="The postponed run")], json_output: JsonOpt = False,
            state: StateOpt = None) -> None:
    """Release a postponed cut-over: the waiting run re-checks preflight and disconnects."""
    from migrator.cli import actions

    raise typer.Exit(actions.proceed(run_id, state=state, json_output=json_output))


ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why, in your words (journaled with who and when)")]


@app.command()
def abort(run_id: Annotated[str, typer.Argument(help="A run under way (or interrupted)")], reason: ReasonOpt = None,
          json_output: JsonOpt = False, state: StateOpt = None) -> None:
    """Stop a run at its next step: blocked if nothing changed yet, else the store rolls back to its snapshot."""
    from migrator.cli import controls

    raise typer.Exit(controls.abort(run_id, reason=reason, state=state, json_output=json_output))


@app.command()
def extend(run_id: Annotated[str, typer.Argument(help="A run under way (or interrupted)")],
           by: Annotated[str, typer.Option("--by", help="How much to add to the downtime budget, e.g. 10m")],
           reason: ReasonOpt = None, json_output: JsonOpt = False, state: StateOpt = None) -> None:
    """Raise a run's downtime budget; the runner's deadlines follow within a second."""
    from migrator.cli import controls

    raise typer.Exit(controls.extend(run_id, by_text=by, reason=reason, state=state, json_output=json_output))


@app.command()
def rollback(run_id: Annotated[str, typer.Argument(help="A completed run")], yes: YesOpt = False,
             json_output: JsonOpt = False, state: StateOpt = None, profile: ProfileOpt = None,
             region: RegionOpt = None, endpoint_url: EndpointOpt = None, time_scale: ScaleOpt = None,
             hooks: HooksOpt = None, allow_insecure_hooks: InsecureHooksOpt = False,
             resolve: ResolveOpt = None, metrics_file: MetricsOpt = None, report: ReportOpt = None) -> None:
    """Return a completed run's key stores to their recorded original configuration, verified.

    The rollback is a run of its own, linked to RUN_ID (`rolls back` / `rolled back by`): both keep their
    records and windows in `history`."""
    from migrator.cli import actions

    raise typer.Exit(actions.rollback(run_id, yes=yes, json_output=json_output, state=state, profile=profile,
                                      region=region, endpoint_url=endpoint_url, time_scale=time_scale, hooks=hooks,
                                      allow_insecure_hooks=allow_insecure_hooks, resolve=resolve or [],
                                      metrics_file=metrics_file, report=report))


@app.command()
def status(run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest run)")] = None,
           watch: Annotated[bool, typer.Option("--watch", help="Follow the run until it ends")] = False,
           timeout: Annotated[float, typer.Option("--timeout", help="Give up watching after N seconds (0: never)")]
           = 0.0, json_output: JsonOpt = False, state: StateOpt = None) -> None:
    """Where a run stands, from the journal (works while another process runs it).

    Exits with the run's exit code (0, 3, 4, 5; 130 interrupted or its runner seen dead), 124 if it is still
    going when status stops looking (--timeout, or one look without --watch).
    """
    from migrator.cli import views

    raise typer.Exit(views.status(state, run_id, watch=watch, timeout=timeout, json_output=json_output))


@app.command("report")
def report_command(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run (see `xksmigrate history`), "
                                                     "or a fleet's id (as `fleet report`)")],
                   out: Annotated[str, typer.Option("--out", metavar="DIR", help="Directory to write into "
                                                    "(created if missing)")] = ".",
                   formats: Annotated[str, typer.Option("--format", metavar="html,json,md",
                                                        help="Which files, comma-separated")] = "html,json,md",
                   state: StateOpt = None) -> None:
    """A run's change record from the journal: a self-contained HTML page, JSON, Markdown, the timeline picture.

    Read-only, like `status`. Prints the paths it wrote; RUNBOOK.md#change-record says how to attach them."""
    from migrator.cli import fleet_report, report

    if fleet_report.is_fleet_id(run_id):  # `report FLEET_ID`: the fleet's record, as `fleet report`
        raise typer.Exit(fleet_report.fleet_report(run_id, state=state, dry_run=False, out=out, formats=formats))
    raise typer.Exit(report.report(state, run_id, out=out, formats=formats))


@app.command()
def history(limit: Annotated[int, typer.Option("--limit", help="How many runs")] = 20,
            json_output: JsonOpt = False, state: StateOpt = None) -> None:
    """Past runs with their outcome and disconnected window."""
    from migrator.cli import views

    raise typer.Exit(views.history(state, limit=limit, json_output=json_output))


@app.command()
def unlock(lock_id: Annotated[str, typer.Argument(help="The lock id printed by the runner that holds it")],
           force: Annotated[bool, typer.Option("--force", help="Remove it even if its runner is alive (that run "
                                                               "then stops before its next AWS call)")] = False,
           json_output: JsonOpt = False, state: StateOpt = None) -> None:
    """Remove a lock left by a runner that is gone; refused (exit 6) while the runner is seen alive."""
    from migrator.cli import actions

    raise typer.Exit(actions.unlock(lock_id, force=force, state=state, json_output=json_output))


@app.command()
def graph() -> None:
    """The state machine as a mermaid stateDiagram-v2."""
    from migrator.cli import actions

    raise typer.Exit(actions.graph())


@app.command()
def runbook(section: Annotated[str | None, typer.Argument(help="A section's anchor, e.g. stuck, lock-held "
                                                               "(default: the whole runbook)")] = None) -> None:
    """Print the runbook shipped with the tool (RUNBOOK.md), or one section of it."""
    from migrator.cli.runbook_text import runbook_section

    sys.stdout.write(runbook_section(section))


@sim_app.command("serve")
def sim_serve(world: Annotated[str | None, typer.Option("--world", help="World file (default: built-in)")] = None,
              port: Annotated[int, typer.Option("--port", help="0 = any free port")] = 0,
              faults: Annotated[str | None, typer.Option("--faults", help="Fault file")] = None,
              log: Annotated[str | None, typer.Option("--log", help="Append the world's call log here")] = None
              ) -> None:
    """Start the rehearsal world: KMS, EC2, ELBv2, IAM, STS and Secrets Manager on loopback."""
    from migrator.cli import actions

    raise typer.Exit(actions.sim_serve(world, port, faults, log))


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
    from migrator.cli import actions

    raise typer.Exit(actions.sim_proxy(host=host, port=port, uri_path_prefix=uri_path_prefix, region=region,
                                       access_key_ids=access_key_id or [], secrets=secret or [], keys=key or [],
                                       hostnames=hostname or [], key_manager=key_manager, ca_dir=ca_dir,
                                       tls=not no_tls))


# -- entry point -------------------------------------------------------------------------------
def main() -> None:
    """Run the app; every error is one line on stderr (and, with --json, a version and a summary line on stdout)."""
    args = sys.argv[1:]
    error: tuple[str, str] | None = None  # (outcome, message) of a command that failed outside the engine
    try:
        code = app(args=args, prog_name="xksmigrate", standalone_mode=False)
    except CliError as exc:
        print(f"xksmigrate: error: {one_line(exc)}", file=sys.stderr)
        code, error = exc.code, ("error", str(exc))
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("xksmigrate: interrupted", file=sys.stderr)
        code, error = 130, ("interrupted", "interrupted")
    except typer.TyperException as exc:  # usage errors from the argument parser
        show = getattr(exc, "show", None)
        if show:
            show()
        else:
            print(f"xksmigrate: error: {one_line(exc)}", file=sys.stderr)
        format_message = getattr(exc, "format_message", None)
        code, error = int(getattr(exc, "exit_code", 2)), ("error", format_message() if format_message else str(exc))
    except Exception as exc:
        if os.environ.get("XKSMIGRATE_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        message = f"internal error: {type(exc).__name__}: {first}"
        print(f"xksmigrate: {one_line(message)} (XKSMIGRATE_DEBUG=1 shows the traceback)", file=sys.stderr)
        code, error = 1, ("error", message)
    code = code if isinstance(code, int) else 0
    if error is not None and "--json" in args:
        from migrator.cli.output import write_error

        write_error(sys.stdout, _command(args), outcome=error[0], message=error[1], exit_code=code)
    observe = sys.modules.get("migrator.cli.observe")  # loaded by the commands that run the engine, only
    if observe is not None:
        with contextlib.suppress(Exception, KeyboardInterrupt):  # a Ctrl-C here gives up the flush, not the code
            observe.close(code, error)  # --metrics-file, the spans
    from migrator.cli.environment import quiet_exit

    quiet_exit()
    sys.exit(code)


def _command(args: list[str]) -> str:
    """The command an error's NDJSON names: its first word, and the next for a sub-app's (`fleet plan`)."""
    words = [a for a in args if not a.startswith("-")]
    return " ".join(words[:2] if words[:1] in (["fleet"], ["sim"]) else words[:1])


if __name__ == "__main__":
    main()
