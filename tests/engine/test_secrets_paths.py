"""A canary proxy secret through every path but the plain env: run (that one is test_canary.py).

Each case runs the installed `xksmigrate` against `xksmigrate sim serve --world W --log L` (a separate
process, as an operator's rehearsal does): the plan changes the proxy credential, so both the new and the
old secret are canaries, resolved from file:, secretsmanager: (served by the world), or env:. Afterwards
neither canary may appear in stdout, stderr, the journal database file (+ -wal/-shm), any journal row,
`status`/`history --json`, or the world's own log file (the world logs every request it receives).
The world file itself holds both canaries, and the same search finds them there: the search can fail.

Paths: file: with --json (completes), secretsmanager: (completes), a wrong secret (preflight proxy.auth
blocks, exit 3), a forced rollback that restores the old credential (exit 4), and a crash with a
traceback (XKSMIGRATE_DEBUG=1; the journal's events table renamed from outside mid-window), which must
also show no local variables. The CLI has no verbose/log-level option, so there is no log file to check
beyond the world's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import REPO

pytestmark = pytest.mark.slow  # each case runs the CLI in subprocesses: the full tier

_SCRIPT = Path(sys.executable).with_name("xksmigrate")
XKSMIGRATE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "migrator.cli"]
OLD_KEY, NEW_KEY = "XKSPROXYACCESSKEY2345", "XKSPROXYNEWACCESSKEY7"
STORE = "cks-1234567890abcdef0"
TIME_SCALE = 60.0
MUTATING = ("DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore")


def canary() -> str:
    """A valid RawSecretAccessKey (44 characters of base64) that exists nowhere else."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class World:
    endpoint_url: str
    ca_bundle: str
    log: Path
    file: Path
    proxy_port: int
    process: subprocess.Popen[str]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.endpoint_url}{path}", timeout=10) as response:
            body = response.read().decode()
        return json.loads(body) if path != "/_rehearsal/log" else [json.loads(x) for x in body.splitlines() if x]

    def store(self) -> dict[str, Any]:
        return next(s for s in self.get("/_rehearsal/state")["keystores"] if s["id"] == STORE)

    def calls(self) -> list[str]:
        return [e["operation"] for e in self.get("/_rehearsal/log") if e.get("kind") == "call"]

    def advance(self, seconds: float) -> None:
        request = urllib.request.Request(f"{self.endpoint_url}/_rehearsal/clock", method="POST",
                                         data=json.dumps({"advance": seconds}).encode())
        urllib.request.urlopen(request, timeout=10).read()


def world_toml(old: str, new: str, connect: float) -> str:
    """plans/worlds/public-to-vpc.toml with the old canary in use and the new one also accepted."""
    text = (REPO / "plans" / "worlds" / "public-to-vpc.toml").read_text()
    old_secret = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="
    assert text.count(old_secret) == 2
    text = text.replace(f'{{ access_key_id = "{OLD_KEY}", secret = "{old_secret}" }},',
                        f'{{ access_key_id = "{OLD_KEY}", secret = "{old}" }},\n'
                        f'  {{ access_key_id = "{NEW_KEY}", secret = "{new}" }},')
    text = text.replace(old_secret, old)
    text = re.sub(r"(?m)^connect = \d+", f"connect = {connect:g}", text)
    text = re.sub(r"(?m)^disconnect = \d+", "disconnect = 30", text)
    text = re.sub(r"(?m)^time_scale = [\d.]+", f"time_scale = {TIME_SCALE}", text)
    return text + (f'\n[[secrets]]\nname = "xks/new"\nvalue = "{new}"\n'
                   f'\n[[secrets]]\nname = "xks/old"\nvalue = "{old}"\n')


@pytest.fixture
def sim_world(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(old: str, new: str, *, connect: float = 30.0, faults: str | None = None) -> World:
        world_file = tmp_path / "world.toml"
        world_file.write_text(world_toml(old, new, connect))
        log = tmp_path / "world-log.jsonl"
        args = [*XKSMIGRATE, "sim", "serve", "--world", str(world_file), "--port", "0", "--log", str(log)]
        if faults:
            (tmp_path / "faults.toml").write_text(faults)
            args += ["--faults", str(tmp_path / "faults.toml")]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else ""
        info = json.loads(line)
        world = World(info["endpoint_url"], info["ca_bundle"], log, world_file, 0, proc)
        world.proxy_port = next(p["port"] for p in world.get("/_rehearsal/state")["proxies"]
                                if p["name"] == "payments-proxy")
        return world

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=20)


