"""Issue 15: `--metrics-file` (Prometheus textfile metrics) and OpenTelemetry traces (OTEL_*), through the CLI.

Real rehearsals, as an operator runs them (`xksmigrate run PLAN --dry-run --yes --json`, a `sim serve` world for
an operator's `rollback`), with a clean environment. The metrics are read back with prometheus_client's parser
and compared with the JSON summary the same run printed; the spans come from the real OTLP/HTTP exporter into a
receiver on loopback (observe_helpers.py). The canary secrets of test_canary.py must be in neither, and a run
without OTEL_* variables must not import OpenTelemetry at all.
"""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import PLAN as CRASH_PLAN
from crash_helpers import Sim, tool_env
from engine_helpers import REPO
from observe_helpers import clean_env, enum_state, one, otlp_collector, otlp_env, read_metrics
from test_canary import canary, run_args  # noqa: F401 - `canary` is a fixture

PLAN = REPO / "plans" / "public-to-vpc.toml"
ROLLBACK_FAULTS = REPO / "tests" / "engine" / "data" / "crash-faults-rollback.toml"
CLI = [sys.executable, "-m", "migrator.cli"]
STORE = "cks-1234567890abcdef0"
PLAN_NAME = "payments-xks-to-privatelink"  # the example plan's, and the crash plan's
PARENT_TRACE, PARENT_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _summary(stdout: str) -> dict[str, Any]:
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["type"] == "summary", stdout[-2000:]
    return summary


def _journaled_floor(stdout: str) -> float:
    """The floor the engine's gate journaled (engine.budget_floor's finding), from the run's own NDJSON."""
    for line in stdout.splitlines():
        event = json.loads(line)
        if event.get("kind") == "finding" and (event.get("detail") or {}).get("check") == "engine.budget_floor":
            return float(re.search(r"floor of ([0-9.]+) s", event["detail"]["message"]).group(1))
    raise AssertionError("no engine.budget_floor finding")


