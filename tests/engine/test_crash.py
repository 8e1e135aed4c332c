"""Crash matrix: the tool is SIGKILLed at every journal point, and at random moments, and must resume.

The tool runs as a subprocess (`python -m migrator.cli run ...`) against `xksmigrate sim serve` in
another subprocess that outlives it; each case gets a fresh world and a fresh journal. What every
resumed case must show is listed in crash_helpers.py's docstring (outcome and exit code, live store
= journal, no event lost, the window measured across the crash, side effects once).

- forward path: kill after each journal seq 1..N of an uninterrupted run (N measured, not hard-coded), except
  inside a run of consecutive preflight findings, whose first and last stand for the rest (`forward_points`);
- rollback path: the first connect ends FAILED (crash-faults-rollback.toml); kill after each seq from
  that failing ConnectCustomKeyStore call to the end of the rollback;
- random: kill after a random real delay while every mutating call is slow, so requests are in flight
  (seeded: XKSMIGRATE_CRASH_SEED=<seed> repeats a run; the seed is printed);
- PostgreSQL: the same points of both paths, when XKSMIGRATE_TEST_PG_URL is set;
- operator rollback: the run completes, then `xksmigrate rollback RUN_ID` is killed after each journal point of
  its own run (from its journaled request on) and `resume` of that run must finish the rollback, RUN_ID's record
  unchanged and linked to it (SQLite: every point, split in sample and rest like the paths above; PostgreSQL:
  the sample);
- SIGTERM and SIGINT mid-wait: exit 130, `interrupted` journaled, resume completes;
- a second `resume` while the first runs: exit 6 naming the holder; the run stays resumable;
- a postponed cut-over: killed after its `postponed` note, in its wait, or after its `released` note; the resume
  waits again for `proceed` (never disconnecting on its own) unless the release was journaled;
- a budget that runs out while the tool is dead: the resume rolls back without pressing on.

Cases run in a small thread pool (XKSMIGRATE_CRASH_WORKERS, default 3): each is a few subprocesses
that mostly sleep, so the wall time is about a third of the serial time.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import (
    EXIT,
    MUTATING,
    PLAN,
    ROLLBACK_FAULTS,
    SLOW_CALL_FAULTS,
    SLOW_CALL_ROLLBACK_FAULTS,
    WORLD,
    Baseline,
    CaseReport,
    Effects,
    Sim,
    baseline,
    check_resumed,
    crash_case,
    default_sigint,
    event_label,
    kill_leftovers,
    pg_database,
    read_journal,
    spawn,
    start_resume,
    start_run,
)
from engine_helpers import PG_URL

pytestmark = pytest.mark.slow  # every case kills and resumes the CLI in subprocesses: the full tier

WORKERS = max(1, int(os.environ.get("XKSMIGRATE_CRASH_WORKERS", "3")))
RANDOM_CASES = int(os.environ.get("XKSMIGRATE_CRASH_RANDOM_CASES", "16"))
RANDOM_SAMPLE = min(4, RANDOM_CASES)


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    kill_leftovers()


def sqlite_url(workdir: Path) -> str:
    return f"sqlite:///{workdir}/journal.db"


def run_cases(cases: list[tuple[str, Callable[[], CaseReport]]], attempts: int = 3) -> list[CaseReport]:
    """Run the cases in the pool; a case whose run ended before its kill point (the run journaled fewer
    events than the baseline, e.g. a wait observed already finished on a loaded machine) is tried again."""

    def one(name: str, make: Callable[[], CaseReport]) -> CaseReport:
        for _ in range(attempts):
            report = make()
            if report.reached:
                return report
        return report

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda c: one(*c), cases))


def assert_no_problems(title: str, reports: list[CaseReport], extra: str = "") -> None:
    print(f"\n{title}: {len(reports)} cases {extra}")
    for r in reports:
        print("  " + r.line() + ("" if not r.problems else "  FAILED"))
    failed = [r for r in reports if r.problems]
    if failed:
        lines = [f"{r.line()}\n      " + "\n      ".join(r.problems) for r in failed[:10]]
        pytest.fail(f"{title} {extra}: {len(failed)} of {len(reports)} cases failed:\n" + "\n".join(lines),
                    pytrace=False)


def seam_cases(base: Baseline, points: list[int], root: Path, label: str, expect: str, faults: Path | None,
               url_for: Callable[[Path], Any] | None = None,
               operator_rollback: bool = False) -> list[tuple[str, Callable[[], CaseReport]]]:
    def make(n: int) -> Callable[[], CaseReport]:
        def case() -> CaseReport:
            workdir = root / f"{label}-{n:03d}-{time.monotonic_ns()}"
            workdir.mkdir(parents=True)
            if url_for is None:
                return crash_case(label, workdir, sqlite_url(workdir), base, expect=expect, faults=faults,
                                  kill_after=n, operator_rollback=operator_rollback)
            with url_for(workdir) as url:
                return crash_case(label, workdir, url, base, expect=expect, faults=faults, kill_after=n,
                                  operator_rollback=operator_rollback)
        return case

    return [(f"{label}-{n}", make(n)) for n in points]


def forward_points(base: Baseline) -> list[int]:
    """Every journal point of the forward path, except the inside of a run of consecutive preflight findings.

    Preflight journals one `finding` after another in one loop, before anything is changed (about fifty since
    the fail-closed checks of #12). A kill after the k-th or the (k+1)-th of them leaves the same thing behind:
    a snapshotted run with some findings, whose resume runs preflight again. The first and the last of each
    run of findings stay crash points (the loop's edges), as does every other event.
    """
    kept = []
    for i, e in enumerate(base.events):
        before = base.events[i - 1] if i else None
        after = base.events[i + 1] if i + 1 < len(base.events) else None
        inside = (e.kind == "finding" and before is not None and before.kind == "finding"
                  and after is not None and after.kind == "finding")
        if not inside:
            kept.append(e.seq)
    return kept


def rollback_points(base: Baseline) -> list[int]:
    """From the ConnectCustomKeyStore call that ends FAILED to the last event of the rollback."""
    first = next(e.seq for e in base.events if e.kind == "call" and e.operation == "ConnectCustomKeyStore")
    assert any(e.to_state == "rolling_back" for e in base.events), "the fault did not force a rollback"
    return list(range(first, base.count + 1))


def operator_rollback_points(base: Baseline) -> list[int]:
    """The rollback run's journal, from its request (its first event: the checks passed) to its last event."""
    first = next(e.seq for e in base.events if e.kind == "note" and e.outcome == "operator_rollback")
    return list(range(first, base.count + 1))


def is_key_point(e: Any) -> bool:
    """The sample: every state move, both sides of every Disconnect/Update/Connect call, an operator's request."""
    return (e.kind == "transition" or (e.kind in ("call", "result") and e.operation in MUTATING)
            or (e.kind == "note" and e.outcome == "operator_rollback"))


def split(base: Baseline, points: list[int], part: str) -> list[int]:
    """`sample` (unmarked, runs by default) or `rest` (slow): together exactly `points`."""
    key = {e.seq for e in base.events if is_key_point(e)}
    chosen = [n for n in points if (n in key) == (part == "sample")]
    assert chosen, f"no {part} points"
    return chosen


@pytest.fixture(scope="module")
def forward(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    root = tmp_path_factory.mktemp("forward-baseline")
    base = baseline(root, sqlite_url(root))
    assert base.outcome == "completed"
    return base


@pytest.fixture(scope="module")
def rollback(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    root = tmp_path_factory.mktemp("rollback-baseline")
    base = baseline(root, sqlite_url(root), ROLLBACK_FAULTS)
    assert base.outcome == "rolled_back"
    return base


@pytest.fixture(scope="module")
def operator_rollback(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    root = tmp_path_factory.mktemp("operator-rollback-baseline")
    base = baseline(root, sqlite_url(root), operator_rollback=True)
    assert base.outcome == "rolled_back"
    return base


# -- SIGKILL at every journal point ---------------------------------------------------------------
# Each path is split in two tests: `sample` (every state move and both sides of every mutating call)
# runs by default; `rest` (preflight findings, observation notes, verify results) is marked slow.
# CI runs both, so every journal point of both paths is a crash point there.
PARTS = ["sample", pytest.param("rest", marks=pytest.mark.slow)]


@pytest.mark.parametrize("part", PARTS)
def test_sigkill_at_every_journal_point_of_the_forward_path(part: str, forward: Baseline, tmp_path: Path) -> None:
    points = split(forward, forward_points(forward), part)
    reports = run_cases(seam_cases(forward, points, tmp_path, "forward", "completed", None))
    assert [r.point for r in reports] == points
    assert_no_problems(f"forward path, SIGKILL after each journal point ({part})", reports,
                       f"(uninterrupted run: {forward.count} events)")


@pytest.mark.parametrize("part", PARTS)
def test_sigkill_at_every_journal_point_of_the_rollback_path(part: str, rollback: Baseline, tmp_path: Path) -> None:
    every = rollback_points(rollback)
    print("\nrollback path points: " + ", ".join(f"{e.seq} {event_label(e)}" for e in rollback.events[every[0] - 1:]))
    points = split(rollback, every, part)
    reports = run_cases(seam_cases(rollback, points, tmp_path, "rollback", "rolled_back", ROLLBACK_FAULTS))
    assert_no_problems(f"rollback path, SIGKILL after each journal point ({part})", reports,
                       f"(uninterrupted run: {rollback.count} events, points {every[0]}..{every[-1]})")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="XKSMIGRATE_TEST_PG_URL is not set")
@pytest.mark.parametrize("path", ["forward", "rollback"])
def test_sigkill_at_every_journal_point_on_postgresql(path: str, forward: Baseline, rollback: Baseline,
                                                      tmp_path: Path) -> None:
    assert PG_URL
    if path == "forward":
        cases = seam_cases(forward, forward_points(forward), tmp_path, "pg-fwd", "completed", None,
                           lambda _: pg_database(PG_URL))
    else:
        cases = seam_cases(rollback, rollback_points(rollback), tmp_path, "pg-back", "rolled_back",
                           ROLLBACK_FAULTS, lambda _: pg_database(PG_URL))
    assert_no_problems(f"PostgreSQL journal, SIGKILL at every journal point of the {path} path", run_cases(cases))


@pytest.mark.parametrize("part", PARTS)
def test_sigkill_at_every_journal_point_of_an_operator_rollback(part: str, operator_rollback: Baseline,
                                                                tmp_path: Path) -> None:
    """`xksmigrate rollback RUN_ID` of a completed run dies after each journal point of its own run; `resume` of
    that run finishes the rollback: the original configuration, verified, each call once, the window measured
    across the crash, RUN_ID still `completed` with its own window."""
    every = operator_rollback_points(operator_rollback)
    print("\noperator rollback points: "
          + ", ".join(f"{e.seq} {event_label(e)}" for e in operator_rollback.events[every[0] - 1:]))
    points = split(operator_rollback, every, part)
    reports = run_cases(seam_cases(operator_rollback, points, tmp_path, "op-back", "rolled_back", None,
                                   operator_rollback=True))
    assert [r.point for r in reports] == points
    assert_no_problems(f"operator rollback, SIGKILL after each journal point ({part})", reports,
                       f"(uninterrupted: {operator_rollback.count} events, points {every[0]}..{every[-1]})")


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="XKSMIGRATE_TEST_PG_URL is not set")
def test_sigkill_at_the_key_points_of_an_operator_rollback_on_postgresql(operator_rollback: Baseline,
                                                                         tmp_path: Path) -> None:
    """The sample of the operator-rollback points (its request, state moves, mutating calls) on PostgreSQL."""
    assert PG_URL
    points = split(operator_rollback, operator_rollback_points(operator_rollback), "sample")
    cases = seam_cases(operator_rollback, points, tmp_path, "pg-op-back", "rolled_back", None,
                       lambda _: pg_database(PG_URL), operator_rollback=True)
    assert_no_problems("PostgreSQL journal, SIGKILL at the key points of an operator rollback", run_cases(cases))


# -- SIGKILL at random moments during AWS calls -------------------------------------------------------
SEED = int(os.environ.get("XKSMIGRATE_CRASH_SEED") or random.SystemRandom().randrange(2**32))


@pytest.mark.parametrize("part", ["sample", pytest.param("rest", marks=pytest.mark.slow)])
def test_sigkill_at_random_moments_during_aws_calls(part: str, tmp_path: Path) -> None:
    """Kill after a random real delay (uniform over an uninterrupted run), with every mutating call slow."""
    count = RANDOM_SAMPLE if part == "sample" else max(RANDOM_CASES - RANDOM_SAMPLE, 0)
    if not count:
        pytest.skip("XKSMIGRATE_CRASH_RANDOM_CASES leaves no case for this part")
    print(f"\nrandom crash seed: {SEED} (repeat with XKSMIGRATE_CRASH_SEED={SEED})")
    rng = random.Random(f"{SEED}-{part}")
    paths = {"completed": SLOW_CALL_FAULTS, "rolled_back": SLOW_CALL_ROLLBACK_FAULTS}
    bases = {expect: baseline(tmp_path / f"base-{expect}", sqlite_url(tmp_path / f"base-{expect}"), faults)
             for expect, faults in paths.items()}
    cases = []
    for i in range(count):
        expect = ("completed", "rolled_back")[i % 2]
        delay = round(rng.uniform(0.0, bases[expect].seconds), 3)
        workdir = tmp_path / f"random-{i:02d}"

        def case(workdir: Path = workdir, expect: str = expect, delay: float = delay) -> CaseReport:
            return crash_case(f"random-{expect[:4]}", workdir, sqlite_url(workdir), bases[expect], expect=expect,
                              faults=paths[expect], delay=delay)
        cases.append((f"random-{i}", case))
    reports = run_cases(cases, attempts=1)
    assert_no_problems(f"random SIGKILL during AWS calls ({part})", reports, f"(seed {SEED})")


# -- signals and a second runner ---------------------------------------------------------------------
def slow_world(workdir: Path, disconnect: int) -> Path:
    """The crash world with a disconnect slow enough to signal the tool in the middle of its wait."""
    path = workdir / "slow-world.toml"
    path.write_text(WORLD.read_text().replace("\ndisconnect = 120", f"\ndisconnect = {disconnect}"))
    assert f"disconnect = {disconnect}" in path.read_text()
    return path


def is_disconnecting_note(line: dict[str, Any]) -> bool:
    return line.get("kind") == "note" and (line.get("detail") or {}).get("connection_state") == "DISCONNECTING"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_wait_exits_130_and_resume_completes(signum: int, forward: Baseline, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with Sim(tmp_path, world=slow_world(tmp_path, 1800)) as sim:  # 3 real seconds of DISCONNECTING
        proc = start_run(sim, url, tmp_path, preexec_fn=default_sigint)
        assert proc.wait_for_line(is_disconnecting_note), proc.err.read_text()
        proc.popen.send_signal(signum)
        assert proc.wait() == 130, proc.err.read_text()
        summary = proc.summary()
        assert summary and summary["outcome"] == "interrupted" and "xksmigrate resume" in summary["message"]
        before = read_journal(url)
        assert before is not None and before.run.outcome == "interrupted"
        assert before.migration.state == "disconnecting"
        last = before.events[-1]
        assert (last.kind, last.outcome) == ("note", "interrupted")

        resumed = start_resume(sim, url, before.run.id, tmp_path)
        resumed.wait()
        problems = check_resumed(sim, url, before, resumed, expect="completed", effects=forward.effects)
    assert not problems, "\n".join(problems)


def test_a_second_resume_while_the_first_runs_exits_6_and_the_run_stays_resumable(
        forward: Baseline, tmp_path: Path) -> None:
    from migrator.journal.repository import Journal

    url = sqlite_url(tmp_path)
    # 10 real seconds of DISCONNECTING: the first resume must still be waiting when the second one (a CLI
    # start-up, a few real seconds on a loaded machine) has been refused; 5 s was too few at a load of 8.
    with Sim(tmp_path, world=slow_world(tmp_path, 6000)) as sim:
        crashed = start_run(sim, url, tmp_path)
        assert crashed.wait_for_line(is_disconnecting_note), crashed.err.read_text()
        crashed.popen.send_signal(signal.SIGKILL)
        crashed.wait()
        before = read_journal(url)
        assert before is not None
        run_id = before.run.id

        first = start_resume(sim, url, run_id, tmp_path, name="resume1")
        assert first.wait_for_line(is_disconnecting_note), first.err.read_text()  # holds the lock, mid-wait
        second = start_resume(sim, url, run_id, tmp_path, name="resume2")
        assert second.wait() == EXIT.get("locked", 6) == 6, second.err.read_text()
        message = (second.summary() or {}).get("message", "") + second.err.read_text()
        with Journal.open(url) as journal:
            held = [lock for lock in journal.list_locks() if lock.pid == first.popen.pid]
            outcome_meanwhile = journal.get_run(run_id).outcome
        assert held, "the first resume does not hold the store's lock"
        assert held[0].id in message and str(first.popen.pid) in message, message
        assert outcome_meanwhile == "running", f"the losing resume marked the run {outcome_meanwhile}"

        # The first resume dies too: the run must still be resumable, by id, by whoever comes next.
        assert first.popen.poll() is None, "the first resume ended before the test could kill it"
        first.popen.send_signal(signal.SIGKILL)
        first.wait()
        middle = read_journal(url, run_id)
        assert middle is not None
        third = start_resume(sim, url, run_id, tmp_path, name="resume3")
        third.wait()
        problems = check_resumed(sim, url, middle, third, expect="completed", effects=forward.effects)
        problems += [] if middle.events[:len(before.events)] == before.events else ["events lost"]
    assert not problems, "\n".join(problems)


def test_a_budget_that_runs_out_while_the_tool_is_dead_rolls_back_at_once(forward: Baseline,
                                                                         tmp_path: Path) -> None:
    """The window keeps counting while nobody runs: a resume after the budget is gone must not press on
    with the update and the connect (new disruption past the budget) but restore and reconnect at once."""
    url = sqlite_url(tmp_path)
    plan = tmp_path / "short-budget.toml"
    plan.write_text(PLAN.read_text().replace('max_disconnected = "4h"', 'max_disconnected = "11m"'))  # > the floor
    assert 'max_disconnected = "11m"' in plan.read_text()
    with Sim(tmp_path) as sim:
        point = next(e.seq for e in forward.events if e.to_state == "disconnected")
        proc = start_run(sim, url, tmp_path, plan=plan, kill_after=point)
        assert proc.wait() == -signal.SIGKILL, proc.err.read_text()
        before = read_journal(url)
        assert before is not None and before.migration.state == "disconnected", before
        assert before.migration.disconnected_at is not None
        budget_ends = before.migration.disconnected_at + 660 / sim.time_scale
        while time.time() < budget_ends + 0.2:  # stay dead until the budget is surely spent
            time.sleep(0.05)
        resumed = start_resume(sim, url, before.run.id, tmp_path)
        resumed.wait()
        expected = Effects(states=(("CONNECTED", "DISCONNECTING"), ("DISCONNECTING", "DISCONNECTED"),
                                   ("DISCONNECTED", "CONNECTING"), ("CONNECTING", "CONNECTED")),
                           ok_calls=("DisconnectCustomKeyStore", "ConnectCustomKeyStore"), rejected=())
        problems = check_resumed(sim, url, before, resumed, expect="rolled_back", effects=expected)
    assert not problems, "\n".join(problems)


# -- SIGKILL in a postponed cut-over wait ------------------------------------------------------------
@pytest.fixture(scope="module")
def postponed_points(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """An uninterrupted postponed run released by `proceed`: the seqs of its `postponed` and `released` notes."""
    tmp_path = tmp_path_factory.mktemp("postponed-baseline")
    url = sqlite_url(tmp_path)
    with Sim(tmp_path) as sim:
        run = spawn(["run", str(PLAN), *sim.run_args(url), "--postpone-cutover"], tmp_path, "base-run")
        assert run.wait_for_line(_is_note("postponed")), run.err.read_text()
        view = read_journal(url)
        assert view is not None
        assert spawn(["proceed", view.run.id, "--state", url], tmp_path, "base-proceed").wait() == 0
        assert run.wait() == 0, run.err.read_text()
        done = read_journal(url)
    assert done is not None
    return {outcome: next(e.seq for e in done.events if e.kind == "note" and e.outcome == outcome)
            for outcome in ("postponed", "released")}


def _mutations(sim: Sim) -> list[str]:
    return [e["operation"] for e in sim.log() if e.get("kind") == "call" and e.get("operation") in MUTATING]


def _is_note(outcome: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("kind") == "note" and line.get("outcome") == outcome


@pytest.mark.parametrize("point", ["after the postponed note", "in the wait", "after the released note"])
def test_sigkill_in_a_postponed_wait_resumes_into_the_wait(point: str, forward: Baseline, tmp_path: Path,
                                                          postponed_points: dict[str, int]) -> None:
    """Killed while a postponed cut-over waits, a resume waits again until `proceed` (never disconnecting on
    its own); killed right after the release was journaled, the resume goes on. Either way the run completes
    with each side effect once and the live store equal to the journal."""
    seqs = postponed_points
    url = sqlite_url(tmp_path)
    kill_after = {"after the postponed note": seqs["postponed"], "after the released note": seqs["released"]}
    with Sim(tmp_path) as sim:
        run = spawn(["run", str(PLAN), *sim.run_args(url), "--postpone-cutover"], tmp_path, "run",
                    kill_after=kill_after.get(point))
        if point == "in the wait":
            assert run.wait_for_line(_is_note("postponed")), run.err.read_text()
            time.sleep(1.5)  # at least one turn of the once-a-second wait loop
            run.popen.send_signal(signal.SIGKILL)
        elif point == "after the released note":
            assert run.wait_for_line(_is_note("postponed")), run.err.read_text()
            view = read_journal(url)
            assert view is not None
            assert spawn(["proceed", view.run.id, "--state", url], tmp_path, "proceed").wait() == 0
        assert run.wait() == -signal.SIGKILL, run.err.read_text()
        before = read_journal(url)
        assert before is not None and before.migration.state == "preflighted", before
        assert not _mutations(sim), "the store changed before proceed"

        resumed = start_resume(sim, url, before.run.id, tmp_path)
        if point != "after the released note":
            assert resumed.wait_for_line(lambda line: line.get("type") == "progress"
                                         and line.get("state") == "postponed"), resumed.err.read_text()
            time.sleep(1.0)
            assert resumed.popen.poll() is None, "the resume did not wait for proceed"
            assert not _mutations(sim), "the resume did not wait for proceed"
            assert spawn(["proceed", before.run.id, "--state", url], tmp_path, "proceed").wait() == 0
        resumed.wait()
        problems = check_resumed(sim, url, before, resumed, expect="completed", effects=forward.effects)
    assert not problems, "\n".join(problems)
