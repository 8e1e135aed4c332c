"""`--metrics-file PATH`: a run's Prometheus textfile metrics, from the summary the run printed (the same numbers).

Written once the command is over into a private registry, atomically (`prometheus_client.write_to_textfile`: a
temporary file beside PATH, then a rename), so node_exporter's textfile collector never reads half a file; PATH
should end in `.prom` for it. Labels are few and bounded: the plan, and per key store its id, account and Region,
plus the outcome of an enum gauge and the operation of the request counts. Never a run id: every run would be a
new series (the journal and `history` say which run ended at `xksmigrate_run_end_timestamp_seconds`). The last
success of each store outlives the runs that did not succeed: it is carried over from the file being replaced.

The names (RUNBOOK.md#metrics-and-traces):

    xksmigrate_run_info{plan,command,dry_run,simulated,version}              1
    xksmigrate_run_outcome{plan,xksmigrate_run_outcome}                      1 for the outcome, 0 for the others
    xksmigrate_run_exit_code{plan}                                           the command's exit code
    xksmigrate_run_end_timestamp_seconds{plan}                               when the command ended (epoch)
    xksmigrate_run_{budget,window,over_budget}_seconds{plan}                 the summary's run-level budget facts
    xksmigrate_store_outcome{plan,keystore,account_id,region,xksmigrate_store_outcome}
    xksmigrate_store_{budget,window,over_budget,budget_floor}_seconds{plan,keystore,account_id,region}
    xksmigrate_store_api_calls{plan,keystore,account_id,region,operation}    AWS requests the run made for the store
    xksmigrate_store_last_success_timestamp_seconds{plan,keystore,account_id,region}   its last verified completion

Windows and budgets are the summary's seconds: simulated ones in a rehearsal (`simulated="true"`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Enum, Gauge, Info, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from migrator import __version__
from migrator.engine.results import SEVERITY

STORE_LABELS = ("plan", "keystore", "account_id", "region")
LAST_SUCCESS = "xksmigrate_store_last_success_timestamp_seconds"
# Every outcome a run or a store can end with (engine/results.py), plus the CLI's: `locked` (exit 6) and `error`
# (the command failed before its run had a summary: a bad plan, a refused resume, an internal error).
OUTCOMES = (*SEVERITY, "locked", "error")


@dataclass
class StoreFacts:
    """One key store's line of the summary, with what the summary does not say: the floor and the success time."""

    keystore: str
    account_id: str
    region: str
    outcome: str
    window_seconds: float | None
    budget_seconds: float | None
    over_budget_seconds: float
    floor_seconds: float | None
    api_calls: dict[str, int]
    verified_at: float | None  # epoch seconds of the verification that completed it (None: not completed)

    def labels(self, plan: str) -> dict[str, str]:
        return {"plan": plan, "keystore": self.keystore, "account_id": self.account_id, "region": self.region}


@dataclass
class RunFacts:
    """What the metrics file says about one command: the run's summary, or the error it ended with."""

    plan: str
    command: str
    outcome: str
    exit_code: int
    ended_at: float
    dry_run: bool = False
    simulated: bool = False
    budget_seconds: float | None = None
    window_seconds: float | None = None
    over_budget_seconds: float = 0.0
    stores: list[StoreFacts] = field(default_factory=list)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def run_facts(summary: Mapping[str, Any], *, plan: str, command: str, dry_run: bool, ended_at: float,
              floors: Mapping[str, float | None], verified: Mapping[str, float | None],
              default_account: str = "") -> RunFacts:
    """The facts of the summary `finish` handed the renderer; `floors` and `verified` by store (id, else ref)."""
    stores = []
    for ks in summary.get("keystores") or []:
        name = str(ks.get("id") or ks.get("ref") or "")
        stores.append(StoreFacts(
            keystore=name, account_id=str(ks.get("account_id") or default_account or ""),
            region=str(ks.get("region") or ""), outcome=str(ks.get("outcome") or ks.get("state") or ""),
            window_seconds=_number(ks.get("window_seconds")), budget_seconds=_number(ks.get("budget_seconds")),
            over_budget_seconds=_number(ks.get("over_budget_seconds")) or 0.0, floor_seconds=floors.get(name),
            api_calls={str(k): int(v) for k, v in (ks.get("api_calls") or {}).items()},
            verified_at=verified.get(name) if ks.get("outcome") == "completed" else None))
    return RunFacts(plan=plan, command=command, outcome=str(summary.get("outcome") or ""),
                    exit_code=int(summary.get("exit_code") or 0), ended_at=ended_at, dry_run=dry_run,
                    simulated=bool(summary.get("simulated")), budget_seconds=_number(summary.get("budget_seconds")),
                    window_seconds=_number(summary.get("window_seconds")),
                    over_budget_seconds=_number(summary.get("over_budget_seconds")) or 0.0, stores=stores)


