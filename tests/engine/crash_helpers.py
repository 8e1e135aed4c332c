"""Crash-matrix plumbing: `sim serve` and the tool as real subprocesses; the journal and the world read back.

Nothing is mocked. The world runs in its own `xksmigrate sim serve` process, so it outlives the tool;
the tool runs as `python -m migrator.cli run|resume ...` and dies by SIGKILL, either at a journal
point (the engine's XKSMIGRATE_TEST_KILL_AFTER_SEQ seam) or after a random real delay. `crash_case`
then resumes it and returns every invariant it broke as a list of problems (empty: the case passed):

- the resume ends in the expected outcome (completed 0 / rolled_back 4), the journal says so too;
- the live store (DescribeCustomKeyStores over boto3) is CONNECTED with the target configuration
  (completed) or the snapshot's (rolled_back), and the resume's summary reports that same configuration;
- no journal event is lost: seq is gap-free from 1, every event committed before the kill is still
  there, unchanged and in order, and the resume's first event is its `resumed` note;
- the window survives the crash: `disconnected_at` is not moved by the resume, `window_seconds` is
  measured from it (to `verified_at`) and the summary reports that window;
- side effects (the world's own log): the store went through exactly the state changes of an
  uninterrupted run. At a journal point nothing is in flight, so the successful mutating calls are
  exactly those of the uninterrupted run and none is rejected. A random kill can leave one request in
  flight (journal: a `call` without its `result`); KMS may still carry it out after the tool died, so
  that one operation may appear once more (an Update with the same values, a Connect of a CONNECTING
  store) or be rejected with CustomKeyStoreInvalidStateException (Disconnect of a DISCONNECTING store),
  and the engine must cope with either.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
PLAN = DATA / "crash-plan.toml"
WORLD = DATA / "crash-world.toml"
ROLLBACK_FAULTS = DATA / "crash-faults-rollback.toml"
SLOW_CALL_FAULTS = DATA / "crash-faults-slow-calls.toml"
SLOW_CALL_ROLLBACK_FAULTS = DATA / "crash-faults-slow-calls-rollback.toml"
TIME_SCALE = float(tomllib.loads(WORLD.read_text())["world"]["time_scale"])
CLI = [sys.executable, "-m", "migrator.cli"]
HUNG = 120.0  # real seconds after which a tool process counts as hung (never reached when things work)
EXIT = {"completed": 0, "rolled_back": 4}
CONFIG_KEYS = ("connectivity", "uri_endpoint", "uri_path", "vpc_endpoint_service_name", "access_key_id")
LIVE_KEYS = {"Connectivity": "connectivity", "UriEndpoint": "uri_endpoint", "UriPath": "uri_path",
             "VpcEndpointServiceName": "vpc_endpoint_service_name", "AccessKeyId": "access_key_id"}
MUTATING = ("DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore")
SPAWNED: list[subprocess.Popen[bytes]] = []  # every tool process, so a failed test can kill what it left running


def tool_env(**extra: Any) -> dict[str, str]:
    """The environment of a child: dummy AWS credentials, no inherited AWS or xksmigrate settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIDCRASHMATRIX00000", AWS_SECRET_ACCESS_KEY="crash-matrix-dummy",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# -- the world: `sim serve` in its own process ----------------------------------------------------
class Sim:
    """A running `xksmigrate sim serve`; it survives every tool process the test kills."""

    def __init__(self, workdir: Path, world: Path = WORLD, faults: Path | None = None):
        args = [*CLI, "sim", "serve", "--world", str(world), "--port", "0"]
        if faults is not None:
            args += ["--faults", str(faults)]
        self.stderr = open(workdir / "sim.stderr", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL,
                                     text=True, env=tool_env(), cwd=workdir)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.stop()
            raise RuntimeError(f"sim serve did not start: {(workdir / 'sim.stderr').read_text()[-2000:]}")
        info = json.loads(line)
        self.endpoint_url: str = info["endpoint_url"]
        self.region: str = info["region"]
        self.time_scale = float(info["time_scale"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr.close()

    def __enter__(self) -> Sim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.endpoint_url}/_rehearsal/log", timeout=30) as response:
            return [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]

    def describe(self, store_id: str) -> dict[str, Any]:
        """What AWS says about the store now: DescribeCustomKeyStores through boto3, as any client would."""
        import boto3

        kms = boto3.client("kms", region_name=self.region, endpoint_url=self.endpoint_url,
                           aws_access_key_id="AKIDCRASHMATRIX00000", aws_secret_access_key="crash-matrix-dummy")
        return kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]

    def run_args(self, state_url: str) -> list[str]:
        return ["--yes", "--json", "--endpoint-url", self.endpoint_url, "--time-scale", f"{self.time_scale:g}",
                "--state", state_url]