def plan_toml(world: World, new_ref: str, old_ref: str) -> str:
    return f"""
[plan]
name = "canary"
region = "us-east-1"
max_disconnected = "1h"   # at scale 60 the 15-minute budget is 5 real seconds of slack on a loaded machine
poll_interval = "5s"
extra_trusted_roots = ["{world.ca_bundle}"]

[[keystores]]
id = "{STORE}"
probe = "127.0.0.1:{world.proxy_port}"

[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://myproxy-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"

[keystores.target.credential]
access_key_id = "{NEW_KEY}"
secret = "{new_ref}"

[keystores.original_credential]
secret = "{old_ref}"
"""


def sm_arn(name: str) -> str:
    return f"secretsmanager:arn:aws:secretsmanager:us-east-1:111122223333:secret:{name}"


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIAREHEARSAL0000000", AWS_SECRET_ACCESS_KEY="rehearsal",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               HOME=str(tmp_path))
    env.update(extra)
    return env


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XKSMIGRATE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def run_args(plan: Path, world: World, state: str, *more: str) -> list[str]:
    return ["run", str(plan), "--yes", "--state", state, "--endpoint-url", world.endpoint_url,
            "--time-scale", str(TIME_SCALE), *more]


def journal_dump(url: str) -> str:
    """Every row of every journal table, as text (the second look, after the raw file bytes)."""
    from sqlalchemy import MetaData, create_engine, select

    from migrator.journal.db import parse_url

    engine = create_engine(parse_url(url)[0])
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        text = "\n".join(repr(row) for table in meta.sorted_tables for row in conn.execute(select(table)))
    engine.dispose()
    return text


def assert_absent(canaries: list[str], *, world: World, state_url: str, texts: dict[str, str], env: dict[str, str],
                  cwd: Path) -> None:
    texts = dict(texts)
    for command in (["status", "--json"], ["history", "--json"]):
        proc = cli([*command, "--state", state_url], env, cwd)
        assert proc.returncode in ((0, 3, 4, 5, 124, 130) if command[0] == "status" else (0,)), proc.stderr
        texts[" ".join(command)] = proc.stdout + proc.stderr
    texts["journal rows"] = journal_dump(state_url)
    assert "canary" in texts["journal rows"]  # the plan's name: the dump saw the runs table
    texts["world log file"] = world.log.read_text()
    assert '"operation": "DescribeCustomKeyStores"' in texts["world log file"]
    if state_url.startswith("sqlite:///"):
        db = Path(state_url.removeprefix("sqlite:///"))
        assert db.exists()
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(f"{db}{suffix}")
            if path.exists():
                texts[path.name] = path.read_bytes().decode("latin-1")
    world_file = world.file.read_text()
    assert canaries[0] in world_file and canaries[1] in world_file  # the search below can find a canary
    for value in canaries:
        for where, text in texts.items():
            for form in {value, value.replace("/", "\\/"), json.dumps(value)[1:-1]}:
                assert form not in text, f"a canary secret leaked into {where}"


@pytest.fixture
def state_url(journal_url: str) -> str:
    return journal_url


# -- the paths ---------------------------------------------------------------------------------------

def test_file_references_with_json_output(sim_world, tmp_path, state_url):
    old, new = canary(), canary()
    world = sim_world(old, new)
    (tmp_path / "new.secret").write_text(new + "\n")
    (tmp_path / "old.secret").write_text(old)
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_toml(world, f"file:{tmp_path}/new.secret", f"file:{tmp_path}/old.secret"))
    env = base_env(tmp_path)

    proc = cli(run_args(plan, world, state_url, "--json"), env, tmp_path)

    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr)
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines[0]["type"] == "version" and lines[-1]["outcome"] == "completed"
    assert world.store()["access_key_id"] == NEW_KEY and world.store()["state"] == "CONNECTED"
    assert_absent([old, new], world=world, state_url=state_url, texts={"stdout": proc.stdout, "stderr": proc.stderr},
                  env=env, cwd=tmp_path)


