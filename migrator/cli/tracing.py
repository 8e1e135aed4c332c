"""OpenTelemetry traces of a run, when the standard OTEL_* variables ask for them (`observe.wanted`).

Imported only then (`observe.start`): without those variables no OpenTelemetry module is loaded at all.

The spans:
- `xksmigrate <command>`: the run. Its parent is $TRACEPARENT (and $TRACESTATE) when given, the W3C trace
  context in environment variables, so a pipeline's trace contains the migration it started.
- `keystore <id>` under it, one per key store, from its first event to its terminal state.
- `state <name>` under that, one per state the store is in, from the transition into it to the next one.
- one span per AWS request (opentelemetry-instrumentation-botocore), under the state its store is in. The
  engine makes its requests in worker threads (a call's time bound, the verification), where no span is
  current, so the instrumentation's tracer falls back to the span the last engine event named.
Journal notes, hooks, acceptances, failed requests and findings that did not pass are span events. A hook gets
the TRACEPARENT of the span its event belongs to (engine/hooks.py `Hooks.context`).

No secret reaches a span: ours carry what the journal holds, which never holds one (the events' scalar details;
never a call's parameters); the botocore instrumentation records the service, operation, Region, endpoint host,
request id, retries and HTTP status, never a request's parameters or a response's body (UpdateCustomKeyStore's
RawSecretAccessKey, GetSecretValue's SecretString): it has no extension for KMS, STS, EC2, ELB or IAM, and the
Secrets Manager one records only the secret's ARN. Exceptions are not recorded on its spans (the status says
what failed). tests/engine/test_metrics_traces.py checks it with a canary secret.

Exporters: OTEL_TRACES_EXPORTER (`otlp`, the default when only an OTLP endpoint is given, over HTTP/protobuf;
`console`, JSON on stderr so --json's stdout stays NDJSON; `none`; or any installed exporter entry point),
configured by the exporters' own OTEL_EXPORTER_OTLP_* variables; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
name the service (default `xksmigrate`). OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=botocore leaves the AWS requests out.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from migrator import __version__
from migrator.engine.machine import TERMINAL

SCOPE = "xksmigrate"
FAILED_STATES = ("rolled_back", "stuck")  # a store span ends in error there (blocked: nothing changed)
NOTED = ("note", "hook", "acceptance")  # always span events; findings and results only when they did not pass


class TracingError(Exception):
    """The OTEL_* variables name something this installation cannot do."""


def exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names (default `otlp`)."""
    names = [n.strip().lower() for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    found: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":  # stderr: stdout is the command's own (NDJSON with --json)
            found.append(ConsoleSpanExporter(out=sys.stderr))
            continue
        if name == "otlp":
            protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                        or "http/protobuf")
            name = "otlp_proto_grpc" if protocol.strip().lower() == "grpc" else "otlp_proto_http"
        points = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not points:
            raise TracingError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed")
        found.append(points[0].load()())
    return found


def _resource() -> Resource:
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "xksmigrate"}))
    return resource


def scalars(detail: object, prefix: str = "xksmigrate.") -> dict[str, Any]:
    """The top-level scalar values of an event's detail, as span attributes (nested values are left out)."""
    if not isinstance(detail, dict):
        return {}
    return {prefix + str(k): v for k, v in detail.items() if isinstance(v, str | bool | int | float)}


class _FallbackTracer(trace.Tracer):
    """The botocore instrumentation's tracer: a request made where no span is current gets `parent()`'s."""

    def __init__(self, tracer: trace.Tracer, parent: Callable[[], Context]):
        self._tracer, self._parent = tracer, parent

    def _context(self, context: Context | None) -> Context | None:
        if context is None and not trace.get_current_span().get_span_context().is_valid:
            return self._parent()
        return context

    def start_span(self, name: str, context: Context | None = None, *args: Any, **kwargs: Any) -> Span:
        return self._tracer.start_span(name, self._context(context), *args, **kwargs)

    def start_as_current_span(self, name: str, context: Context | None = None, *args: Any,  # type: ignore[override]
                              **kwargs: Any) -> Any:
        kwargs.setdefault("record_exception", False)  # no exception text or stack on a request's span
        return self._tracer.start_as_current_span(name, self._context(context), *args, **kwargs)


class _FallbackProvider(trace.TracerProvider):
    def __init__(self, provider: trace.TracerProvider, parent: Callable[[], Context]):
        self._provider, self._parent = provider, parent

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _FallbackTracer(self._provider.get_tracer(*args, **kwargs), self._parent)


@dataclass
class _Store:
    span: Span
    state: Span | None = None
    keystore: str = ""
    ended: bool = False


