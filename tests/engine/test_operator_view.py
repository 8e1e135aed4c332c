"""What the operator sees and what a command touches (issue 11): rehearsal isolation, declining, no-op plans, the view.

Every test drives the real CLI as a subprocess: against `sim serve` in its own process (crash_helpers.Sim),
or with `--dry-run`. Prompts are answered through a pseudo-terminal (the `pty` module), so the tool sees a
terminal exactly as an operator's shell gives it one, and Ctrl-C is the terminal's own SIGINT.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import (
    CLI,
    PLAN,
    WORLD,
    Sim,
    kill_leftovers,
    read_journal,
    rollback_run_of,
    run_to_completion,
    tool_env,
)
from engine_helpers import mutating_calls, roomy_plan_file

pytestmark = pytest.mark.slow  # a whole rehearsed migration (or CLI processes) per case: the full tier

STORE = "cks-1234567890abcdef0"
HUNG = 120.0


@pytest.fixture(autouse=True)
def _no_leftovers() -> Any:
    yield
    kill_leftovers()


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The tool with a clean environment (tool_env) plus `env`; the per-test XDG_STATE_HOME is kept."""
    extra = {"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"], **(env or {})}
    return subprocess.run([*CLI, *args], cwd=cwd, env=tool_env(**extra), text=True, capture_output=True,
                          timeout=HUNG, stdin=subprocess.DEVNULL)


def journal_snapshot(url: str) -> Any:
    """What a journal holds, to compare before/after: a SQLite file's bytes (and its -wal/-shm), else its runs."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return {suffix: (Path(f"{path}{suffix}").read_bytes() if Path(f"{path}{suffix}").exists() else None)
                for suffix in ("", "-wal", "-shm")}
    from migrator.journal.repository import Journal

    with Journal.open(url) as journal:
        return [(r.id, r.outcome, len(journal.events(r.id))) for r in journal.list_runs()]


# -- 1. rehearsal isolation ---------------------------------------------------------------------------
def test_dry_run_never_writes_the_journal_named_by_XKSMIGRATE_STATE(tmp_path, journal_url):
    from migrator.journal.repository import Journal

    Journal.open(journal_url).close()  # a real journal, as a real run would leave it
    before = journal_snapshot(journal_url)
    plan = roomy_plan_file(tmp_path)

    done = cli("run", str(plan), "--dry-run", "--yes", "--time-scale", "600", cwd=tmp_path,
               env={"XKSMIGRATE_STATE": journal_url})

    assert done.returncode == 0, done.stdout + done.stderr
    assert journal_snapshot(journal_url) == before
    rehearsal = Path(os.environ["XDG_STATE_HOME"]) / "xksmigrate" / "rehearsal.db"
    view = read_journal(f"sqlite:///{rehearsal}")
    assert view is not None and view.run.dry_run and view.run.outcome == "completed"


def test_dry_run_records_in_the_journal_given_with_state_on_its_command_line(tmp_path):
    plan = roomy_plan_file(tmp_path)
    mine = f"sqlite:///{tmp_path}/mine.db"

    done = cli("run", str(plan), "--dry-run", "--yes", "--time-scale", "600", "--state", mine, cwd=tmp_path,
               env={"XKSMIGRATE_STATE": f"sqlite:///{tmp_path}/real.db"})

    assert done.returncode == 0, done.stdout + done.stderr
    view = read_journal(mine)
    assert view is not None and view.run.dry_run
    assert not (tmp_path / "real.db").exists()


def test_XKSMIGRATE_STATE_still_names_the_journal_of_other_commands(tmp_path, journal_url):
    from migrator.journal.repository import Journal

    Journal.open(journal_url).close()
    done = cli("history", "--json", cwd=tmp_path, env={"XKSMIGRATE_STATE": journal_url})

    assert done.returncode == 0, done.stderr
    assert not (Path(os.environ["XDG_STATE_HOME"]) / "xksmigrate" / "journal.db").exists()


# -- 2. declining is an outcome -----------------------------------------------------------------------
class Terminal:
    """The tool on a pseudo-terminal: its controlling terminal, so Ctrl-C (0x03) is SIGINT to it."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a terminal's foreground job gets Ctrl-C with the default handler
            try:
                os.chdir(cwd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execve(sys.executable, [sys.executable, *args], env)
            finally:
                os._exit(127)
        self.output = b""

    def read_until(self, pattern: bytes, timeout: float = HUNG) -> bytes:
        deadline = time.monotonic() + timeout
        while pattern not in self.output:
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                raise AssertionError(f"no {pattern!r} on the terminal: {self.output[-2000:]!r}")
        return self.output

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.output += chunk
        return bool(chunk)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()) and time.monotonic() < deadline:
            pass
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack onto the terminal
        end = time.monotonic() + 5
        while self._read(end - time.monotonic()) and time.monotonic() < end:
            pass
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"the tool hung: {self.text[-6000:]}")

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")


