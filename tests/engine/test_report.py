"""`xksmigrate report` and `--report DIR` (issue 15): the change record of real rehearsals, through the CLI.

Four rehearsals: completed, rolled back (the first connect fails), stuck (the rollback's connect fails too),
and interrupted then resumed twice (SIGTERM in the window, then a resume SIGKILLed in it: the last resume
takes the dead runner's lock over). The last three run against `sim serve` in its own process or with
`--dry-run`. Each report: the files, the close code, the timeline's marks at the journal's own instants (and
in the SVG at the x those instants give), the window as `status` tells it, the page self-contained and not
blank in headless Chromium, and the canary secrets of the rehearsal in no file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import CLI, Sim, kill_leftovers, tool_env
from report_helpers import (
    assert_no_canary,
    assert_page_not_blank,
    canary_env,
    canary_inputs,
    external_references,
    report_files,
    summary_of,
    svg_mark_x,
)

from migrator.report import record as change_record
from migrator.report import window as window_marks

pytestmark = pytest.mark.slow  # whole rehearsals through CLI processes: the full tier
HUNG = 120.0
EXPECTED = {  # outcome, exit code, close code, the labels the timeline must show in this order
    "completed": ("completed", 0, "successful",
                  ["disconnect", "DISCONNECTED seen", "update", "connect", "CONNECTED seen", "verified"]),
    "rolled_back": ("rolled_back", 4, "unsuccessful",
                    ["disconnect", "DISCONNECTED seen", "update", "connect", "rollback starts", "disconnect",
                     "DISCONNECTED seen", "update", "connect", "CONNECTED seen", "rollback verified"]),
    "stuck": ("stuck", 5, "unsuccessful", ["disconnect", "update", "connect", "rollback starts", "stuck"]),
    "interrupted": ("completed", 0, "successful_with_issues",
                    ["disconnect", "interrupted", "resumed", "resumed", "took over: reclaimed lock of a dead runner",
                     "CONNECTED seen", "verified"]),
}


@pytest.fixture(autouse=True)
def _no_leftovers() -> Any:
    yield
    kill_leftovers()


def cli(*args: str, cwd: Path, timeout: float = HUNG) -> subprocess.CompletedProcess[str]:
    env = tool_env(XDG_STATE_HOME=os.environ["XDG_STATE_HOME"], **canary_env())
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def spawn(args: list[str], cwd: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = cwd / f"{name}.stdout"
    env = tool_env(XDG_STATE_HOME=os.environ["XDG_STATE_HOME"], **canary_env())
    with open(out, "wb") as fo, open(cwd / f"{name}.stderr", "wb") as fe:
        proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    return proc, out


def wait_for(out: Path, proc: subprocess.Popen[bytes], text: str) -> None:
    """Until a line of the run's NDJSON holds `text`."""
    deadline = time.monotonic() + HUNG
    while time.monotonic() < deadline:
        if any(text in line for line in out.read_text().splitlines()):
            return
        assert proc.poll() is None, f"the run ended before {text}: {out.read_text()[-1500:]}"
        time.sleep(0.01)
    raise AssertionError(f"no line with {text}")


def rehearse(case: str, work: Path, state: str, reports: Path) -> str:
    """Run the case; its report is written by --report (the last process of the case); the run id."""
    inputs = canary_inputs(work / "inputs")
    if case != "interrupted":
        faults = ["--faults", str(inputs[case])] if case in ("rolled_back", "stuck") else []
        done = cli("run", str(inputs["plan"]), "--dry-run", "--yes", "--json", "--world", str(inputs["world"]),
                   "--time-scale", "600", "--state", state, "--report", str(reports), *faults, cwd=work)
        assert done.returncode == EXPECTED[case][1], done.stderr[-2000:]
        assert "report of run-" in done.stderr
        return str(summary_of(done.stdout)["run_id"])
    with Sim(work, world=inputs["world"]) as sim:
        args = sim.run_args(state)
        first, out = spawn(["run", str(inputs["plan"]), *args], work, "run")
        wait_for(out, first, '"connection_state": "DISCONNECTING"')  # the disconnect was called
        first.send_signal(signal.SIGTERM)  # Ctrl-C's twin: the runner journals `interrupted` and exits 130
        assert first.wait(HUNG) == 130
        run_id = next(json.loads(line)["run_id"] for line in out.read_text().splitlines() if '"run_id"' in line)
        second, out = spawn(["resume", run_id, *args], work, "resume")
        wait_for(out, second, '"to_state": "connecting"')
        second.kill()  # a runner that dies without a word: its lock stays until the next one takes it over
        second.wait(HUNG)
        done = cli("resume", run_id, *args, "--report", str(reports), cwd=work)
        assert done.returncode == 0, done.stderr[-2000:]
    return run_id


