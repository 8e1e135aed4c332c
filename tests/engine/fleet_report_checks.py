"""The checks of a fleet's change record (issue 15), on a fleet rehearsal that really ran (test_fleet_run.py).

The record's rows are the fleet's summary and each store's own run; every mark of the one timeline is a
journal event of its store's run, at the journal's instant, on the fleet's common clock (from the fleet's first
disconnect), and the SVG places it by one linear map for the whole fleet. The page references nothing outside
itself and is not blank in headless Chromium; no secret of the rehearsal world is in any file.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from crash_helpers import CLI, tool_env
from report_helpers import assert_page_not_blank, external_references, report_files

from migrator.fleet.spec import parse_fleet
from migrator.journal.repository import Journal
from migrator.rehearsal.world.derive import world_for_plan


def check_fleet_report(report: Path, summary: dict[str, Any], work: Path, closes: dict[str, str | None]) -> None:
    fleet_id = str(summary["fleet_id"])
    files = report_files(report, fleet_id)
    assert all(path.exists() for path in files.values()), sorted(p.name for p in report.iterdir())
    record = json.loads(files["json"].read_text())
    assert (record["type"], record["schema"]) == ("fleet_change_record", 1)
    fleet = record["fleet"]
    assert (fleet["outcome"], fleet["exit_code"], fleet["stopped_by"]) == (
        summary["outcome"], summary["exit_code"], summary["stopped_by"])
    expected_close = "successful" if summary["outcome"] == "completed" else "unsuccessful"
    assert record["close"]["code"] == expected_close
    # one row per store, in the fleet's order, with the fleet's outcome and its run's close code
    rows = record["stores"]
    assert [(r["ref"], r["outcome"], r["run_id"], r["wave"]) for r in rows] == [
        (s["ref"], s["outcome"], s["run_id"], s["wave"]) for s in summary["keystores"]]
    assert {r["ref"]: r["close"]["code"] for r in rows} == closes
    state = f"sqlite:///{work}/journal.db"
    origin, scale = record["clock"]["origin_at"], record["clock"]["time_scale"]
    marks: dict[tuple[str, int], float] = {}
    with Journal.open(state, read_only=True) as journal:
        disconnects = [journal.get_run(r["run_id"]).migrations[0].disconnected_at for r in rows if r["run_id"]]
        assert origin == min(d for d in disconnects if d is not None)
        for row in rows:
            if row["timeline"] is None:
                assert row["outcome"] == "not_started" and row["run_id"] is None
                continue
            run = journal.get_run(row["run_id"])
            events = {e.seq: e for e in journal.events(row["run_id"])}
            assert row["window_seconds"] == record["runs"][row["run_id"]]["keystores"][0]["window_seconds"]
            assert row["timeline"]["from_t"] == round((run.migrations[0].disconnected_at - origin) * scale, 3)
            for mark in row["timeline"]["marks"]:
                event = events[mark["seq"]]
                assert mark["at"] == event.at
                assert mark["t"] == round((event.at - origin) * scale, 3)
                marks[(row["run_id"], mark["seq"])] = mark["t"]
            # every call that changed the store, with the request id AWS gave it
            results = [e for e in events.values() if e.kind == "result" and e.operation in (
                "DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore")]
            assert row["calls"] == len(results) and all(e.request_id in row["request_ids"] for e in results
                                                        if e.outcome == "ok")
    # the SVG: one linear map from the common clock to x, for every mark of every store
    svg = files["svg"].read_text()
    xs = {}
    for run_id, seq, body in re.findall(r'<g id="mark-(fleet-[^"]+)-(\d+)">(.*?)</g>', svg, flags=re.S):
        x = re.search(r'<use [^>]*\bx="([-0-9.]+)"', body)
        assert x is not None
        xs[(run_id, int(seq))] = float(x.group(1))
    assert set(xs) == set(marks) and len({k[0] for k in marks}) >= 2
    lo, hi = min(marks, key=marks.__getitem__), max(marks, key=marks.__getitem__)
    per_second = (xs[hi] - xs[lo]) / (marks[hi] - marks[lo])
    assert per_second > 0
    for key, t in marks.items():
        assert abs(xs[lo] + (t - marks[lo]) * per_second - xs[key]) < 0.05, (key, t)
    if record["gates"]:
        assert all(g["started_t"] is not None and g["ended_t"] >= g["started_t"] for g in record["gates"])
        assert f'id="gate-{record["gates"][0]["wave"]}"' in svg
    # the page and the Markdown
    page = files["html"].read_text()
    assert external_references(page) == [] and "<script" not in page.lower()
    assert fleet_id in page and all(r["ref"] in page for r in rows)
    assert all(rid in page for r in rows for rid in r["request_ids"])
    assert f"({files['png'].name})" in files["md"].read_text()
    # no secret of the world the fleet rehearsed on, in any byte
    spec = parse_fleet(record["fleet"]["text"], record["fleet"]["path"], Path(record["fleet"]["path"]).parent)
    world = world_for_plan(tomllib.loads(spec.whole.text))
    secrets = [s.value for cell in world.all_cells().values() for s in cell.secrets]
    assert secrets
    for path in files.values():
        data = path.read_bytes()
        assert not [s for s in secrets if s.encode() in data], f"a secret leaked into {path.name}"
    # `report FLEET_ID` writes the same record (the top-level command knows a fleet's id)
    again = subprocess.run([*CLI, "report", fleet_id, "--out", str(work / "again"), "--format", "json",
                            "--state", state], env=tool_env(), text=True, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    second = json.loads((work / "again" / f"{fleet_id}.json").read_text())
    assert second["stores"] == rows and second["close"] == record["close"]
    assert_page_not_blank(files["html"], work)