def _run_on_terminal(sim: Sim, tmp_path: Path, state: str) -> Terminal:
    env = tool_env(XDG_STATE_HOME=os.environ["XDG_STATE_HOME"], TERM="xterm", COLUMNS="120", LINES="40",
                   PYTHONFAULTHANDLER="1")
    return Terminal(["-m", "migrator.cli", "run", str(PLAN), "--endpoint-url", sim.endpoint_url, "--time-scale",
                     f"{sim.time_scale:g}", "--state", state], tmp_path, env)


@pytest.mark.parametrize("answer", [b"n\r", b"\x03"], ids=["n", "ctrl-c"])
def test_declining_the_disconnect_ends_the_run_blocked_with_nothing_changed(tmp_path, journal_url, answer):
    with Sim(tmp_path, WORLD) as sim:
        term = _run_on_terminal(sim, tmp_path, journal_url)
        term.read_until(b"[y/N]")
        term.send(answer)
        code = term.wait()
        log = sim.log()

    assert code == 3, term.text
    view = read_journal(journal_url)
    assert view is not None and view.run.outcome == "blocked"
    assert "declined" in (view.migration.error or ""), view.migration.error
    assert not mutating_calls(log)
    prompt_line = next(line for line in term.text.splitlines() if "[y/N]" in line)
    assert re.search(r"\[y/N\]:\s*(n|\^C)?\s*$", prompt_line), prompt_line  # nothing glued to the prompt
    assert term.text.endswith("\n"), term.text[-200:]  # the shell prompt starts on a line of its own
    assert f"run {view.run.id}: key store {STORE}" in term.text  # the live view names the run first
    status = cli("status", view.run.id, "--state", journal_url, cwd=tmp_path)
    assert "blocked" in status.stdout, status.stdout + status.stderr


def test_declining_an_operator_rollback_ends_its_own_run_blocked_and_leaves_the_run_untouched(tmp_path,
                                                                                              journal_url):
    with Sim(tmp_path, WORLD) as sim:
        run_id = run_to_completion(sim, journal_url, tmp_path)
        before = read_journal(journal_url, run_id)
        calls = mutating_calls(sim.log())
        env = tool_env(XDG_STATE_HOME=os.environ["XDG_STATE_HOME"], TERM="xterm", COLUMNS="120", LINES="40")
        term = Terminal(["-m", "migrator.cli", "rollback", run_id, "--endpoint-url", sim.endpoint_url,
                         "--time-scale", f"{sim.time_scale:g}", "--state", journal_url], tmp_path, env)
        term.read_until(b"[y/N]")
        term.send(b"n\r")
        code = term.wait()
        log = sim.log()

    assert code == 3, term.text
    assert mutating_calls(log) == calls
    back = read_journal(journal_url, rollback_run_of(journal_url, run_id))
    assert back is not None and (back.run.outcome, back.run.exit_code, back.migration.state) == ("blocked", 3,
                                                                                                 "blocked")
    assert "declined" in (back.migration.error or ""), back.migration.error
    after = read_journal(journal_url, run_id)
    assert after is not None and before is not None
    assert (after.run, after.events) == (before.run, before.events)  # no `rolled_back_by`: nothing was undone


# -- 3. a no-op plan ------------------------------------------------------------------------------------
NO_OP_PLAN = """
[plan]
name = "already-public"
region = "us-east-1"
max_disconnected = "1h"
poll_interval = "5s"

[[keystores]]
id = "cks-1234567890abcdef0"

[keystores.target]
connectivity = "PUBLIC_ENDPOINT"
uri_endpoint = "https://myproxy.xks.example.com"

[keystores.verify]
key_ids = []
"""


