"""A run's change record, from its journal alone: the dict behind the JSON, the page and the Markdown.

Nothing is measured again here. The outcome, the windows, the budget and any overrun with its reason are
the run's summary as `status` rebuilds it (engine/journal_summary.py, engine/budget.py); the acceptances and
operator controls are read as `status` reads them; the floor is the one the run's own preflight journaled
(`engine.budget_floor`: a disconnect and a connect at AWS's latency, plus one poll). Every call, round trip,
hook, finding and interruption is a journal event, kept with its `seq` and its real instant `at`.

The record is versioned like the NDJSON output: `"type": "change_record"`, `"schema": SCHEMA`, and the
xksmigrate version. A field is only ever added within a schema; a change of meaning gets a new number.

Close codes (ServiceNow's), from the run's outcome (RUNBOOK.md#change-record):
- `successful`: `completed` with no issue, `no_changes`, and an operator rollback run that ended `rolled_back`
  (undoing the other run was its change) with no issue;
- `successful_with_issues`: the same, with an issue: a window over its budget, an unverified check accepted,
  a budget extended, a runner interrupted or taken over, or a verify round trip that failed while another
  proved the store;
- `unsuccessful`: `rolled_back` (the change did not happen), `stuck`, `partial`, `blocked`, `locked`, `failed`;
- none (`null`) while the run has not ended: `running` or `interrupted` (resumable); a record is made again
  once it ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from migrator import __version__
from migrator.engine import budget
from migrator.engine.controls import EXTEND, controls_of
from migrator.engine.journal_summary import plan_budget, run_scale, summarize
from migrator.engine.run_context import accepted_unverified
from migrator.engine.whole_run import run_links
from migrator.report import window

if TYPE_CHECKING:
    from migrator.journal.models import EventView, MigrationView, RunView
    from migrator.journal.repository import Journal

SCHEMA = 1
TYPE = "change_record"
SUCCESSFUL, WITH_ISSUES, UNSUCCESSFUL = "successful", "successful_with_issues", "unsuccessful"
CLOSE_LABELS = {SUCCESSFUL: "Successful", WITH_ISSUES: "Successful with issues", UNSUCCESSFUL: "Unsuccessful"}
OPEN_OUTCOMES = ("running", "interrupted")
FLOOR_CHECK = "engine.budget_floor"
_FLOOR_TEXT = re.compile(r"floor of ([0-9]+(?:\.[0-9]+)?) s")


def build(journal: Journal, run_id: str, *, now: float | None = None, runner_gone: bool = False,
          exit_code: int | None = None) -> dict[str, Any]:
    """The change record of RUN_ID; `runner_gone`: the journal says running but no runner is alive (a gap to now)."""
    run = journal.get_run(run_id)
    events = journal.events(run_id)
    return from_journal(run, events, links=run_links(journal, run), now=time.time() if now is None else now,
                        runner_gone=runner_gone, exit_code=exit_code)


def from_journal(run: RunView, events: Sequence[EventView], *, links: dict[str, str | None], now: float,
                 runner_gone: bool = False, exit_code: int | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = summarize(run, events, now=now, runner_gone=runner_gone, exit_code=exit_code).summary()
    scale = run_scale(run)
    accepted = accepted_unverified(events)
    controls = [c.to_dict() for c in controls_of(events)]
    stores = [_store(m, ks, events, scale=scale, runner_gone=runner_gone)
              for m, ks in zip(run.migrations, summary["keystores"], strict=True)]
    interruptions = [{"seq": e.seq, "at": e.at, "migration": e.migration_id, "label": label,
                      "message": str((e.detail or {}).get("message") or "")}
                     for e in events if (label := window.interruption_label(e)) is not None]
    hooks = [{"seq": e.seq, "at": e.at, "migration": e.migration_id, "event": e.operation,
              "hook": (e.detail or {}).get("hook"), "exit_code": (e.detail or {}).get("exit_code"),
              "outcome": e.outcome, "output": str((e.detail or {}).get("output") or "")}
             for e in events if e.kind == "hook"]
    rollback_run = bool(links.get("rolls_back"))
    close = close_code(str(summary["outcome"]), rollback_run=rollback_run,
                       issues=issues(stores, accepted, controls, interruptions),
                       message=str(summary.get("message") or ""))
    return {
        "type": TYPE, "schema": SCHEMA, "xksmigrate": __version__, "generated_at": now,
        "run": {"id": run.id, "outcome": summary["outcome"], "exit_code": summary["exit_code"],
                "message": summary["message"], "dry_run": run.dry_run, "region": run.region,
                "account_id": run.account_id, "who": run.who, "host": run.host, "pid": run.pid,
                "started_at": run.started_at, "finished_at": run.finished_at, "time_scale": scale,
                "clock": "simulated" if scale != 1.0 else "real", "runner_gone": runner_gone,
                "rolls_back": links.get("rolls_back"), "rolled_back_by": links.get("rolled_back_by"),
                "options": dict(run.options or {})},
        "plan": {"name": run.plan_name, "path": run.plan_path, "fingerprint": run.plan_fingerprint,
                 "max_disconnected_seconds": plan_budget(run), "text": run.plan_text},
        "close": close,
        "budget": {k: summary.get(k) for k in budget.KEYS},
        "keystores": stores,
        "accepted_unverified": accepted,
        "operator_controls": controls,
        "interruptions": interruptions,
        "hooks": hooks,
        "api_calls": summary.get("api_calls") or {},
    }


def floor_seconds(events: Sequence[EventView], mid: int) -> float | None:
    """The budget floor the run's preflight journaled for store `mid` (its latest `engine.budget_floor` finding)."""
    for e in reversed(events):
        detail = e.detail or {}
        if e.kind == "finding" and e.migration_id == mid and detail.get("check") == FLOOR_CHECK:
            value = detail.get("floor_seconds")
            if isinstance(value, int | float):
                return float(value)
            found = _FLOOR_TEXT.search(str(detail.get("message") or ""))
            return float(found.group(1)) if found else None
    return None