def _verified_at(db: Path, run_id: str) -> dict[str, float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {ref: at for ref, at in conn.execute(
            "SELECT coalesce(keystore_id, keystore_ref), verified_at FROM migrations WHERE run_id = ?", (run_id,))}


def assert_metrics_match(metrics: dict[str, Any], summary: dict[str, Any], command: str) -> None:
    """Every number the metrics file has for the run and its stores is the summary's."""
    plan = PLAN_NAME
    assert one(metrics, "xksmigrate_run_info", plan=plan, command=command) == 1
    assert enum_state(metrics, "xksmigrate_run_outcome", plan=plan) == summary["outcome"]
    assert one(metrics, "xksmigrate_run_exit_code", plan=plan) == summary["exit_code"]
    for name in ("budget", "window", "over_budget"):
        assert one(metrics, f"xksmigrate_run_{name}_seconds", plan=plan) == pytest.approx(summary[f"{name}_seconds"])
    for ks in summary["keystores"]:
        labels = {"plan": plan, "keystore": ks["id"], "region": ks["region"]}
        assert enum_state(metrics, "xksmigrate_store_outcome", **labels) == ks["outcome"]
        for name in ("budget", "window", "over_budget"):
            assert one(metrics, f"xksmigrate_store_{name}_seconds", **labels) == pytest.approx(ks[f"{name}_seconds"])
        calls = {lab["operation"]: v for lab, v in metrics["xksmigrate_store_api_calls"]
                 if lab["keystore"] == ks["id"]}
        assert calls == ks["api_calls"] and calls["kms:UpdateCustomKeyStore"] >= 1


# -- a completed rehearsal: metrics, spans joined to TRACEPARENT, a hook's TRACEPARENT --------------------
HOOK = '#!/bin/sh\necho "$XKSMIGRATE_EVENT ${TRACEPARENT:-none}" >> "$HOOK_LOG"\n'


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One traced rehearsal with a metrics file and hooks, shared by the tests that read it."""
    work = tmp_path_factory.mktemp("traced")
    hooks = work / "hooks"
    hooks.mkdir(mode=0o700)
    for event in ("after-disconnect", "completed"):
        (hooks / event).write_text(HOOK)
        (hooks / event).chmod(stat.S_IRWXU)
    metrics = work / "xksmigrate.prom"
    with otlp_collector() as collector:
        env = clean_env(work, **otlp_env(collector), TRACEPARENT=TRACEPARENT, HOOK_LOG=str(work / "hooks.log"))
        done = _run([*CLI, "run", str(PLAN), "--dry-run", "--yes", "--json", "--time-scale", "120",
                     "--hooks", str(hooks), "--metrics-file", str(metrics)], work, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return {"work": work, "done": done, "summary": _summary(done.stdout), "metrics": metrics,
            "spans": collector.spans(), "hooks": (work / "hooks.log").read_text().splitlines()}


@pytest.mark.slow
def test_the_metrics_of_a_completed_rehearsal_are_its_summary(traced_run):
    summary, path = traced_run["summary"], traced_run["metrics"]
    assert summary["outcome"] == "completed"
    metrics = read_metrics(path)
    assert_metrics_match(metrics, summary, "run")
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name)) == [path.name]  # renamed
    labels = {"keystore": STORE, "region": "us-east-1"}
    assert one(metrics, "xksmigrate_store_budget_floor_seconds", **labels) == _journaled_floor(
        traced_run["done"].stdout)
    verified = _verified_at(traced_run["work"] / "rehearsal.db", summary["run_id"])[STORE]
    assert one(metrics, "xksmigrate_store_last_success_timestamp_seconds", **labels) == pytest.approx(verified)
    info = metrics["xksmigrate_run_info"][0][0]
    assert (info["dry_run"], info["simulated"]) == ("true", "true")
    assert "run_id" not in str(metrics) and summary["run_id"] not in path.read_text()  # no run id label


@pytest.mark.slow
def test_the_spans_of_a_rehearsal_join_the_given_traceparent(traced_run):
    spans, summary = traced_run["spans"], traced_run["summary"]
    assert {s.trace_id for s in spans} == {PARENT_TRACE}
    by_id = {s.span_id: s for s in spans}
    assert all(s.parent_id in by_id for s in spans if s.parent_id != PARENT_SPAN)  # nothing orphaned
    (root,) = [s for s in spans if s.parent_id == PARENT_SPAN]
    assert root.name == "xksmigrate run"
    assert (root.attributes["xksmigrate.run_id"], root.attributes["xksmigrate.outcome"]) == (summary["run_id"],
                                                                                             "completed")
    (store,) = [s for s in spans if s.name == f"keystore {STORE}"]
    assert store.parent_id == root.span_id
    states = [s.name for s in spans if s.parent_id == store.span_id and s.name.startswith("state ")]
    assert {"state disconnecting", "state updating", "state connecting", "state verifying"} <= set(states)
    update = [s for s in spans if s.attributes.get("rpc.method") == "UpdateCustomKeyStore"]
    assert len(update) == 1 and by_id[update[0].parent_id].name == "state updating"
    aws = [s for s in spans if s.attributes.get("rpc.system") == "aws-api"]
    assert len(aws) == sum(summary["api_calls"].values())  # every request the summary counts, and no other
    assert all(by_id[s.parent_id].name.startswith(("state ", "xksmigrate ")) for s in aws)


@pytest.mark.slow
def test_a_hook_gets_the_traceparent_of_its_span(traced_run):
    by_id = {s.span_id: s for s in traced_run["spans"]}
    seen = dict(line.split(" ", 1) for line in traced_run["hooks"])
    assert set(seen) == {"after-disconnect", "completed"}
    for event, where in (("after-disconnect", "state disconnected"), ("completed", "xksmigrate run")):
        version, trace_id, span_id, flags = seen[event].split("-")
        assert (version, trace_id, flags) == ("00", PARENT_TRACE, "01")
        assert by_id[span_id].name == where


# -- a rolled-back rehearsal; and without OTEL_* nothing of OpenTelemetry is imported ----------------------
@pytest.mark.slow
def test_a_rolled_back_rehearsal_without_otel_imports_no_opentelemetry(tmp_path):
    metrics = tmp_path / "m.prom"
    earlier = {"keystore": STORE, "account_id": "", "region": "us-east-1", "plan": PLAN_NAME}
    other = {**earlier, "keystore": "cks-0000000000000other"}
    metrics.write_text("".join(
        "xksmigrate_store_last_success_timestamp_seconds{" + ",".join(f'{k}="{v}"' for k, v in labels.items())
        + f"}} {value}\n" for labels, value in ((earlier, 1700000000.0), (other, 1600000000.0))))
    done = _run([sys.executable, "-X", "importtime", "-m", "migrator.cli", "run", str(PLAN), "--dry-run",
                 "--yes", "--json", "--time-scale", "120", "--faults", str(ROLLBACK_FAULTS),
                 "--metrics-file", str(metrics)], tmp_path, clean_env(tmp_path))
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-3000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "prometheus_client" in imported  # imported late, after the run: importtime sees those too
    assert sorted(m for m in imported if m.split(".")[0] == "opentelemetry") == []

    summary = _summary(done.stdout)
    assert summary["outcome"] == "rolled_back"
    samples = read_metrics(metrics)
    assert_metrics_match(samples, summary, "run")
    # not a success: the store's last success stays the earlier one, and another store's is kept
    last = {lab["keystore"]: v for lab, v in samples["xksmigrate_store_last_success_timestamp_seconds"]}
    assert last == {STORE: 1700000000.0, "cks-0000000000000other": 1600000000.0}


# -- an operator's rollback of a run (a `sim serve` world), and a resume refused ----------------------------
@pytest.mark.slow
def test_an_operator_rollback_writes_its_metrics_and_keeps_the_runs_success(tmp_path):
    state, metrics = f"sqlite:///{tmp_path}/journal.db", tmp_path / "m.prom"
    with Sim(tmp_path) as sim:
        forward = _run([*CLI, "run", str(CRASH_PLAN), *sim.run_args(state), "--metrics-file", str(metrics)],
                       tmp_path, tool_env())
        assert forward.returncode == 0, forward.stderr[-3000:]
        first = read_metrics(metrics)
        success = one(first, "xksmigrate_store_last_success_timestamp_seconds", keystore=STORE)
        run_id = _summary(forward.stdout)["run_id"]
        back = _run([*CLI, "rollback", run_id, *sim.run_args(state), "--metrics-file", str(metrics)], tmp_path,
                    tool_env())
    assert back.returncode == 4, back.stdout[-2000:] + back.stderr[-3000:]  # rolled back, verified
    summary = _summary(back.stdout)
    samples = read_metrics(metrics)
    assert_metrics_match(samples, summary, "rollback")
    assert enum_state(samples, "xksmigrate_store_outcome", keystore=STORE) == "rolled_back"
    assert one(samples, "xksmigrate_store_last_success_timestamp_seconds", keystore=STORE) == success
    assert one(samples, "xksmigrate_run_info", command="rollback", dry_run="false") == 1


@pytest.mark.slow
def test_a_command_that_fails_before_its_run_still_writes_its_metrics(tmp_path):
    metrics = tmp_path / "m.prom"
    done = _run([*CLI, "resume", "run-nonexistent", "--yes", "--state", f"sqlite:///{tmp_path}/j.db",
                 "--metrics-file", str(metrics)], tmp_path, clean_env(tmp_path))
    assert done.returncode == 2, done.stderr
    samples = read_metrics(metrics)
    assert enum_state(samples, "xksmigrate_run_outcome") == "error"
    assert one(samples, "xksmigrate_run_exit_code") == 2
    refused = _run([*CLI, "run", str(PLAN), "--dry-run", "--yes", "--metrics-file", str(tmp_path / "no" / "m.prom")],
                   tmp_path, clean_env(tmp_path))
    assert refused.returncode == 2 and "--metrics-file" in refused.stderr


# -- the canary: no proxy secret in the metrics file or in any span ----------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("path", ["completed", "rolled_back"])
def test_no_secret_in_the_metrics_or_the_spans(canary, path):  # noqa: F811 - the fixture
    metrics = canary["work"] / "m.prom"
    extra = ["--json", "--metrics-file", str(metrics)]
    if path == "rolled_back":
        extra += ["--faults", str(canary["inputs"] / "connect-fails.toml")]
    with otlp_collector() as collector:
        env = clean_env(canary["work"], **otlp_env(collector, OTEL_TRACES_EXPORTER="otlp,console"),
                        TRACEPARENT=TRACEPARENT, XKS_CANARY=canary["secrets"][0], XKS_OLD=canary["secrets"][1])
        done = _run(run_args(canary, *extra), canary["work"], env, timeout=120)
    assert done.returncode == {"completed": 0, "rolled_back": 4}[path], done.stdout[-2000:] + done.stderr[-3000:]
    spans = collector.spans()
    updates = [s for s in spans if s.attributes.get("rpc.method") == "UpdateCustomKeyStore"]
    assert len(updates) == {"completed": 1, "rolled_back": 2}[path]  # the secrets went out in those requests
    assert '"name": "xksmigrate run"' in done.stderr  # the console exporter's copy, on stderr
    blobs = [collector.raw(), metrics.read_bytes(), done.stderr.encode(), repr(spans).encode()]
    for secret in canary["secrets"]:
        for piece in {secret, secret[:16], secret[14:30], secret[-16:], json.dumps(secret)[1:-1]}:
            assert all(piece.encode() not in blob for blob in blobs), "a secret leaked"


# -- the pieces, without a process ------------------------------------------------------------------------
@pytest.mark.parametrize(("environ", "on"), [
    ({}, False), ({"OTEL_SERVICE_NAME": "x", "TRACEPARENT": TRACEPARENT}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True), ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False)])
def test_which_variables_turn_tracing_on(environ, on):
    from migrator.cli.observe import wanted

    assert wanted(environ) is on


def _facts(outcome: str, verified_at: float | None, keystore: str = STORE) -> Any:
    from migrator.cli.metrics import RunFacts, StoreFacts

    store = StoreFacts(keystore=keystore, account_id="111122223333", region="eu-west-1", outcome=outcome,
                       window_seconds=12.5, budget_seconds=900.0, over_budget_seconds=0.0, floor_seconds=None,
                       api_calls={"kms:DescribeCustomKeyStores": 3}, verified_at=verified_at)
    return RunFacts(plan="p", command="run", outcome=outcome, exit_code=0 if outcome == "completed" else 4,
                    ended_at=1800000000.0, stores=[store])


def test_the_last_success_outlives_the_runs_that_did_not_succeed(tmp_path):
    from migrator.cli import metrics

    path = tmp_path / "x.prom"
    metrics.write(str(path), _facts("completed", 1750000000.0))
    metrics.write(str(path), _facts("completed", 1760000000.0, keystore="cks-other"))
    metrics.write(str(path), _facts("rolled_back", None))
    samples = read_metrics(path)
    assert {lab["keystore"]: v for lab, v in samples["xksmigrate_store_last_success_timestamp_seconds"]} == {
        STORE: 1750000000.0, "cks-other": 1760000000.0}
    assert enum_state(samples, "xksmigrate_store_outcome", keystore=STORE) == "rolled_back"
    assert "xksmigrate_store_budget_floor_seconds" not in samples  # no disconnect: no floor, no sample
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.prom"]


def test_a_hook_gets_what_the_context_adds_to_its_environment(tmp_path, monkeypatch):
    from migrator.engine.hooks import HookFacts, Hooks

    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir(mode=0o700)
    (hooks_dir / "completed").write_text('#!/bin/sh\necho "$TRACEPARENT $XKSMIGRATE_EVENT"\n')
    (hooks_dir / "completed").chmod(stat.S_IRWXU)
    monkeypatch.setenv("TRACEPARENT", "00-inherited")
    facts = HookFacts(run_id="r", plan_name="p", region="us-east-1", store_id=STORE, store_state="completed",
                      window_seconds=None, budget_seconds=900.0, dry_run=True, target_connectivity="PUBLIC_ENDPOINT",
                      target_endpoint="https://x")
    hooks, seen = Hooks(str(hooks_dir)), []
    hooks.fire("completed", facts, lambda result: seen.append(result.output.strip()))
    hooks.context = lambda: {"TRACEPARENT": TRACEPARENT}
    hooks.fire("completed", facts, lambda result: seen.append(result.output.strip()))
    assert seen == ["00-inherited completed", f"{TRACEPARENT} completed"]


def test_the_spans_follow_the_engine_events():
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from migrator.cli.tracing import RunTracer

    tracer = RunTracer("run", {"OTEL_TRACES_EXPORTER": "none", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "botocore",
                               "TRACEPARENT": TRACEPARENT})
    exported = InMemorySpanExporter()
    tracer._provider.add_span_processor(SimpleSpanProcessor(exported))

    def move(frm: str, to: str, **detail: Any) -> None:
        tracer.on_event({"type": "event", "run_id": "run-1", "migration": 7, "kind": "transition",
                         "from_state": frm, "to_state": to, "detail": detail})

    move("pending", "snapshotted", snapshot={"id": STORE})
    move("snapshotted", "disconnecting", budget_seconds=900.0)
    tracer.on_event({"type": "event", "migration": 7, "kind": "note", "detail": {"connection_state": "DISCONNECTED"}})
    hook_parent = tracer.hook_environment()["TRACEPARENT"].split("-")[2]
    move("disconnecting", "rolled_back", reason="the connect failed")
    after = tracer.hook_environment()["TRACEPARENT"].split("-")[2]
    tracer.on_event({"type": "event", "migration": 7, "kind": "hook", "outcome": "ok", "detail": {"hook": "h"}})
    tracer.on_summary({"run_id": "run-1", "outcome": "rolled_back", "exit_code": 4})
    tracer.close(4)

    spans = {s.name: s for s in exported.get_finished_spans()}
    assert set(spans) == {"xksmigrate run", f"keystore {STORE}", "state snapshotted", "state disconnecting"}
    run, store = spans["xksmigrate run"], spans[f"keystore {STORE}"]
    assert f"{run.context.trace_id:032x}" == PARENT_TRACE and f"{run.parent.span_id:016x}" == PARENT_SPAN
    assert store.parent.span_id == run.context.span_id and store.status.status_code.name == "ERROR"
    assert spans["state disconnecting"].parent.span_id == store.context.span_id
    assert [e.name for e in spans["state disconnecting"].events] == ["note"]
    assert hook_parent == f"{spans['state disconnecting'].context.span_id:016x}"
    assert after == f"{run.context.span_id:016x}" and [e.name for e in run.events] == ["hook"]
    assert (run.attributes["xksmigrate.exit_code"], run.status.status_code.name) == (4, "ERROR")