def test_secrets_manager_references_served_by_the_world(sim_world, tmp_path, state_url):
    old, new = canary(), canary()
    world = sim_world(old, new)
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_toml(world, sm_arn("xks/new"), sm_arn("xks/old")))
    env = base_env(tmp_path)

    proc = cli(run_args(plan, world, state_url), env, tmp_path)

    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr)
    assert "GetSecretValue" in world.calls()  # resolved through the world's Secrets Manager
    assert world.store()["access_key_id"] == NEW_KEY and world.store()["state"] == "CONNECTED"
    assert_absent([old, new], world=world, state_url=state_url, texts={"stdout": proc.stdout, "stderr": proc.stderr},
                  env=env, cwd=tmp_path)


def test_a_wrong_secret_is_blocked_by_the_proxy_probe(sim_world, tmp_path):
    old, new, wrong = canary(), canary(), canary()
    world = sim_world(old, new)
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_toml(world, "env:XKS_NEW_SECRET", "env:XKS_OLD_SECRET"))
    env = base_env(tmp_path, XKS_NEW_SECRET=wrong, XKS_OLD_SECRET=old)
    state = f"sqlite:///{tmp_path}/state/journal.db"

    for extra in ((), ("--json",)):
        proc = cli(run_args(plan, world, state, *extra), env, tmp_path)
        assert proc.returncode == 3, (proc.stdout[-2000:], proc.stderr)
        assert "proxy.auth" in proc.stdout + proc.stderr
        assert_absent([old, new, wrong], world=world, state_url=state,
                      texts={"stdout": proc.stdout, "stderr": proc.stderr}, env=env, cwd=tmp_path)
    assert not [c for c in world.calls() if c in MUTATING]  # blocked: nothing changed
    assert world.store()["access_key_id"] == OLD_KEY


def test_a_rollback_restores_the_old_credential(sim_world, tmp_path, state_url):
    old, new = canary(), canary()
    faults = ('[[faults]]\noperation = "ConnectCustomKeyStore"\n'
              'connection_error_code = "XKS_PROXY_INVALID_CONFIGURATION"\ncount = 1\n')
    world = sim_world(old, new, faults=faults)
    (tmp_path / "new.secret").write_text(new)
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_toml(world, f"file:{tmp_path}/new.secret", sm_arn("xks/old")))
    env = base_env(tmp_path)

    proc = cli(run_args(plan, world, state_url, "--json"), env, tmp_path)

    assert proc.returncode == 4, (proc.stdout[-3000:], proc.stderr)
    assert json.loads(proc.stdout.splitlines()[-1])["outcome"] == "rolled_back"
    assert [c for c in world.calls() if c in MUTATING].count("UpdateCustomKeyStore") == 2
    store = world.store()
    assert (store["access_key_id"], store["connectivity"], store["state"]) == (OLD_KEY, "PUBLIC_ENDPOINT", "CONNECTED")
    assert_absent([old, new], world=world, state_url=state_url, texts={"stdout": proc.stdout, "stderr": proc.stderr},
                  env=env, cwd=tmp_path)


def test_a_crash_with_a_traceback_shows_no_secret_and_no_locals(sim_world, tmp_path):
    old, new = canary(), canary()
    world = sim_world(old, new, connect=3000.0)  # 50 real seconds CONNECTING unless the world clock is advanced
    (tmp_path / "old.secret").write_text(old)
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_toml(world, "env:XKS_NEW_SECRET", f"file:{tmp_path}/old.secret"))
    env = base_env(tmp_path, XKS_NEW_SECRET=new, XKSMIGRATE_DEBUG="1", COLUMNS="200")
    db = tmp_path / "state" / "journal.db"
    state = f"sqlite:///{db}"

    proc = subprocess.Popen([*XKSMIGRATE, *run_args(plan, world, state)], env=env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while world.store()["state"] != "CONNECTING":
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=10)
            time.sleep(0.05)
        # From outside, mid-window: the journal loses its events table, so the next write fails.
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            conn.execute("ALTER TABLE events RENAME TO events_gone")
            conn.commit()
        world.advance(3000.0)  # the connect finishes, so the engine journals its next step at once
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 1, (out[-2000:], err[-4000:])
    assert "Traceback" in err and "events" in err, err[-4000:]
    # Typer's pretty exceptions are on, locals off: no "locals" panel, no `name = value` rows.
    assert "locals" not in err and not re.search(r"(?m)^\s*[│|]?\s*(self|exc|env|plan|journal)\s+=\s", err), err
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("ALTER TABLE events_gone RENAME TO events")
        conn.commit()
    assert_absent([old, new], world=world, state_url=state, texts={"stdout": out, "stderr": err}, env=env,
                  cwd=tmp_path)