def _store(m: MigrationView, ks: dict[str, Any], events: Sequence[EventView], *, scale: float,
           runner_gone: bool) -> dict[str, Any]:
    mine = [e for e in events if e.migration_id == m.id]
    floor = floor_seconds(events, m.id)
    facts = budget.BudgetFacts(ks.get("budget_seconds"), ks.get("window_seconds"),
                               float(ks.get("over_budget_seconds") or 0.0), ks.get("over_budget_reason"))
    span = window.store_window(m, events, facts, scale=scale, floor=floor, runner_gone=runner_gone)
    origin = m.disconnected_at

    def t(at: float) -> float | None:
        return window.offset(at, origin, scale) if origin is not None else None

    phase = {e.seq: "forward" for e in mine}
    rolling = next((e.seq for e in mine if e.kind == "transition" and e.to_state == "rolling_back"), None)
    if rolling is not None:
        phase.update({e.seq: "rollback" for e in mine if e.seq >= rolling})
    return {**ks, "migration": m.id, "target": dict(m.target or {}), "floor_seconds": floor,
            "disconnected_at": m.disconnected_at, "reconnected_at": m.reconnected_at, "verified_at": m.verified_at,
            "findings": [{"seq": e.seq, "at": e.at, "status": e.outcome, "check": (e.detail or {}).get("check"),
                          "message": (e.detail or {}).get("message"), "remedy": (e.detail or {}).get("remedy") or ""}
                         for e in mine if e.kind == "finding"],
            "calls": _calls(mine, t, phase),
            "round_trips": [{"seq": e.seq, "at": e.at, "t": t(e.at), "phase": phase[e.seq],
                             "key_id": (e.detail or {}).get("key_id"), "outcome": e.outcome,
                             "decrypt_request_id": e.request_id,
                             "encrypt_request_id": (e.detail or {}).get("encrypt_request_id"),
                             "error": _error(e)}
                            for e in mine if e.kind == "result" and e.operation == "Encrypt+Decrypt"],
            "window": span}


def _calls(mine: Sequence[EventView], t: Any, phase: dict[int, str]) -> list[dict[str, Any]]:
    """Each AWS call the run journaled (`call`, then its `result`), with the request id AWS gave it."""
    calls: list[dict[str, Any]] = []
    open_calls: dict[str, dict[str, Any]] = {}
    for e in mine:
        if e.kind == "call":
            call = {"seq": e.seq, "at": e.at, "t": t(e.at), "phase": phase[e.seq], "operation": e.operation,
                    "parameters": (e.detail or {}).get("parameters") or {},
                    "observed": (e.detail or {}).get("observed"), "outcome": None, "request_id": None,
                    "result_seq": None, "result_at": None, "error": None}
            calls.append(call)
            open_calls[str(e.operation)] = call
        elif e.kind == "result" and str(e.operation) in open_calls:
            call = open_calls.pop(str(e.operation))
            call.update(outcome=e.outcome, request_id=e.request_id, result_seq=e.seq, result_at=e.at, error=_error(e))
    return calls


def _error(e: EventView) -> str | None:
    if e.outcome == "ok":
        return None
    detail = e.detail or {}
    parts = [str(detail[k]) for k in ("code", "message") if detail.get(k)]
    return ": ".join(parts) or None


def issues(stores: Sequence[dict[str, Any]], accepted: Sequence[dict[str, object]],
           controls: Sequence[dict[str, object]], interruptions: Sequence[dict[str, Any]]) -> list[str]:
    """What makes an ended run's change `successful with issues` rather than `successful`."""
    found: list[str] = []
    for ks in stores:
        name = ks.get("id") or ks.get("ref")
        if float(ks.get("over_budget_seconds") or 0) > 0:
            found.append(f"{name}: over budget by {budget.duration(float(ks['over_budget_seconds']))}: "
                         f"{ks.get('over_budget_reason')}")
        failed = [r for r in ks.get("round_trips") or [] if r["outcome"] != "ok"]
        if failed and ks.get("outcome") in ("completed", "rolled_back"):
            found.append(f"{name}: {len(failed)} verify round trip(s) failed while another proved the store")
    found += [f"unverified check {a['check']} accepted on {a['keystore']} by {a['accepted_by']}" for a in accepted]
    found += [f"budget extended by {budget.duration(float(str(c.get('by_seconds') or 0)))} by {c['by']}"
              for c in controls if c["kind"] == EXTEND]
    found += [f"{i['label']} at {budget.instant(float(i['at']))}" for i in interruptions]
    return found


def close_code(outcome: str, *, rollback_run: bool, issues: Sequence[str], message: str = "") -> dict[str, Any]:
    """{code, label, reasons}: the close code of a run that ended `outcome` (code None: it has not ended)."""
    if outcome in OPEN_OUTCOMES:
        return {"code": None, "label": f"Open: the run has not ended ({outcome})", "reasons": [message, *issues]}
    if outcome in ("completed", "no_changes") or (outcome == "rolled_back" and rollback_run):
        code = WITH_ISSUES if issues else SUCCESSFUL
        return {"code": code, "label": CLOSE_LABELS[code], "reasons": list(issues)}
    return {"code": UNSUCCESSFUL, "label": CLOSE_LABELS[UNSUCCESSFUL], "reasons": [f"{outcome}: {message}", *issues]}