@pytest.mark.parametrize("case", list(EXPECTED))
def test_the_report_of_a_rehearsal(case: str, tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path}/journal.db"
    auto = tmp_path / "auto"
    run_id = rehearse(case, tmp_path, state, auto)
    outcome, code, close, labels = EXPECTED[case]

    # `report` writes the same report as --report did (the record's generated_at aside), read-only.
    done = cli("report", run_id, "--out", str(tmp_path / "again"), "--state", state, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = report_files(tmp_path / "again", run_id)
    assert sorted(done.stdout.split()) == sorted(str(p) for p in files.values())
    first, again = (json.loads(report_files(d, run_id)["json"].read_text()) for d in (auto, tmp_path / "again"))
    if case != "stuck":  # a stuck store's window is still open: its length (and overrun) grow with the clock
        assert {**first, "generated_at": 0} == {**again, "generated_at": 0}
    assert first["keystores"][0]["window"]["marks"] == again["keystores"][0]["window"]["marks"]

    rec = again
    assert (rec["type"], rec["schema"], rec["run"]["id"]) == ("change_record", change_record.SCHEMA, run_id)
    assert (rec["run"]["outcome"], rec["run"]["exit_code"], rec["close"]["code"]) == (outcome, code, close)
    ks = rec["keystores"][0]
    window = ks["window"]
    assert window["clock"] == "simulated" and window["time_scale"] == (600.0 if case != "interrupted" else 60.0)

    # The timeline's marks are the journal's events, at the journal's instants, on the run's clock.
    from migrator.journal.repository import Journal

    with Journal.open(state, read_only=True) as journal:
        events = {e.seq: e for e in journal.events(run_id)}
        migration = journal.get_run(run_id).migrations[0]
    scale = window["time_scale"]
    for mark in window["marks"]:
        event = events[mark["seq"]]
        assert mark["at"] == event.at
        assert mark["t"] == round((event.at - migration.disconnected_at) * scale, 3)
    shown = [m["label"] for m in window["marks"] if m["kind"] != "round_trip"]
    it = iter(shown)
    assert all(label in it for label in labels), shown  # in this order (other marks may come between)
    # Every call that changed the store is in the record with the request id AWS gave it.
    results = [e for e in events.values() if e.kind == "result" and e.operation in window_marks.CALLS]
    assert [(c["operation"], c["request_id"]) for c in ks["calls"] if c["outcome"]] == [
        (e.operation, e.request_id) for e in results]
    assert all(c["request_id"] for c in ks["calls"] if c["outcome"] == "ok")
    round_trips = [e for e in events.values() if e.operation == "Encrypt+Decrypt"]
    assert [r["decrypt_request_id"] for r in ks["round_trips"]] == [e.request_id for e in round_trips]
    # The window and the budget are status's.
    status = cli("status", run_id, "--json", "--state", state, cwd=tmp_path)
    told = summary_of(status.stdout)["keystores"][0]
    assert ks["budget_seconds"] == told["budget_seconds"]
    assert ks["floor_seconds"] == 605.0  # a disconnect and a connect (300 s each, AWS's) and a 5 s poll
    if case != "stuck":  # a stuck store's window is still open: it grows with the clock
        assert window["end_t"] == ks["window_seconds"] == told["window_seconds"]
    else:
        assert window["open"] and ks["manual"]["commands"]
    if case == "interrupted":
        assert [i["label"] for i in rec["interruptions"]] == ["interrupted", "resumed", "resumed",
                                                              "took over: reclaimed lock of a dead runner"]
        assert window["gaps"], "the stretches with no runner are drawn"
        assert any("interrupted" in r for r in rec["close"]["reasons"])

    # The SVG puts each mark at the x its t gives: one linear map for them all.
    xs = svg_mark_x(files["svg"].read_text())
    ts = {m["seq"]: m["t"] for m in window["marks"]}
    assert set(xs) == set(ts)
    lo, hi = min(ts, key=ts.__getitem__), max(ts, key=ts.__getitem__)
    per_second = (xs[hi] - xs[lo]) / (ts[hi] - ts[lo])
    assert per_second > 0
    for seq, t in ts.items():
        assert abs(xs[lo] + (t - ts[lo]) * per_second - xs[seq]) < 0.05, (seq, t)

    # The page: self-contained, everything escaped, and something to see in a browser.
    page = files["html"].read_text()
    assert external_references(page) == []
    assert run_id in page and "data:image/svg+xml;base64," in page
    assert all(c["request_id"] in page for c in ks["calls"] if c["request_id"])
    assert "<script" not in page.lower()
    markdown = files["md"].read_text()
    assert f"![timeline of each key store's window]({files['png'].name})" in markdown
    assert files["png"].read_bytes().startswith(b"\x89PNG")
    assert_no_canary([*files.values(), *report_files(auto, run_id).values()])
    assert_page_not_blank(files["html"], tmp_path)


def test_report_says_no_in_one_line(tmp_path: Path) -> None:
    from migrator.journal.repository import Journal

    state = f"sqlite:///{tmp_path}/journal.db"
    with Journal.open(state) as journal:
        run_id = journal.create_run(plan_name="p", plan_path="p.toml", plan_text="", plan_fingerprint="0",
                                    region="us-east-1")
    (tmp_path / "a-file").write_text("")
    cases = [(["report", "run-20260101-000000-beef", "--out", str(tmp_path / "out")], "no run run-2026"),
             (["report", run_id, "--out", str(tmp_path / "a-file" / "sub")], "--out"),
             (["report", "fleet-20260101-000000-beef", "--out", str(tmp_path / "out")], "no fleet fleet-2026"),
             (["fleet", "report", "fleet-20260101-000000-beef", "--out", str(tmp_path / "out")], "no fleet"),
             (["report", "run-x", "--format", "pdf"], "--format"),
             (["run", "plans/public-to-vpc.toml", "--dry-run", "--yes", "--report", str(tmp_path / "a-file")],
              "--report")]
    for args, said in cases:
        done = cli(*args, "--state", state, cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
    # A run that never got a key store (here: one that never started) still has a record, with no window.
    done = cli("report", run_id, "--out", str(tmp_path / "out"), "--state", state, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / f"{run_id}.json").read_text())["close"]["code"] is None