def _states(known: Iterable[str], actual: Iterable[str]) -> list[str]:
    states = list(known)
    states += sorted({a for a in actual if a and a not in states})
    return states


def registry_for(facts: RunFacts, earlier: Mapping[tuple[str, ...], float] | None = None) -> CollectorRegistry:
    """A private registry holding the metrics of `facts`; `earlier`: last successes already on file, by labels."""
    registry = CollectorRegistry(auto_describe=True)
    plan = facts.plan

    def run_gauge(name: str, text: str) -> Gauge:
        return Gauge(name, text, ["plan"], registry=registry)

    Info("xksmigrate_run", "The last xksmigrate command that wrote this file", ["plan"], registry=registry).labels(
        plan=plan).info({"command": facts.command, "dry_run": str(facts.dry_run).lower(),
                         "simulated": str(facts.simulated).lower(), "version": __version__})
    Enum("xksmigrate_run_outcome", "The run's outcome (1 for it, 0 for the others)", ["plan"], registry=registry,
         states=_states(OUTCOMES, [facts.outcome])).labels(plan=plan).state(facts.outcome)
    run_gauge("xksmigrate_run_exit_code", "The command's exit code (README: exit codes)").labels(plan).set(
        facts.exit_code)
    run_gauge("xksmigrate_run_end_timestamp_seconds", "When the command ended, in epoch seconds").labels(plan).set(
        facts.ended_at)
    for name, value, text in (
            ("budget", facts.budget_seconds, "The downtime budget in force (plan plus extensions)"),
            ("window", facts.window_seconds, "The longest disconnected window of the run's stores"),
            ("over_budget", facts.over_budget_seconds, "How far the longest window went past the budget")):
        gauge = run_gauge(f"xksmigrate_run_{name}_seconds", text + "; simulated seconds in a rehearsal")
        if value is not None:
            gauge.labels(plan).set(value)
    _store_metrics(registry, facts, earlier or {})
    return registry


def _store_metrics(registry: CollectorRegistry, facts: RunFacts, earlier: Mapping[tuple[str, ...], float]) -> None:
    def store_gauge(name: str, text: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, text, [*STORE_LABELS, *extra], registry=registry)

    outcome = Enum("xksmigrate_store_outcome", "The key store's outcome in the run (1 for it, 0 for the others)",
                   STORE_LABELS, registry=registry, states=_states(OUTCOMES, [s.outcome for s in facts.stores]))
    seconds = {name: store_gauge(f"xksmigrate_store_{name}_seconds", text + "; simulated seconds in a rehearsal")
               for name, text in (
                   ("window", "How long the key store was disconnected"),
                   ("budget", "The downtime budget the key store ran with"),
                   ("over_budget", "How far its window went past the budget"),
                   ("budget_floor", "The smallest budget that can succeed: a disconnect, a connect and a poll"))}
    calls = store_gauge("xksmigrate_store_api_calls", "AWS requests the run made for the key store",
                        ("operation",))
    success = store_gauge(LAST_SUCCESS, "When the key store last completed a migration, verified (epoch seconds)")
    last = dict(earlier)
    for store in facts.stores:
        labels = store.labels(facts.plan)
        outcome.labels(**labels).state(store.outcome)
        for name, value in (("window", store.window_seconds), ("budget", store.budget_seconds),
                            ("over_budget", store.over_budget_seconds), ("budget_floor", store.floor_seconds)):
            if value is not None:
                seconds[name].labels(**labels).set(value)
        for operation, count in sorted(store.api_calls.items()):
            calls.labels(**labels, operation=operation).set(count)
        if store.verified_at is not None:
            key = tuple(labels[k] for k in STORE_LABELS)
            last[key] = max(store.verified_at, last.get(key, 0.0))
    for key, value in sorted(last.items()):
        success.labels(*key).set(value)


def earlier_successes(path: str) -> dict[tuple[str, ...], float]:
    """The last-success samples of the file at `path` (none if it is missing or unreadable), by their labels."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return {}
    found: dict[tuple[str, ...], float] = {}
    with contextlib.suppress(Exception):  # a file someone else wrote: keep what parsed
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and all(k in sample.labels for k in STORE_LABELS):
                    key = tuple(sample.labels[k] for k in STORE_LABELS)
                    found[key] = max(float(sample.value), found.get(key, 0.0))
    return found


def write(path: str, facts: RunFacts) -> None:
    """Replace the file at `path` with the metrics of `facts` (atomically), keeping earlier last successes."""
    registry = registry_for(facts, earlier_successes(path))
    write_to_textfile(os.fspath(path), registry)