# -- the tool ---------------------------------------------------------------------------------------
@dataclass
class Proc:
    """A tool process whose stdout/stderr go to files (so nothing blocks while the test sleeps)."""

    popen: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float

    def wait(self, timeout: float = HUNG) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"tool process hung for {timeout:g} s: {self.err.read_text()[-2000:]}") from None

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.out.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by SIGKILL
                found.append(json.loads(line))
        return found

    def summary(self) -> dict[str, Any] | None:
        return next((d for d in reversed(self.lines()) if d.get("type") == "summary"), None)

    def wait_for_line(self, predicate: Any, timeout: float = HUNG) -> dict[str, Any] | None:
        """Poll stdout until a JSON line satisfies `predicate`; None if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.popen.poll() is not None
            for line in self.lines():
                if predicate(line):
                    return line
            if done:
                return None
            time.sleep(0.005)
        raise AssertionError(f"no such output line within {timeout:g} s")


def spawn(args: list[str], workdir: Path, name: str, *, kill_after: int | None = None,
          preexec_fn: Any = None) -> Proc:
    extra = {"XKSMIGRATE_TEST_KILL_AFTER_SEQ": kill_after} if kill_after is not None else {}
    out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen([*CLI, *args], stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=workdir,
                                 env=tool_env(**extra), preexec_fn=preexec_fn)
    SPAWNED.append(popen)
    return Proc(popen, out, err, time.monotonic())


def kill_leftovers() -> None:
    """SIGKILL the tool processes a failed test left running (each by its own pid), and forget them all."""
    while SPAWNED:
        popen = SPAWNED.pop()
        if popen.poll() is None:
            popen.kill()
            popen.wait()


def start_run(sim: Sim, state_url: str, workdir: Path, name: str = "run", plan: Path = PLAN,
              **kw: Any) -> Proc:
    return spawn(["run", str(plan), *sim.run_args(state_url)], workdir, name, **kw)


def start_resume(sim: Sim, state_url: str, run_id: str, workdir: Path, name: str = "resume", **kw: Any) -> Proc:
    return spawn(["resume", run_id, *sim.run_args(state_url)], workdir, name, **kw)


def start_rollback(sim: Sim, state_url: str, run_id: str, workdir: Path, name: str = "rollback",
                   **kw: Any) -> Proc:
    """`xksmigrate rollback RUN_ID`: the operator returns a completed run to its original configuration."""
    return spawn(["rollback", run_id, *sim.run_args(state_url)], workdir, name, **kw)


def rollback_run_of(journal: Any, run_id: str) -> str | None:
    """The id of the latest rollback run of `run_id` (`journal`: a URL or a Journal), None before there is one."""
    from migrator.journal.repository import Journal

    if isinstance(journal, str):
        with Journal.open(journal) as opened:
            return rollback_run_of(opened, run_id)
    found = journal.rollbacks_of(run_id)
    return str(found[-1].id) if found else None


def run_to_completion(sim: Sim, state_url: str, workdir: Path, name: str = "forward") -> str:
    """A clean, uninterrupted run that must complete; its run id."""
    proc = start_run(sim, state_url, workdir, name)
    code = proc.wait()
    assert code == 0, f"forward run exit {code}: {proc.err.read_text()[-2000:]}"
    view = read_journal(state_url)
    assert view is not None
    return str(view.run.id)


def default_sigint() -> None:
    """preexec_fn: a background job inherits SIGINT ignored; a terminal's Ctrl-C reaches a default handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- the journal, read back ---------------------------------------------------------------------------
@dataclass
class JournalView:
    run: Any
    migration: Any
    events: list[Any]


