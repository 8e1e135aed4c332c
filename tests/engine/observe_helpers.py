"""Plumbing for tests/engine/test_metrics_traces.py: a local OTLP/HTTP receiver, its spans, a metrics file read back.

The receiver is what a collector is to the tool: an HTTP server on loopback that takes the OTLP/protobuf POSTs of
the real exporter (OTEL_EXPORTER_OTLP_ENDPOINT) and keeps every body as it came, so a test can both decode the
spans and search the raw bytes for a secret.
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Never inherited by a tool process: a developer's or CI's tracing, AWS or xksmigrate settings.
DROPPED = ("AWS_", "XKSMIGRATE_", "OTEL_", "TRACEPARENT", "TRACESTATE")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A rehearsal's environment: no AWS, xksmigrate or OpenTelemetry settings inherited, its own journal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED) and "proxy" not in k.lower()}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true",
               XKSMIGRATE_REHEARSAL_STATE=f"sqlite:///{tmp_path}/rehearsal.db", HOME=str(tmp_path), COLUMNS="200")
    env.update(extra)
    return env


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: int  # 0 unset, 1 ok, 2 error


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in pairs}


@dataclass
class Collector:
    """The POSTs an OTLP/HTTP exporter sent: (path, body) pairs, bodies uncompressed."""

    url: str
    posts: list[tuple[str, bytes]] = field(default_factory=list)

    def spans(self) -> list[Span]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        found = []
        for path, body in self.posts:
            assert path == "/v1/traces", path
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope in resource.scope_spans:
                    for s in scope.spans:
                        found.append(Span(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                          _attributes(s.attributes),
                                          [(e.name, _attributes(e.attributes)) for e in s.events], s.status.code))
        return found

    def raw(self) -> bytes:
        return b"".join(body for _, body in self.posts)


@contextmanager
def otlp_collector() -> Iterator[Collector]:
    """A loopback OTLP/HTTP receiver, stopped afterwards."""
    posts: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            posts.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Collector(f"http://127.0.0.1:{server.server_address[1]}", posts)
    finally:
        server.shutdown()
        server.server_close()


def otlp_env(collector: Collector, **extra: str) -> dict[str, str]:
    """The standard variables that send a run's traces to `collector`."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "xksmigrate-test",
            "NO_PROXY": "127.0.0.1,localhost", **extra}


def read_metrics(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A textfile's samples by name: [(labels, value)], parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels`."""
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == want for k, want in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def enum_state(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> str:
    """The state an enum gauge says (the one label value set to 1)."""
    on = [lab[name] for lab, v in samples.get(name, []) if v == 1 and all(lab.get(k) == w for k, w in labels.items())]
    assert len(on) == 1, (name, labels, samples.get(name))
    return on[0]
