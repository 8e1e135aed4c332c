"""Issue 10: a resume re-derives everything from the journal; the default journal; local safety.

Findings 3 (one default journal per user), 5 (resume keeps the run's hooks), 6 (a flag file deleted while
no runner watched does not release the cut-over), 9 (relative extra_trusted_roots resume from anywhere),
14 (another endpoint or account is refused before any change), 18 (a second SIGTERM still exits 130),
19 (insecure hooks, private journal files, terminal escapes), 20 (read-only journals, limits), 22 (the
real reason of a missing secret; --json errors are JSON). Everything goes through the CLI against
`sim serve` in its own process; the world's own log is the witness of which changing calls were made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import CLI, MUTATING, PLAN, WORLD, Proc, Sim, kill_leftovers, spawn, tool_env

pytestmark = pytest.mark.slow  # every case drives the CLI against sim serve in subprocesses: the full tier

STORE = "cks-1234567890abcdef0"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    kill_leftovers()


# -- plumbing ---------------------------------------------------------------------------------------
class PortSim(Sim):
    """`sim serve` on a chosen port (a second world can take over the first one's endpoint URL)."""

    def __init__(self, workdir: Path, world: Path = WORLD, port: int = 0, name: str = "sim"):
        args = [*CLI, "sim", "serve", "--world", str(world), "--port", str(port)]
        self.stderr = open(workdir / f"{name}.stderr", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL,
                                     text=True, env=tool_env(), cwd=workdir)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.stop()
            raise RuntimeError(f"sim serve did not start: {(workdir / f'{name}.stderr').read_text()[-2000:]}")
        info = json.loads(line)
        self.endpoint_url, self.region = info["endpoint_url"], info["region"]
        self.time_scale, self.ca_bundle = float(info["time_scale"]), info["ca_bundle"]


def slow_world(workdir: Path, disconnect: int = 6000) -> Path:
    """The crash world with a disconnect that takes `disconnect` simulated seconds (10 real s at 600x)."""
    path = workdir / "slow-world.toml"
    path.write_text(WORLD.read_text().replace("\ndisconnect = 120", f"\ndisconnect = {disconnect}"))
    return path


def changes(sim: Sim) -> list[str]:
    """The successful Disconnect/Update/Connect calls the world saw, in order."""
    return [e["operation"] for e in sim.log()
            if e.get("kind") == "call" and e.get("operation") in MUTATING and not e.get("error")]


def cli(args: list[str], cwd: Path, **env: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=tool_env(**env), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def sim_args(sim: Sim, state_url: str | None) -> list[str]:
    args = ["--yes", "--json", "--endpoint-url", sim.endpoint_url, "--time-scale", f"{sim.time_scale:g}"]
    return args + (["--state", state_url] if state_url else [])


def is_postponed(line: dict[str, Any]) -> bool:
    return line.get("kind") == "note" and line.get("outcome") == "postponed"


def is_disconnecting(line: dict[str, Any]) -> bool:
    return line.get("kind") == "note" and (line.get("detail") or {}).get("connection_state") == "DISCONNECTING"


def run_id_of(proc: Proc) -> str:
    return str(next(line["run_id"] for line in proc.lines() if line.get("run_id")))


def killed_while(proc: Proc, predicate: Any) -> str:
    """SIGKILL `proc` once a JSON line satisfies `predicate`; the run id."""
    assert proc.wait_for_line(predicate), proc.err.read_text()
    proc.popen.send_signal(signal.SIGKILL)
    proc.wait()
    return run_id_of(proc)


def hooks_dir(parent: Path, before_disconnect_exit: int = 1) -> Path:
    hooks = parent / "hooks"
    hooks.mkdir(mode=0o700)
    script = hooks / "before-disconnect"
    script.write_text(f"#!/bin/sh\necho 'change freeze: no disconnect today'\nexit {before_disconnect_exit}\n")
    script.chmod(0o700)
    return hooks


def wait_until(what: str, condition: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# -- 5: a resume runs the hooks the run was started with --------------------------------------------
def test_resume_runs_the_runs_hooks_so_a_failing_before_disconnect_still_stops_it(journal_url, tmp_path):
    hooks = hooks_dir(tmp_path)
    flag = tmp_path / "hold.flag"
    with Sim(tmp_path) as sim:
        run = spawn(["run", str(PLAN), *sim_args(sim, journal_url), "--hooks", str(hooks),
                     "--postpone-flag-file", str(flag)], tmp_path, "run")
        run_id = killed_while(run, is_postponed)
        assert cli(["proceed", run_id, "--state", journal_url], tmp_path).returncode == 0

        resumed = spawn(["resume", run_id, *sim_args(sim, journal_url)], tmp_path, "resume")  # no --hooks
        code = resumed.wait()
        summary = resumed.summary() or {}
        assert code == 3, resumed.err.read_text()
        assert "before-disconnect" in summary["keystores"][0]["error"], summary
        assert changes(sim) == [], "the resume disconnected although the run's before-disconnect hook failed"


# -- 6: a flag file deleted while no runner watched does not release the cut-over ---------------------
def test_a_flag_file_deleted_while_the_tool_was_dead_does_not_release_the_cutover(journal_url, tmp_path):
    flag = tmp_path / "hold.flag"
    with Sim(tmp_path) as sim:
        run = spawn(["run", str(PLAN), *sim_args(sim, journal_url), "--postpone-flag-file", str(flag)],
                    tmp_path, "run")
        run_id = killed_while(run, is_postponed)
        flag.unlink()  # /tmp cleaned, or a colleague tidying up: nobody released the cut-over

        resumed = spawn(["resume", run_id, *sim_args(sim, journal_url)], tmp_path, "resume")
        assert resumed.wait_for_line(lambda line: line.get("outcome") == "flag_recreated"), resumed.err.read_text()
        assert flag.exists(), "the resume did not recreate the flag file"
        assert resumed.popen.poll() is None and changes(sim) == [], "the resume went on to the disconnect"

        assert cli(["proceed", run_id, "--state", journal_url], tmp_path).returncode == 0
        assert resumed.wait() == 0, resumed.err.read_text()
        assert changes(sim)[0] == "DisconnectCustomKeyStore"


# -- 9: relative extra_trusted_roots are the plan directory's, resumable from anywhere -----------------
def test_relative_trusted_roots_resume_from_another_directory_while_disconnected(journal_url, tmp_path):
    with PortSim(tmp_path, slow_world(tmp_path, disconnect=1800)) as sim:
        plans = tmp_path / "plans"
        plans.mkdir()
        shutil.copy(sim.ca_bundle, plans / "ca.pem")
        plan = plans / "plan.toml"
        plan.write_text(PLAN.read_text().replace('poll_interval = "5s"',
                                                 'poll_interval = "5s"\nextra_trusted_roots = ["ca.pem"]'))
        run = spawn(["run", "plans/plan.toml", *sim_args(sim, journal_url)], tmp_path, "run")  # relative path
        run_id = killed_while(run, is_disconnecting)

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        resumed = spawn(["resume", run_id, *sim_args(sim, journal_url)], elsewhere, "resume")
        assert resumed.wait() == 0, resumed.err.read_text()
        assert (resumed.summary() or {}).get("outcome") == "completed"


# -- 14: another endpoint or another account is refused before any change ----------------------------
def test_resume_against_another_endpoint_is_refused_before_any_call(journal_url, tmp_path):
    with Sim(tmp_path) as first, PortSim(tmp_path, name="other") as other:
        run = spawn(["run", str(PLAN), *sim_args(first, journal_url), "--postpone-cutover"], tmp_path, "run")
        run_id = killed_while(run, is_postponed)
        assert cli(["proceed", run_id, "--state", journal_url], tmp_path).returncode == 0

        resumed = cli(["resume", run_id, *sim_args(other, journal_url)], tmp_path)
        assert resumed.returncode == 2, resumed.stderr
        assert first.endpoint_url in one_line(resumed.stderr) and other.endpoint_url in resumed.stderr
        assert changes(first) == [] and [e for e in other.log() if e.get("kind") == "call"] == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_resume_with_another_accounts_credentials_is_refused_before_any_change(journal_url, tmp_path):
    port = free_port()
    with PortSim(tmp_path, port=port) as first:
        run = spawn(["run", str(PLAN), *sim_args(first, journal_url), "--postpone-cutover"], tmp_path, "run")
        run_id = killed_while(run, is_postponed)
        assert cli(["proceed", run_id, "--state", journal_url], tmp_path).returncode == 0
    other_account = tmp_path / "other-account.toml"
    other_account.write_text(WORLD.read_text().replace('account_id = "111122223333"', 'account_id = "444455556666"'))
    with PortSim(tmp_path, other_account, port=port, name="other") as other:  # the same endpoint URL
        resumed = cli(["resume", run_id, *sim_args(other, journal_url)], tmp_path)
        assert resumed.returncode == 2, resumed.stderr
        line = one_line(resumed.stderr)
        assert "444455556666" in line and "111122223333" in line, line
        assert changes(other) == []


# -- 3 and 19: one private default journal per user, whatever the directory ---------------------------
def test_the_default_journal_is_one_per_user_so_a_second_directory_sees_the_lock(tmp_path):
    state_home = Path(os.environ["XDG_STATE_HOME"])
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir()
    bob.mkdir()
    with Sim(tmp_path) as sim:
        first = spawn(["run", str(PLAN), *sim_args(sim, None), "--postpone-cutover"], alice, "first")
        assert first.wait_for_line(is_postponed), first.err.read_text()
        second = cli(["run", str(PLAN), *sim_args(sim, None)], bob)
        assert second.returncode == 6, second.stderr
        assert changes(sim) == [], "a second operator changed the store the first one holds"
        first.popen.send_signal(signal.SIGTERM)
        assert first.wait() == 130
    journal = state_home / "xksmigrate" / "journal.db"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.parent.stat().st_mode) == 0o700
    for sidecar in journal.parent.glob("journal.db-*"):  # SQLite's -wal and -shm
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, sidecar
    assert not (alice / "state").exists() and not (bob / "state").exists()


def test_without_xdg_state_home_the_journal_is_under_home_and_an_old_one_is_named(tmp_path):
    from migrator.journal.repository import Journal

    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    Journal.open(f"sqlite:///{work}/state/xksmigrate.db").close()  # the old default of an older xksmigrate
    env = {k: v for k, v in tool_env().items() if k != "XDG_STATE_HOME"} | {"HOME": str(home)}
    proc = subprocess.run([*CLI, "unlock", "lk-none"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    journal = home / ".local" / "state" / "xksmigrate" / "journal.db"
    assert journal.is_file() and stat.S_IMODE(journal.stat().st_mode) == 0o600
    warning = next(line for line in proc.stderr.splitlines() if "warning" in line)
    assert f"--state sqlite:///{work}/state/xksmigrate.db" in warning, proc.stderr


def test_a_journal_named_with_state_is_created_private_too(tmp_path):
    with Sim(tmp_path) as sim:
        url = f"sqlite:///{tmp_path}/new/journals/j.db"
        assert cli(["run", str(PLAN), *sim_args(sim, url)], tmp_path).returncode == 0
    assert stat.S_IMODE((tmp_path / "new" / "journals").stat().st_mode) == 0o700
    for path in (tmp_path / "new" / "journals").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# -- 19: hooks other users may write; terminal escapes from AWS ----------------------------------------
@pytest.mark.parametrize("mode", [0o777, 0o770], ids=["world-writable", "group-writable"])
def test_hooks_other_users_may_write_are_refused_unless_allowed(mode, tmp_path):
    hooks = hooks_dir(tmp_path, before_disconnect_exit=0)
    hooks.chmod(mode)
    with Sim(tmp_path) as sim:
        url = f"sqlite:///{tmp_path}/journal.db"
        refused = cli(["run", str(PLAN), *sim_args(sim, url), "--hooks", str(hooks)], tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert str(hooks) in one_line(refused.stderr) and "--allow-insecure-hooks" in refused.stderr
        assert [e for e in sim.log() if e.get("kind") == "call"] == []
        allowed = cli(["run", str(PLAN), *sim_args(sim, url), "--hooks", str(hooks), "--allow-insecure-hooks"],
                      tmp_path)
        assert allowed.returncode == 0, allowed.stderr


def test_plan_shows_a_store_name_with_terminal_escapes_as_text(tmp_path):
    evil = "pay\x1b]0;owned\x07\x1b[2J\x9b31mments"
    with Sim(tmp_path) as sim:
        request = urllib.request.Request(f"{sim.endpoint_url}/_rehearsal/mutate", method="POST", data=json.dumps(
            {"kind": "keystore", "id": STORE, "set": {"name": evil}}).encode())
        urllib.request.urlopen(request, timeout=10).read()
        proc = cli(["plan", str(PLAN), "--endpoint-url", sim.endpoint_url], tmp_path)
    assert proc.returncode in (0, 3), proc.stderr
    assert "\\x1b]0;owned\\x07" in proc.stdout, proc.stdout  # shown, escaped
    assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout and "\x9b" not in proc.stdout


# -- 20: read-only journals; limits -------------------------------------------------------------------
def test_status_and_history_read_an_auditors_read_only_copy(tmp_path):
    with Sim(tmp_path) as sim:
        url = f"sqlite:///{tmp_path}/live/journal.db"
        done = spawn(["run", str(PLAN), *sim_args(sim, url)], tmp_path, "run")
        assert done.wait() == 0, done.err.read_text()
    run_id = run_id_of(done)
    audit = tmp_path / "audit"
    audit.mkdir()
    _backup(tmp_path / "live" / "journal.db", audit / "copy.db")
    (audit / "copy.db").chmod(0o444)
    audit.chmod(0o555)
    before = (audit / "copy.db").read_bytes()
    try:
        copy = f"sqlite:///{audit}/copy.db"
        status = cli(["status", run_id, "--state", copy], tmp_path)
        assert status.returncode == 0 and "completed" in status.stdout, status.stderr
        history = cli(["history", "--json", "--state", copy], tmp_path)
        assert history.returncode == 0, history.stderr
        assert [json.loads(x).get("run_id") for x in history.stdout.splitlines()][1:2] == [run_id]
        missing = cli(["history", "--state", f"sqlite:///{tmp_path}/nowhere/journal.db"], tmp_path)
        assert missing.returncode == 2 and "no journal" in one_line(missing.stderr)
        assert not (tmp_path / "nowhere").exists(), "a read-only command created a journal"
        assert sorted(p.name for p in audit.iterdir()) == ["copy.db"] and (audit / "copy.db").read_bytes() == before
    finally:
        audit.chmod(0o755)


def _backup(source: Path, target: Path) -> None:
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


@pytest.mark.parametrize("args", [["history", "--limit", "0"], ["history", "--limit", "-1"],
                                  ["status", "--timeout", "-5"]], ids=["limit-0", "limit-negative", "timeout"])
def test_limits_are_validated_in_one_line(args, journal_url, tmp_path):
    from migrator.journal.repository import Journal

    with Journal.open(journal_url) as journal:
        journal.create_run(plan_name="p", plan_path="p.toml", plan_text="", plan_fingerprint="f", region="us-east-1")
    proc = cli([*args, "--state", journal_url], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert args[1] in one_line(proc.stderr) and proc.stdout == ""


# -- 22: the real reason of a missing secret; --json errors are JSON --------------------------------------
def test_a_secret_missing_at_resume_is_named_in_the_rollback_reason(journal_url, tmp_path):
    from test_secrets_paths import canary, plan_toml, world_toml

    old, new = canary(), canary()
    world_file = tmp_path / "world.toml"
    world_file.write_text(world_toml(old, new, 30.0).replace("\ndisconnect = 30", "\ndisconnect = 600"))
    with PortSim(tmp_path, world_file) as sim:
        proxy_port = next(p["port"] for p in json.loads(urllib.request.urlopen(
            f"{sim.endpoint_url}/_rehearsal/state", timeout=10).read())["proxies"] if p["name"] == "payments-proxy")
        plan = tmp_path / "plan.toml"
        plan.write_text(plan_toml(_WorldFacts(sim.ca_bundle, proxy_port), "env:XKS_NEW_SECRET", "env:XKS_OLD_SECRET"))
        args = sim_args(sim, journal_url)
        with_both = tool_env(XKS_NEW_SECRET=new, XKS_OLD_SECRET=old)
        out, err = tmp_path / "run.stdout", tmp_path / "run.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen([*CLI, "run", str(plan), *args], stdout=fo, stderr=fe, cwd=tmp_path,
                                     env=with_both, stdin=subprocess.DEVNULL)
        run = Proc(popen, out, err, time.monotonic())
        run_id = killed_while(run, is_disconnecting)

        resumed = subprocess.run([*CLI, "resume", run_id, *args], cwd=tmp_path, capture_output=True, text=True,
                                 env=tool_env(XKS_OLD_SECRET=old), timeout=120, stdin=subprocess.DEVNULL)
        assert resumed.returncode == 4, resumed.stderr
        summary = json.loads(resumed.stdout.splitlines()[-1])
        reason = summary["keystores"][0]["error"]
        assert "internal error" not in reason and "env:XKS_NEW_SECRET" in reason and "not set" in reason, reason
        assert "UpdateCustomKeyStore" not in changes(sim), "nothing to restore: the update never happened"


class _WorldFacts:
    """What test_secrets_paths.plan_toml reads of its world."""

    def __init__(self, ca_bundle: str, proxy_port: int):
        self.ca_bundle, self.proxy_port = ca_bundle, proxy_port


@pytest.mark.parametrize("args", [["resume", "run-nope", "--json"], ["history", "--json", "--limit", "0"],
                                  ["run", "no-such-plan.toml", "--json", "--yes"], ["status", "--json", "--bogus"]],
                         ids=["unknown-run", "bad-limit", "missing-plan", "usage"])
def test_command_line_errors_with_json_are_json_on_stdout(args, tmp_path):
    proc = cli([*args, "--state", f"sqlite:///{tmp_path}/journal.db"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["version", "summary"], proc.stdout
    assert lines[0]["command"] == args[0]
    assert lines[1]["exit_code"] == 2 and lines[1]["outcome"] == "error" and lines[1]["message"]
    assert proc.stderr.strip(), "the one-line message belongs on stderr too"


# -- 18: a second SIGTERM during shutdown ------------------------------------------------------------
def test_a_second_sigterm_during_shutdown_still_exits_130(tmp_path):
    world = slow_world(tmp_path, disconnect=1800)
    for attempt in range(3):  # each in a fresh world: the store the last attempt left DISCONNECTED is not ours
        with Sim(tmp_path, world=world) as sim:
            url = f"sqlite:///{tmp_path}/journal-{attempt}.db"
            proc = spawn(["run", str(PLAN), *sim_args(sim, url)], tmp_path, f"run-{attempt}")
            assert proc.wait_for_line(is_disconnecting), proc.err.read_text()
            while proc.popen.poll() is None:  # the operator insists: SIGTERM until it is gone
                proc.popen.send_signal(signal.SIGTERM)
                time.sleep(0.002)
            assert proc.popen.returncode == 130, (attempt, proc.popen.returncode, proc.err.read_text()[-1000:])