def read_journal(journal: Any, run_id: str | None = None) -> JournalView | None:
    """The run (the only one when `run_id` is None), its migration and events; `journal` is a URL or a Journal."""
    from migrator.journal.repository import Journal

    if isinstance(journal, str):
        with Journal.open(journal) as opened:
            return read_journal(opened, run_id)
    if run_id is None:
        runs = journal.list_runs()
        if not runs:
            return None
        assert len(runs) == 1, f"expected one run, found {[r.id for r in runs]}"
        run_id = runs[0].id
    run = journal.get_run(run_id)
    return JournalView(run, run.migrations[0] if run.migrations else None, journal.events(run_id))


def event_label(e: Any) -> str:
    parts = [e.kind, e.operation or "", e.outcome or "", f"->{e.to_state}" if e.to_state else ""]
    detail = e.detail or {}
    if "connection_state" in detail:
        parts.append(str(detail["connection_state"]))
    if "check" in detail:
        parts.append(str(detail["check"]))
    return " ".join(p for p in parts if p)


def inflight_call(events: list[Any]) -> str | None:
    """The AWS operation whose `call` was journaled but whose `result` was not (None if there is none)."""
    open_calls: list[str] = []
    for e in events:
        if e.kind == "call":
            open_calls.append(e.operation)
        elif e.kind == "result" and e.operation in open_calls:
            open_calls.remove(e.operation)
    return open_calls[-1] if open_calls else None


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one case (the lock resource is the same store in every world)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    base = make_url(admin_url).set(drivername="postgresql+psycopg")
    admin = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"xkscrash_{secrets.token_hex(5)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


# -- what the world saw -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Effects:
    """The side effects that matter, from the world's own log."""

    states: tuple[tuple[str, str], ...]  # the store's connection state changes, in order
    ok_calls: tuple[str, ...]  # successful Disconnect/Update/Connect calls, in order
    rejected: tuple[tuple[str, str], ...]  # (operation, error) of rejected ones

    @classmethod
    def of(cls, log: list[dict[str, Any]], store_id: str) -> Effects:
        states = tuple((e["from"], e["to"]) for e in log if e.get("kind") == "state" and e.get("keystore") == store_id)
        calls = [e for e in log if e.get("kind") == "call" and e.get("operation") in MUTATING]
        return cls(states, tuple(e["operation"] for e in calls if not e.get("error")),
                   tuple((e["operation"], e["error"]) for e in calls if e.get("error")))


def effects_problems(got: Effects, want: Effects, inflight: str | None, exact: bool) -> list[str]:
    problems = []
    if got.states != want.states:
        problems.append(f"store state changes {got.states} differ from an uninterrupted run's {want.states}")
    ok_calls = list(got.ok_calls)
    if not exact and inflight and ok_calls != list(want.ok_calls):
        # The request in flight at the kill may have been carried out as well as the resume's own one.
        for i in range(1, len(ok_calls)):
            if ok_calls[i] == ok_calls[i - 1] == inflight:
                del ok_calls[i]
                break
    if ok_calls != list(want.ok_calls):
        problems.append(f"successful mutating calls {got.ok_calls} differ from an uninterrupted run's "
                        f"{want.ok_calls} (in flight at the kill: {inflight})")
    allowed = 0 if exact or not inflight else 1
    bad = [r for r in got.rejected if not allowed or r != (inflight, "CustomKeyStoreInvalidStateException")]
    if bad or len(got.rejected) > allowed:
        problems.append(f"rejected mutating calls {got.rejected} (in flight at the kill: {inflight})")
    return problems


# -- one case -----------------------------------------------------------------------------------------
@dataclass
class CaseReport:
    label: str
    point: int | None = None  # the journal seq the tool died after (seam), None for a random kill
    delay: float | None = None
    reached: bool = True  # False: the run ended before reaching the kill point
    killed_after: int = 0  # events committed before the kill
    last_event: str = ""
    outcome: str = ""
    resume_exit: int | None = None
    inflight: str | None = None  # the AWS call journaled as started but not finished when the tool died
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = f"seq {self.point}" if self.point is not None else f"after {self.delay:.3f}s"
        return (f"{self.label:<9} {where:<14} died after {self.killed_after:>3} events "
                f"[{self.last_event}]" + (f" in flight: {self.inflight}" if self.inflight else "")
                + f" -> resume exit {self.resume_exit} {self.outcome}")


