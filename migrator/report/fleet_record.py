"""A fleet's change record: one row per store, from each store's own change record, on one common clock.

The fleet's outcome, exit code, stop and gates are the fleet's summary as `fleet status` shows it
(fleet/outcome.py, from DBOS's record of the fleet); each store's row is its own run's change record
(record.py, from its journal run `FLEET_ID.STORE`), so a store reads the same here as in `report RUN_ID`.
Nothing is measured again.

The common clock starts at the fleet's first disconnect: a mark at real instant `at` sits at
`(at - origin) * time_scale`, the conversion each store's window makes from its own disconnect. The
timeline (fleet_timeline.py) draws every store's window on it, with the gates between waves.

Close code of the fleet: `successful` when it completed and no store had an issue, `successful_with_issues`
when it completed and some store's record has one, `unsuccessful` for every other ended fleet (stopped,
partial, rolled back, stuck, blocked...); none while it is running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from migrator import __version__
from migrator.report.record import CLOSE_LABELS, SUCCESSFUL, UNSUCCESSFUL, WITH_ISSUES
from migrator.report.window import offset

SCHEMA = 1
TYPE = "fleet_change_record"
NOT_STARTED = "not_started"


def from_parts(summary: Mapping[str, Any], request: Mapping[str, Any], runs: Mapping[str, dict[str, Any]], *,
               now: float, finished: bool, executor_id: str | None = None) -> dict[str, Any]:
    """The fleet's record. `summary`: the fleet's summary (fleet/outcome.py); `request`: its FleetRequest as a
    dict (the fleet file, the waves it ran by); `runs`: each started store's change record by run id."""
    scale = float(request.get("time_scale") or 1.0)
    rows = [_row(dict(store), runs.get(str(store.get("run_id")))) for store in summary.get("keystores") or []]
    origin = min((r["disconnected_at"] for r in rows if r["disconnected_at"] is not None), default=None)
    for row in rows:
        row["timeline"] = _on_common_clock(row.pop("_window"), origin, scale)
    gates = [_gate(dict(g), origin, scale) for g in summary.get("gates") or []]
    outcome = str(summary.get("outcome"))
    return {
        "type": TYPE, "schema": SCHEMA, "xksmigrate": __version__, "generated_at": now,
        "fleet": {"id": summary.get("fleet_id"), "name": _fleet_name(request), "path": request.get("path"),
                  "text": request.get("text"), "dry_run": bool(request.get("dry_run")),
                  "endpoint_url": request.get("endpoint_url"), "time_scale": scale,
                  "clock": "simulated" if scale != 1.0 else "real", "finished": finished,
                  "executor_id": executor_id, "outcome": outcome, "exit_code": summary.get("exit_code"),
                  "message": summary.get("message"), "stopped_by": summary.get("stopped_by"),
                  "stop_reason": summary.get("stop_reason"),
                  "longest_window_seconds": summary.get("longest_window_seconds"),
                  "waves": [dict(w) for w in request.get("waves") or []]},
        "close": close_code(outcome, rows, finished=finished, message=str(summary.get("message") or "")),
        "clock": {"origin_at": origin, "time_scale": scale, "clock": "simulated" if scale != 1.0 else "real"},
        "stores": rows,
        "gates": gates,
        "runs": dict(runs),
    }


def _fleet_name(request: Mapping[str, Any]) -> str | None:
    import tomllib

    try:
        fleet = tomllib.loads(str(request.get("text") or "")).get("fleet") or {}
    except tomllib.TOMLDecodeError:
        return None
    name = fleet.get("name") if isinstance(fleet, dict) else None
    return str(name) if name else None


def _row(store: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """One store of the fleet: the fleet's word on it (wave, outcome) and its run's record (window, calls)."""
    ks: dict[str, Any] = (record or {}).get("keystores", [{}])[0] if record else {}
    calls = ks.get("calls") or []
    trips = ks.get("round_trips") or []
    close = (record or {}).get("close") or {}
    return {
        "ref": store.get("ref"), "account_id": store.get("account_id"), "region": store.get("region"),
        "wave": store.get("wave"), "run_id": store.get("run_id"), "outcome": store.get("outcome"),
        "exit_code": store.get("exit_code"), "message": store.get("message") or "",
        "run_outcome": (record or {}).get("run", {}).get("outcome"),
        "close": {"code": close.get("code"), "label": close.get("label"), "reasons": list(close.get("reasons") or [])},
        "window_seconds": ks.get("window_seconds", store.get("window_seconds")),
        "budget_seconds": ks.get("budget_seconds", store.get("budget_seconds")),
        "over_budget_seconds": ks.get("over_budget_seconds"), "over_budget_reason": ks.get("over_budget_reason"),
        "floor_seconds": ks.get("floor_seconds"),
        "disconnected_at": ks.get("disconnected_at"), "reconnected_at": ks.get("reconnected_at"),
        "verified_at": ks.get("verified_at"),
        "calls": len(calls), "calls_failed": sum(1 for c in calls if c.get("outcome") not in ("ok", None)),
        "round_trips": len(trips), "round_trips_ok": sum(1 for r in trips if r.get("outcome") == "ok"),
        "request_ids": [c["request_id"] for c in calls if c.get("request_id")],
        "_window": ks.get("window"),
    }


def _on_common_clock(window: dict[str, Any] | None, origin: float | None, scale: float) -> dict[str, Any] | None:
    """A store's window moved onto the fleet's clock: its marks at their journal instants from the fleet's origin."""
    if window is None or origin is None:
        return None
    shift = offset(float(window["origin_at"]), origin, scale)

    def moved(t: object) -> float | None:
        return round(float(t) + shift, 3) if isinstance(t, int | float) else None

    return {"from_t": shift, "end_t": moved(window["end_t"]), "open": window["open"],
            "budget_end_t": moved(window.get("budget_seconds")), "floor_end_t": moved(window.get("floor_seconds")),
            "spans": [{"state": s["state"], "from_t": moved(s["from_t"]), "to_t": moved(s["to_t"])}
                      for s in window["spans"]],
            "gaps": [{"from_at": g["from_at"], "to_at": g["to_at"], "from_t": offset(g["from_at"], origin, scale),
                      "to_t": offset(g["to_at"], origin, scale)} for g in window["gaps"]],
            "marks": [{**mk, "t": offset(float(mk["at"]), origin, scale)} for mk in window["marks"]]}


def _gate(gate: dict[str, Any], origin: float | None, scale: float) -> dict[str, Any]:
    for key in ("started_at", "ended_at"):
        at = gate.get(key)
        gate[key.replace("_at", "_t")] = offset(float(at), origin, scale) if isinstance(at, int | float) and \
            origin is not None else None
    return gate


def close_code(outcome: str, rows: Sequence[dict[str, Any]], *, finished: bool, message: str) -> dict[str, Any]:
    """{code, label, reasons}: the fleet's close code; each store's issues named after the store."""
    issues = [f"{r['ref']}: {reason}" for r in rows for reason in r["close"]["reasons"] if reason]
    if not finished or outcome == "running":
        return {"code": None, "label": "Open: the fleet has not ended", "reasons": [message, *issues]}
    if outcome == "completed":
        code = WITH_ISSUES if issues else SUCCESSFUL
        return {"code": code, "label": CLOSE_LABELS[code], "reasons": issues}
    return {"code": UNSUCCESSFUL, "label": CLOSE_LABELS[UNSUCCESSFUL], "reasons": [f"{outcome}: {message}", *issues]}
