"""A command's metrics file (`--metrics-file`) and traces (OTEL_*), around `run`, `resume` and `rollback`.

`start` comes first in the command (tracing set up only when OTEL_* ask for it: `wanted`; the OpenTelemetry
modules are imported then and only then), `watch` puts a renderer in front of the command's own just before the
engine runs (it sees every event and the summary, exactly what the output shows), and `commands.main` calls
`close` with the exit code once the command is over, whatever happened: the metrics file is written there, from
the summary or, for a command that failed before it had one, from its error; the spans end and are flushed.
A failure of either is a warning: it never changes what the run did or its exit code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrator.cli.errors import fail, warn
from migrator.cli.output import Renderer

if TYPE_CHECKING:
    from migrator.cli.metrics import RunFacts
    from migrator.cli.tracing import RunTracer
    from migrator.engine.runner import Environment
    from migrator.plan import Plan


def wanted(environ: Mapping[str, str]) -> bool:
    """Traces are asked for: OTEL_TRACES_EXPORTER names an exporter (not `none`), or an OTLP endpoint is given;
    OTEL_SDK_DISABLED=true turns them off. OTEL_SERVICE_NAME or TRACEPARENT alone do not."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if names:
        return any(n != "none" for n in names)
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


@dataclass
class Watch:
    """One command's observation: where its metrics go, its tracer, and what the run told."""

    command: str
    metrics_file: str | None
    tracer: RunTracer | None = None
    plan_name: str = ""
    dry_run: bool = False
    facts: RunFacts | None = None
    context: dict[str, Any] = field(default_factory=dict)  # plan and env, for the facts the summary lacks


_watch: list[Watch] = []  # the command's, once start() ran (one command per process)


def start(command: str, metrics_file: str | None) -> None:
    """Before anything else of `command`: check --metrics-file's directory, start tracing if OTEL_* ask for it."""
    if metrics_file is not None:
        metrics_file = os.path.abspath(metrics_file)
        folder = os.path.dirname(metrics_file)
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise fail(f"--metrics-file: {folder} is not a directory this user can write in")
    watch = Watch(command, metrics_file)
    if wanted(os.environ):
        watch.tracer = _tracer(command)
    _watch[:] = [watch]


def _tracer(command: str) -> RunTracer | None:
    try:
        from migrator.cli.tracing import RunTracer, TracingError
    except ImportError as exc:
        warn(f"OTEL_* variables ask for traces, but OpenTelemetry is not installed ({exc.name}): "
             "pip install 'xksmigrate[otel]'; running without traces")
        return None
    try:
        tracer = RunTracer(command, os.environ)
    except TracingError as exc:
        warn(f"{exc}; running without traces")
        return None
    if tracer.ignored_traceparent:
        warn("TRACEPARENT is not a W3C traceparent (00-<trace id>-<span id>-<flags>); the run starts a new trace")
    return tracer


def watch(env: Environment, renderer: Renderer, plan: Plan) -> Renderer:
    """The renderer to hand the engine and `finish` instead of `renderer` (which it forwards everything to)."""
    if not _watch:
        return renderer
    state = _watch[0]
    state.plan_name, state.dry_run = plan.name, env.dry_run
    state.context = {"plan": plan, "env": env}
    if state.tracer is not None:
        state.tracer.describe(plan=plan.name, dry_run=env.dry_run)
        if env.hooks is not None:
            env.hooks.context = state.tracer.hook_environment
    watched = Watched(renderer, state)
    env.observer = watched
    return watched