@dataclass(frozen=True)
class Baseline:
    """An uninterrupted run: its journal (to enumerate points) and its side effects (to compare with)."""

    events: list[Any]
    effects: Effects
    outcome: str
    seconds: float  # real seconds from the first journaled event to the end of the process

    @property
    def count(self) -> int:
        return len(self.events)


def baseline(workdir: Path, state_url: str, faults: Path | None = None, operator_rollback: bool = False) -> Baseline:
    """An uninterrupted run (`operator_rollback`: a completed run, then its uninterrupted `rollback`, whose own
    run is the baseline's journal)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with Sim(workdir, faults=faults) as sim:
        forward_id = None
        if operator_rollback:
            forward_id = run_to_completion(sim, state_url, workdir)
            proc = start_rollback(sim, state_url, forward_id, workdir, "clean")
        else:
            proc = start_run(sim, state_url, workdir, "clean")
        first = proc.wait_for_line(lambda d: d.get("type") == "event")
        t0 = time.monotonic()
        code = proc.wait()
        seconds = time.monotonic() - t0
        assert first is not None and code in EXIT.values(), f"clean run exit {code}: {proc.err.read_text()[-2000:]}"
        view = read_journal(state_url, forward_id and rollback_run_of(state_url, forward_id))
        assert view is not None
        effects = Effects.of(sim.log(), view.migration.keystore_id)
    return Baseline(view.events, effects, view.run.outcome, seconds)


def crash_case(label: str, workdir: Path, state_url: str, base: Baseline, *, expect: str,
               faults: Path | None = None, kill_after: int | None = None, delay: float | None = None,
               operator_rollback: bool = False) -> CaseReport:
    """Run, SIGKILL (at journal seq `kill_after`, or `delay` real seconds after the first event), resume, check.

    `operator_rollback`: the run completes undisturbed; its `xksmigrate rollback` is the process killed, and
    the rollback's own run is resumed. The forward run's record must come through unchanged, linked to it.
    """
    from migrator.journal.repository import Journal

    workdir.mkdir(parents=True, exist_ok=True)
    report = CaseReport(label, point=kill_after, delay=delay)
    problems = report.problems
    with Sim(workdir, faults=faults) as sim:
        forward = None
        if operator_rollback:
            forward = read_journal(state_url, run_to_completion(sim, state_url, workdir))
            assert forward is not None
            proc = start_rollback(sim, state_url, forward.run.id, workdir, kill_after=kill_after)
        else:
            proc = start_run(sim, state_url, workdir, kill_after=kill_after)
        if delay is not None:
            if proc.wait_for_line(lambda d: d.get("type") == "event") is not None:
                time.sleep(delay)
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGKILL)
        code = proc.wait()
        if kill_after is not None and code != -signal.SIGKILL:
            report.reached = False  # this run journaled fewer events than the baseline
            problems.append(f"the run exited {code} before journal point {kill_after}")
            return report
        with Journal.open(state_url) as journal:
            before = read_journal(journal, forward and rollback_run_of(journal, forward.run.id))
            if before is None:
                problems.append("no run was journaled")
                return report
            report.killed_after = len(before.events)
            report.last_event = event_label(before.events[-1]) if before.events else ""
            seqs = [e.seq for e in before.events]
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"seq not gap-free after the kill: {seqs}")
            if kill_after is not None and len(seqs) != kill_after:
                problems.append(f"killed after seq {kill_after} but the journal holds {len(seqs)} events")
            resumed = None
            if before.run.outcome not in EXIT:  # a random kill can come after the run ended
                resumed = start_resume(sim, state_url, before.run.id, workdir)
                report.resume_exit = resumed.wait()
            report.inflight = inflight_call(before.events)
            problems += check_resumed(sim, journal, before, resumed, expect=expect, effects=base.effects,
                                      inflight=report.inflight, exact=delay is None)
            report.outcome = journal.get_run(before.run.id).outcome
            if forward is not None:
                problems += forward_kept(journal, forward, before.run.id)
    return report


def forward_kept(journal: Any, forward: JournalView, back_id: str) -> list[str]:
    """The run an operator rollback undid still says what it did (its store completed, its window), and names
    the rollback run that undid it."""
    after = read_journal(journal, forward.run.id)
    assert after is not None
    problems = []
    if (after.run.outcome, after.migration) != (forward.run.outcome, forward.migration):
        problems.append(f"the forward run changed: {after.run.outcome} {after.migration}")
    links = [e.detail.get("run_id") for e in after.events if e.outcome == "rolled_back_by"]
    if links != [back_id]:
        problems.append(f"the forward run's rolled_back_by notes name {links}, not {back_id}")
    return problems


def check_resumed(sim: Sim, journal: Any, before: JournalView, resumed: Proc | None, *, expect: str,
                  effects: Effects, inflight: str | None = None, exact: bool = True) -> list[str]:
    """Every invariant of a resumed run (see the module docstring); `before` is the journal at the kill."""
    problems: list[str] = []
    summary: dict[str, Any] = {}
    if resumed is not None:
        summary = resumed.summary() or {}
        if resumed.popen.returncode != EXIT[expect]:
            problems.append(f"resume exited {resumed.popen.returncode}, expected {EXIT[expect]} ({expect}): "
                            f"{summary.get('message')!r} {resumed.err.read_text()[-1500:]}")
    after = read_journal(journal, before.run.id)
    assert after is not None
    m, m0 = after.migration, before.migration
    if (after.run.outcome, m.state) != (expect, expect):
        problems.append(f"journal says run {after.run.outcome}, store {m.state}; expected {expect}")
    # No journal event lost: everything the killed process committed is still there, unchanged, in order.
    seqs = [e.seq for e in after.events]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"seq not gap-free after the resume: {seqs}")
    if after.events[:len(before.events)] != before.events:
        problems.append("events committed before the kill changed or vanished")
    if resumed is not None:
        first = after.events[len(before.events)] if len(after.events) > len(before.events) else None
        if first is None or first.kind != "note" or (first.detail or {}).get("message") != "resumed":
            problems.append(f"the resume's first event is not its `resumed` note: {first}")
    # The window and its budget survive the crash (a rollback killed before it started its store's window starts
    # one when it is resumed: the store was `completed`, its disconnected_at the forward run's).
    if (m0 is not None and m0.disconnected_at is not None and m0.state != "completed"
            and m.disconnected_at != m0.disconnected_at):
        problems.append(f"disconnected_at moved from {m0.disconnected_at} to {m.disconnected_at}")
    if m.disconnected_at is None or m.verified_at is None or m.window_seconds is None:
        problems.append(f"window not recorded: {m.disconnected_at=} {m.verified_at=} {m.window_seconds=}")
    else:
        measured = (m.verified_at - m.disconnected_at) * sim.time_scale
        if abs(measured - m.window_seconds) > 0.01:
            problems.append(f"window_seconds {m.window_seconds} is not measured from disconnected_at "
                            f"({measured:.3f})")
        reported = (summary.get("keystores") or [{}])[0].get("disconnected_seconds", m.window_seconds)
        if reported != m.window_seconds:
            problems.append(f"the resume reported a window of {reported}, the journal {m.window_seconds}")
    # The live store is what the journal says.
    live = sim.describe(m.keystore_id)
    live_config = {LIVE_KEYS[k]: v for k, v in live.get("XksProxyConfiguration", {}).items() if k in LIVE_KEYS}
    live_config = {k: live_config.get(k) or "" for k in CONFIG_KEYS}
    snapshot = {k: (m.snapshot or {}).get(k) or "" for k in CONFIG_KEYS}
    want = snapshot if expect == "rolled_back" else {
        **snapshot, **{k: v for k, v in (m.target or {}).items() if k in CONFIG_KEYS}}
    if live.get("ConnectionState") != "CONNECTED" or live_config != want:
        problems.append(f"live store {live.get('ConnectionState')} {live_config}, journal says {expect} {want}")
    if summary.get("keystores"):
        reported = summary["keystores"][0].get("final") or {}
        final = {k: reported.get(k) or "" for k in CONFIG_KEYS}
        owner = live.get("XksProxyConfiguration", {}).get("VpcEndpointServiceOwner") or ""
        if final != live_config or (reported.get("vpc_endpoint_service_owner") or "") != owner:
            problems.append(f"the resume reported final {reported}, AWS has {live_config} (owner {owner!r})")
    # Side effects happened once (see the module docstring for what a random kill may add).
    problems += effects_problems(Effects.of(sim.log(), m.keystore_id), effects, inflight, exact)
    return problems
