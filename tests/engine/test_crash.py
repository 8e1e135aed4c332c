"""Crash matrix: the tool is SIGKILLed at every journal point, and at random moments, and must resume.

The tool runs as a subprocess (`python -m migrator.cli run ...`) against `xksmigrate sim serve` in
another subprocess that outlives it; each case gets a fresh world and a fresh journal. What every
resumed case must show is listed in crash_helpers.py's docstring (outcome and exit code, live store
= journal, no event lost, the window measured across the crash, side effects once).

- forward path: kill after each journal seq 1..N of an uninterrupted run (N measured, not hard-coded);
- rollback path: the first connect ends FAILED (crash-faults-rollback.toml); kill after each seq from
  that failing ConnectCustomKeyStore call to the end of the rollback;
- random: kill after a random real delay while every mutating call is slow, so requests are in flight
  (seeded: XKSMIGRATE_CRASH_SEED=<seed> repeats a run; the seed is printed);
- PostgreSQL: every 3rd point of both paths, when XKSMIGRATE_TEST_PG_URL is set;
- SIGTERM and SIGINT mid-wait: exit 130, `interrupted` journaled, resume completes;
- a second `resume` while the first runs: exit 6 naming the holder; the run stays resumable;
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
    start_resume,
    start_run,
)
from engine_helpers import PG_URL

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
               url_for: Callable[[Path], Any] | None = None) -> list[tuple[str, Callable[[], CaseReport]]]:
    def make(n: int) -> Callable[[], CaseReport]:
        def case() -> CaseReport:
            workdir = root / f"{label}-{n:03d}-{time.monotonic_ns()}"
            workdir.mkdir(parents=True)
            if url_for is None:
                return crash_case(label, workdir, sqlite_url(workdir), base, expect=expect, faults=faults,
                                  kill_after=n)
            with url_for(workdir) as url:
                return crash_case(label, workdir, url, base, expect=expect, faults=faults, kill_after=n)
        return case

    return [(f"{label}-{n}", make(n)) for n in points]


def rollback_points(base: Baseline) -> list[int]:
    """From the ConnectCustomKeyStore call that ends FAILED to the last event of the rollback."""
    first = next(e.seq for e in base.events if e.kind == "call" and e.operation == "ConnectCustomKeyStore")
    assert any(e.to_state == "rolling_back" for e in base.events), "the fault did not force a rollback"
    return list(range(first, base.count + 1))


def is_key_point(e: Any) -> bool:
    """The sample: every state move, and both sides of every Disconnect/Update/Connect call."""
    return e.kind == "transition" or (e.kind in ("call", "result") and e.operation in MUTATING)


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


# -- SIGKILL at every journal point ---------------------------------------------------------------
# Each path is split in two tests: `sample` (every state move and both sides of every mutating call)
# runs by default; `rest` (preflight findings, observation notes, verify results) is marked slow.
# CI runs both, so every journal point of both paths is a crash point there.
PARTS = ["sample", pytest.param("rest", marks=pytest.mark.slow)]


@pytest.mark.parametrize("part", PARTS)
def test_sigkill_at_every_journal_point_of_the_forward_path(part: str, forward: Baseline, tmp_path: Path) -> None:
    points = split(forward, list(range(1, forward.count + 1)), part)
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
        cases = seam_cases(forward, list(range(1, forward.count + 1)), tmp_path, "pg-fwd", "completed", None,
                           lambda _: pg_database(PG_URL))
    else:
        cases = seam_cases(rollback, rollback_points(rollback), tmp_path, "pg-back", "rolled_back",
                           ROLLBACK_FAULTS, lambda _: pg_database(PG_URL))
    assert_no_problems(f"PostgreSQL journal, SIGKILL at every journal point of the {path} path", run_cases(cases))


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
    with Sim(tmp_path, world=slow_world(tmp_path, 3000)) as sim:  # 5 real seconds of DISCONNECTING
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
    plan.write_text(PLAN.read_text().replace('max_disconnected = "4h"', 'max_disconnected = "5m"'))
    assert 'max_disconnected = "5m"' in plan.read_text()
    with Sim(tmp_path) as sim:
        point = next(e.seq for e in forward.events if e.to_state == "disconnected")
        proc = start_run(sim, url, tmp_path, plan=plan, kill_after=point)
        assert proc.wait() == -signal.SIGKILL, proc.err.read_text()
        before = read_journal(url)
        assert before is not None and before.migration.state == "disconnected", before
        assert before.migration.disconnected_at is not None
        budget_ends = before.migration.disconnected_at + 300 / sim.time_scale
        while time.time() < budget_ends + 0.2:  # stay dead until the budget is surely spent
            time.sleep(0.05)
        resumed = start_resume(sim, url, before.run.id, tmp_path)
        resumed.wait()
        expected = Effects(states=(("CONNECTED", "DISCONNECTING"), ("DISCONNECTING", "DISCONNECTED"),
                                   ("DISCONNECTED", "CONNECTING"), ("CONNECTING", "CONNECTED")),
                           ok_calls=("DisconnectCustomKeyStore", "ConnectCustomKeyStore"), rejected=())
        problems = check_resumed(sim, url, before, resumed, expect="rolled_back", effects=expected)
    assert not problems, "\n".join(problems)