class RunTracer:
    """The spans of one command: built from the engine's events (an Observer's view) and its summary."""

    def __init__(self, command: str, environ: Mapping[str, str]):
        self._provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
        for exporter in exporters(environ):
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer(SCOPE, __version__)
        carrier = {k.lower(): environ[k] for k in ("TRACEPARENT", "TRACESTATE") if environ.get(k)}
        parent = TraceContextTextMapPropagator().extract(carrier)
        self.joined = trace.get_current_span(parent).get_span_context().is_valid
        self.ignored_traceparent = bool(carrier.get("traceparent")) and not self.joined
        self.run_span = self._tracer.start_span(f"xksmigrate {command}", context=parent,
                                                attributes={"xksmigrate.command": command})
        self._lock = threading.RLock()
        self._stores: dict[int, _Store] = {}
        self._current: Span = self.run_span
        self._run_id = ""
        self._closed = False
        disabled = {n.strip() for n in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
        if "botocore" not in disabled:
            from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

            BotocoreInstrumentor().instrument(tracer_provider=_FallbackProvider(self._provider, self._parent))

    # -- what the CLI tells it -------------------------------------------------------------------
    def describe(self, **attributes: str | bool | int | float) -> None:
        """Attributes of the run span (plan, dry run), once they are known."""
        self.run_span.set_attributes({f"xksmigrate.{k}": v for k, v in attributes.items()})

    def on_event(self, event: Mapping[str, Any]) -> None:
        """One engine event (the renderer's): moves, notes and the span AWS requests now belong to."""
        if event.get("type") != "event":
            return
        with self._lock:
            if self._closed:
                return
            run_id = event.get("run_id")
            if run_id and not self._run_id:
                self._run_id = str(run_id)
                self.run_span.set_attribute("xksmigrate.run_id", self._run_id)
            mid = event.get("migration")
            if not isinstance(mid, int):
                self._note(self.run_span, event)
                return
            store = self._stores.get(mid)
            if event.get("kind") == "transition":
                store = self._store(mid)  # a new span for a store moving again after a terminal state
                self._move(store, event)
            elif store is None or store.ended:  # before its first move, or after its last (the `completed` hook)
                store = self._store(mid) if store is None else store
                self._note(self.run_span if store.ended else store.span, event)
            else:
                self._note(store.state or store.span, event)
            self._current = self.run_span if store.ended else (store.state or store.span)

    def on_summary(self, summary: Mapping[str, Any]) -> None:
        """The run's summary: its outcome on the run span (an error status unless it exited 0)."""
        with self._lock:
            attributes = {k: summary.get(k) for k in ("run_id", "outcome", "exit_code", "window_seconds",
                                                      "budget_seconds", "over_budget_seconds", "simulated")}
            self.run_span.set_attributes(scalars(attributes))
            if summary.get("exit_code") not in (0, None):
                self.run_span.set_status(Status(StatusCode.ERROR, str(summary.get("outcome") or "")))
            self._end_stores("the run ended")

    def hook_environment(self) -> dict[str, str]:
        """TRACEPARENT (and TRACESTATE) of the span a hook runs in, for its environment."""
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=self._parent())
        return {k.upper(): v for k, v in carrier.items()}

    def close(self, exit_code: int, error: str | None = None) -> None:
        """End every span (a command that failed before its summary: the error on the run span) and flush."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._end_stores("the command ended")
            self.run_span.set_attribute("xksmigrate.exit_code", exit_code)
            if error is not None:
                self.run_span.set_status(Status(StatusCode.ERROR, error))
            self.run_span.end()
            self._current = self.run_span
        self._provider.shutdown()

    # -- spans -----------------------------------------------------------------------------------
    def _parent(self) -> Context:
        return trace.set_span_in_context(self._current)

    def _store(self, mid: int) -> _Store:
        """The open span of store `mid`, started now if it has none (or its last one ended)."""
        known = self._stores.get(mid)
        if known is not None and not known.ended:
            return known
        span = self._tracer.start_span("keystore", context=trace.set_span_in_context(self.run_span),
                                       attributes={"xksmigrate.migration": mid})
        store = self._stores[mid] = _Store(span)
        if known is not None and known.keystore:
            self._name(store, known.keystore)
        return store

    def _name(self, store: _Store, keystore: str) -> None:
        store.keystore = keystore
        store.span.update_name(f"keystore {keystore}")
        store.span.set_attribute("xksmigrate.keystore", keystore)

    def _move(self, store: _Store, event: Mapping[str, Any]) -> None:
        detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
        snapshot_id = (detail.get("snapshot") or {}).get("id") if isinstance(detail.get("snapshot"), dict) else None
        if snapshot_id and not store.keystore:
            self._name(store, str(snapshot_id))
        if store.state is not None:
            store.state.end()
            store.state = None
        to_state = str(event.get("to_state") or "")
        store.span.set_attribute("xksmigrate.state", to_state)
        if to_state in TERMINAL:
            store.span.set_attributes(scalars(detail))
            if to_state in FAILED_STATES:
                store.span.set_status(Status(StatusCode.ERROR, str(detail.get("reason") or to_state)))
            store.span.end()
            store.ended = True
            return
        store.state = self._tracer.start_span(
            f"state {to_state}", context=trace.set_span_in_context(store.span),
            attributes={"xksmigrate.state": to_state, "xksmigrate.from_state": str(event.get("from_state") or ""),
                        **scalars(detail)})

    def _note(self, span: Span, event: Mapping[str, Any]) -> None:
        kind, outcome = str(event.get("kind") or ""), event.get("outcome")
        if not (kind in NOTED or (kind == "finding" and outcome != "pass") or (kind == "result" and outcome != "ok")):
            return
        attributes = scalars({"operation": event.get("operation"), "outcome": outcome})
        span.add_event(kind, {**attributes, **scalars(event.get("detail"))})

    def _end_stores(self, why: str) -> None:
        for store in self._stores.values():
            if store.ended:
                continue
            if store.state is not None:
                store.state.end()
                store.state = None
            store.span.set_attribute("xksmigrate.ended", why)
            store.span.end()
            store.ended = True
        self._current = self.run_span