def test_a_plan_whose_target_is_the_current_configuration_says_no_changes_and_exits_0(tmp_path):
    plan = tmp_path / "no-op.toml"
    plan.write_text(NO_OP_PLAN)
    with Sim(tmp_path, WORLD) as sim:
        human = cli("plan", str(plan), "--endpoint-url", sim.endpoint_url, "--state",
                    f"sqlite:///{tmp_path}/j.db", cwd=tmp_path)
        machine = cli("plan", str(plan), "--json", "--endpoint-url", sim.endpoint_url, "--state",
                      f"sqlite:///{tmp_path}/j.db", cwd=tmp_path)
        log = sim.log()

    assert human.returncode == 0, human.stdout + human.stderr
    assert "No changes: the key store already has the target configuration" in human.stdout
    assert "The run will call" not in human.stdout and "DisconnectCustomKeyStore" not in human.stdout
    assert machine.returncode == 0, machine.stderr
    summary = json.loads(machine.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["exit_code"] == 0 and summary["changes"] is False
    assert all(ks["calls"] == [] and ks["rollback"] == [] for ks in summary["keystores"])
    assert not mutating_calls(log)


def test_running_a_no_op_plan_ends_no_changes_exit_0_everywhere(tmp_path):
    plan = tmp_path / "no-op.toml"
    plan.write_text(NO_OP_PLAN)
    state = f"sqlite:///{tmp_path}/j.db"
    with Sim(tmp_path, WORLD) as sim:
        done = cli("run", str(plan), "--json", *_sim_args(sim, state), cwd=tmp_path)
        text = cli("run", str(plan), *_sim_args(sim, state), cwd=tmp_path)
        log = sim.log()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert (summary["outcome"], summary["exit_code"]) == ("no_changes", 0)
    assert summary["message"].startswith("No changes: the key store already has the target configuration")
    assert [(ks["state"], ks["outcome"], ks["window_seconds"]) for ks in summary["keystores"]] == [
        ("blocked", "no_changes", None)]
    assert text.returncode == 0 and "No changes: the key store already has the target configuration" in text.stdout
    assert not mutating_calls(log)

    status = cli("status", summary["run_id"], "--json", "--state", state, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout.splitlines()[-1])
    assert (shown["outcome"], shown["exit_code"], shown["message"]) == ("no_changes", 0, summary["message"])
    listed = cli("history", "--json", "--state", state, cwd=tmp_path).stdout
    history = [json.loads(line) for line in listed.splitlines()]
    assert [(r["outcome"], r["exit_code"]) for r in history if r.get("type") == "run"] == [("no_changes", 0)] * 2


def test_a_plan_that_changes_the_store_still_lists_its_calls(tmp_path):
    with Sim(tmp_path, WORLD) as sim:
        done = cli("plan", str(PLAN), "--endpoint-url", sim.endpoint_url, "--state", f"sqlite:///{tmp_path}/j.db",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes" not in done.stdout and "The run will call" in done.stdout



# -- 4. the view ------------------------------------------------------------------------------------------
def _sim_args(sim: Sim, state: str) -> list[str]:
    return ["--yes", "--endpoint-url", sim.endpoint_url, "--time-scale", f"{sim.time_scale:g}", "--state", state]


def test_run_and_resume_name_the_run_and_its_store_first_and_label_simulated_windows(tmp_path, journal_url):
    from crash_helpers import spawn

    with Sim(tmp_path, WORLD) as sim:
        killed = spawn(["run", str(PLAN), *_sim_args(sim, journal_url)], tmp_path, "run", kill_after=8)
        killed.wait()
        view = read_journal(journal_url)
        assert view is not None and view.run.outcome == "running", killed.err.read_text()[-2000:]
        resumed = cli("resume", view.run.id, *_sim_args(sim, journal_url), cwd=tmp_path)

    headline = f"run {view.run.id}: key store {STORE}"
    first = killed.out.read_text().splitlines()[0]
    assert first.endswith(headline), first
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    lines = resumed.stdout.splitlines()
    assert lines[0].endswith(headline), lines[:3]
    assert sum(headline in line for line in lines) == 1
    windows = [line for line in lines if "(window " in line]
    assert windows and all("simulated)" in line for line in windows), windows


def test_sim_serve_prints_the_export_line_for_the_tool_after_its_json_line(tmp_path):
    with Sim(tmp_path, WORLD) as sim:
        deadline = time.monotonic() + 30
        while "export " not in (tmp_path / "sim.stderr").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        stderr = (tmp_path / "sim.stderr").read_text()
        endpoint, scale = sim.endpoint_url, sim.time_scale
    assert f"export AWS_ENDPOINT_URL={endpoint} XKSMIGRATE_TIME_SCALE={scale:g}\n" in stderr, stderr


def test_version_prints_the_package_version(tmp_path):
    from migrator import __version__

    done = cli("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"xksmigrate {__version__}\n"), done.stderr


@pytest.mark.parametrize("command", ["run", "plan", "resume", "status", "history"])
def test_the_state_default_is_in_help(tmp_path, command):
    done = cli(command, "--help", cwd=tmp_path)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "--state" in text and "[default: sqlite:///$XDG_STATE_HOME/xksmigrate/journal.db" in text, text


# -- 5. --json where README says so --------------------------------------------------------------------------
def test_proceed_and_unlock_answer_in_ndjson(tmp_path, journal_url):
    from crash_helpers import spawn

    with Sim(tmp_path, WORLD) as sim:
        killed = spawn(["run", str(PLAN), *_sim_args(sim, journal_url)], tmp_path, "run", kill_after=8)
        killed.wait()
    view = read_journal(journal_url)
    assert view is not None and view.run.outcome == "running"

    released = cli("proceed", view.run.id, "--json", "--state", journal_url, cwd=tmp_path)
    unknown = cli("unlock", "lock-nosuch", "--json", "--state", journal_url, cwd=tmp_path)

    assert released.returncode == 0, released.stderr
    lines = [json.loads(line) for line in released.stdout.splitlines()]
    assert [d["type"] for d in lines] == ["version", "summary"]
    assert (lines[1]["outcome"], lines[1]["run_id"], lines[1]["exit_code"]) == ("released", view.run.id, 0)
    assert unknown.returncode == 2, unknown.stderr
    lines = [json.loads(line) for line in unknown.stdout.splitlines()]
    assert [d["type"] for d in lines] == ["version", "summary"] and lines[1]["outcome"] == "error"
