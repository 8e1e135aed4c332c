"""The fleet's change record from its parts (migrator/report/fleet_record.py): pure logic, no fleet run.

The rows follow the fleet's summary; each store's window moves onto the fleet's common clock (from the fleet's
first disconnect) at its journal instants; the close code is the fleet's outcome and its stores' issues."""

from __future__ import annotations

from typing import Any

from migrator.report import fleet_record

SCALE = 60.0


def store_record(run_id: str, disconnected_at: float, marks: list[tuple[int, float]], *, close: str = "successful",
                 reasons: tuple[str, ...] = ()) -> dict[str, Any]:
    window = {"origin_at": disconnected_at, "end_t": 600.0, "open": False, "budget_seconds": 900.0,
              "floor_seconds": 605.0, "gaps": [],
              "spans": [{"state": "disconnecting", "from_t": 0.0, "to_t": 300.0},
                        {"state": "connecting", "from_t": 300.0, "to_t": 600.0}],
              "marks": [{"seq": seq, "at": at, "t": round((at - disconnected_at) * SCALE, 3), "kind": "call",
                         "label": "x", "phase": "forward"} for seq, at in marks]}
    ks = {"window_seconds": 600.0, "budget_seconds": 900.0, "floor_seconds": 605.0, "disconnected_at": disconnected_at,
          "calls": [{"outcome": "ok", "request_id": f"req-{run_id}"}], "round_trips": [{"outcome": "ok"}],
          "window": window}
    return {"run": {"id": run_id, "outcome": "completed", "who": "me", "host": "h"},
            "close": {"code": close, "label": close, "reasons": list(reasons)}, "keystores": [ks]}


def summary(outcome: str, *stores: tuple[str, str | None, str]) -> dict[str, Any]:
    return {"fleet_id": "fleet-20261203-000000-abcd", "outcome": outcome, "exit_code": 0, "message": "m",
            "gates": [{"wave": 1, "ok": True, "started_at": 1010.0, "ended_at": 1011.0}],
            "keystores": [{"ref": ref, "account_id": "111122223333", "region": "us-east-1", "wave": n, "run_id": run,
                           "outcome": told} for n, (ref, run, told) in enumerate(stores, start=1)]}


def test_every_mark_moves_onto_the_fleets_clock_from_its_first_disconnect() -> None:
    runs = {"r1": store_record("r1", 1000.0, [(3, 1000.0), (9, 1005.5)]),
            "r2": store_record("r2", 1020.0, [(4, 1020.0), (7, 1030.25)])}
    record = fleet_record.from_parts(summary("completed", ("a", "r1", "completed"), ("b", "r2", "completed"),
                                             ("c", None, "not_started")),
                                     {"time_scale": SCALE, "text": '[fleet]\nname = "n"\n'}, runs, now=0.0,
                                     finished=True)
    assert record["clock"] == {"origin_at": 1000.0, "time_scale": SCALE, "clock": "simulated"}
    a, b, c = record["stores"]
    assert [m["t"] for m in a["timeline"]["marks"]] == [0.0, 330.0]
    assert [m["t"] for m in b["timeline"]["marks"]] == [1200.0, 1815.0]  # (1030.25 - 1000) * 60
    assert b["timeline"]["from_t"] == 1200.0 and b["timeline"]["end_t"] == 1800.0
    assert b["timeline"]["budget_end_t"] == 2100.0 and b["timeline"]["spans"][1] == {
        "state": "connecting", "from_t": 1500.0, "to_t": 1800.0}
    assert c["timeline"] is None and c["close"]["code"] is None and c["calls"] == 0
    assert record["gates"][0]["started_t"] == 600.0 and record["gates"][0]["ended_t"] == 660.0
    assert record["fleet"]["name"] == "n" and record["close"]["code"] == "successful"
    assert a["request_ids"] == ["req-r1"]


def test_the_close_code_is_the_fleets_outcome_and_its_stores_issues() -> None:
    calm = fleet_record.close_code("completed", [{"ref": "a", "close": {"reasons": []}}], finished=True, message="")
    assert (calm["code"], calm["reasons"]) == ("successful", [])
    issue = [{"ref": "a", "close": {"reasons": ["took over at 10:00"]}}]
    assert fleet_record.close_code("completed", issue, finished=True, message="")["reasons"] == [
        "a: took over at 10:00"]
    assert fleet_record.close_code("completed", issue, finished=True, message="")["code"] == "successful_with_issues"
    stopped = fleet_record.close_code("stopped", issue, finished=True, message="stopped by b")
    assert stopped["code"] == "unsuccessful" and stopped["reasons"][0] == "stopped: stopped by b"
    assert fleet_record.close_code("running", [], finished=False, message="")["code"] is None
    assert fleet_record.close_code("completed", [], finished=False, message="")["code"] is None