class Watched(Renderer):
    """In front of the command's renderer: the tracer sees each event first, the metrics the summary."""

    def __init__(self, inner: Renderer, state: Watch):
        self.inner, self.state = inner, state
        self.stores, self.simulated = inner.stores, inner.simulated

    def event(self, event: dict[str, Any]) -> None:
        tracer = self.state.tracer
        if tracer is not None:
            try:
                tracer.on_event(event)
            except Exception as exc:  # never the run's problem: stop tracing, say so once
                self.state.tracer = None
                warn(f"tracing stopped: {type(exc).__name__}: {exc}")
        self.inner.event(event)

    def finish(self, summary: dict[str, Any]) -> None:
        self.inner.finish(summary)
        state = self.state
        if state.tracer is not None:
            try:
                state.tracer.on_summary(summary)
            except Exception as exc:
                warn(f"tracing: {type(exc).__name__}: {exc}")
        if state.metrics_file is not None:
            try:
                state.facts = _facts(state, summary)
            except Exception as exc:
                warn(f"--metrics-file: {type(exc).__name__}: {exc}")

    def pause(self) -> None:
        self.inner.pause()

    def unpause(self) -> None:
        self.inner.unpause()


def _facts(state: Watch, summary: Mapping[str, Any]) -> RunFacts:
    """The metrics' facts of the summary, with each store's budget floor (preflight's) and its verified time."""
    from migrator.cli import metrics

    plan: Plan = state.context["plan"]
    env: Environment = state.context["env"]
    verified, account = _journaled(env, str(summary.get("run_id") or ""))
    return metrics.run_facts(summary, plan=plan.name, command=state.command, dry_run=state.dry_run,
                             ended_at=time.time(), floors=_floors(plan, env, summary), verified=verified,
                             default_account=str(plan.account_id or env.run_facts.get("account_id") or account or ""))


def _floors(plan: Plan, env: Environment, summary: Mapping[str, Any]) -> dict[str, float | None]:
    """preflight.gate.budget_floor of each store, from the configuration the summary says it started with."""
    from migrator.aws.store_config import StoreConfig
    from migrator.preflight.gate import budget_floor, change_seconds

    by_ref = {ks.ref: ks for ks in plan.keystores}
    change, floors = change_seconds(env.clients), {}
    for ks in summary.get("keystores") or []:
        keystore = by_ref.get(str(ks.get("ref") or "")) or next(
            (k for k in plan.keystores if k.id and k.id == ks.get("id")), None)
        if keystore is None or not isinstance(ks.get("original"), dict):
            continue
        original = StoreConfig.from_dict(ks["original"])
        floors[str(ks.get("id") or ks.get("ref"))] = budget_floor(plan.for_store(keystore), keystore, original, change)
    return floors


def _journaled(env: Environment, run_id: str) -> tuple[dict[str, float | None], str | None]:
    """When each store of `run_id` was verified, and the account the run recorded (the summary says neither)."""
    try:
        run = env.journal.get_run(run_id)
    except Exception:  # no run (or no journal to read): the metrics say what the summary says
        return {}, None
    account = (run.options or {}).get("account_id") or run.account_id
    return {str(m.keystore_id or m.keystore_ref): m.verified_at for m in run.migrations}, account


def close(exit_code: int, error: tuple[str, str] | None = None) -> None:
    """The command is over (commands.main): write the metrics file and end the spans; warnings only."""
    if not _watch:
        return
    state = _watch.pop()
    if state.metrics_file is not None:
        try:
            _write_metrics(state, exit_code, error)
        except Exception as exc:
            warn(f"--metrics-file {state.metrics_file}: not written: {type(exc).__name__}: {exc}")
    if state.tracer is not None:
        try:
            state.tracer.close(exit_code, None if error is None else f"{error[0]}: {error[1]}")
        except Exception as exc:
            warn(f"tracing: spans not sent: {type(exc).__name__}: {exc}")


def _write_metrics(state: Watch, exit_code: int, error: tuple[str, str] | None) -> None:
    from migrator.cli import metrics

    facts = state.facts
    if facts is None:  # no summary: the command failed before its run had one
        outcome = error[0] if error is not None and error[0] == "interrupted" else "error"
        facts = metrics.RunFacts(plan=state.plan_name, command=state.command, outcome=outcome,
                                 exit_code=exit_code, ended_at=time.time(), dry_run=state.dry_run)
    metrics.write(str(state.metrics_file), facts)
