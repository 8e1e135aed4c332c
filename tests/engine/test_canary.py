"""A canary proxy secret given through `env:` never leaves the process that needs it.

The plan changes the proxy credential (target secret `env:XKS_CANARY`, rollback secret `env:XKS_OLD`);
the world's proxy accepts both. Fresh random secrets of the KMS shape are generated per test, then
searched for in every byte the tool leaves behind: the journal's database file and its -wal/-shm files,
every journal row, stdout and stderr (plain and --json), on the completed path, on a rollback path
(which restores the old secret), after a SIGTERM mid-run, and in a forced traceback (XKSMIGRATE_DEBUG=1
with the journal refusing writes mid-run, which the tool cannot handle).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import REPO

pytestmark = pytest.mark.slow  # each case runs the CLI in subprocesses: the full tier

WORLD = REPO / "plans" / "worlds" / "public-to-vpc.toml"
OLD_ACCESS_KEY = "XKSPROXYACCESSKEY2345"
NEW_ACCESS_KEY = "XKSPROXYCANARYKEY2345"
SECRET_SHAPE = re.compile(r"^[a-zA-Z0-9/+=]{43,64}$")

PLAN = f"""
[plan]
name = "canary-credential-change"
region = "us-east-1"
max_disconnected = "1h"   # a slow machine must not turn a timing test into a rollback
poll_interval = "5s"

[[keystores]]
id = "cks-1234567890abcdef0"

[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://myproxy-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"

[keystores.target.credential]
access_key_id = "{NEW_ACCESS_KEY}"
secret = "env:XKS_CANARY"

[keystores.original_credential]
secret = "env:XKS_OLD"
"""


def new_secret() -> str:
    value = base64.b64encode(secrets.token_bytes(33)).decode()  # 44 characters, the KMS secret alphabet
    assert SECRET_SHAPE.match(value)
    return value


@pytest.fixture
def canary(tmp_path: Path) -> dict[str, Any]:
    """Secrets, a world whose proxy accepts both credentials (the store holds the old one), a plan."""
    old, new = new_secret(), new_secret()
    text = WORLD.read_text()
    world_secret = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="  # the example world's, replaced
    original_cred = f'  {{ access_key_id = "{OLD_ACCESS_KEY}", secret = "{world_secret}" }},'
    assert original_cred in text
    text = text.replace(original_cred, f'  {{ access_key_id = "{OLD_ACCESS_KEY}", secret = "{old}" }},\n'
                                       f'  {{ access_key_id = "{NEW_ACCESS_KEY}", secret = "{new}" }},')
    text = text.replace(f'secret = "{world_secret}"', f'secret = "{old}"')
    assert world_secret not in text
    inputs = tmp_path / "inputs"  # the world file holds the secrets (it is the simulated proxy); kept apart
    inputs.mkdir()
    (inputs / "world.toml").write_text(text)
    (inputs / "plan.toml").write_text(PLAN)
    (inputs / "connect-fails.toml").write_text(
        '[[faults]]\noperation = "ConnectCustomKeyStore"\n'
        'connection_error_code = "XKS_PROXY_INVALID_TLS_CONFIGURATION"\ncount = 1\n')
    state = tmp_path / "state"
    state.mkdir()
    return {"secrets": [new, old], "inputs": inputs, "state": state, "url": f"sqlite:///{state}/journal.db",
            "work": tmp_path}


def env_with(canary: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XKSMIGRATE_STATE", "AWS_ENDPOINT_URL")}
    env.update(XKS_CANARY=canary["secrets"][0], XKS_OLD=canary["secrets"][1], **extra)
    return env


def run_args(canary: dict[str, Any], *extra: str, scale: str = "600") -> list[str]:
    return [sys.executable, "-m", "migrator.cli", "run", str(canary["inputs"] / "plan.toml"), "--dry-run", "--yes",
            "--world", str(canary["inputs"] / "world.toml"), "--time-scale", scale, "--state", canary["url"],
            *extra]


def assert_nowhere(canary: dict[str, Any], *texts: str) -> None:
    """Neither secret (nor a recognisable piece of one) in `texts`, the database files or the journal rows."""
    files = sorted(canary["state"].iterdir())
    assert any(f.name == "journal.db" for f in files)
    blobs = [t.encode() for t in texts] + [f.read_bytes() for f in files]  # journal.db, -wal, -shm if present
    with sqlite3.connect(f"file:{canary['state']}/journal.db?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"runs", "migrations", "events", "locks"} <= set(tables)
        rows = [repr(row) for table in tables for row in db.execute(f"SELECT * FROM {table}")]
    blobs.append("\n".join(rows).encode())
    for secret in canary["secrets"]:
        pieces = {secret, secret[:16], secret[14:30], secret[-16:], json.dumps(secret)[1:-1]}
        for blob in blobs:
            for piece in pieces:
                assert piece.encode() not in blob, "a secret leaked"


@pytest.mark.parametrize("output", ["--json", "plain"])
@pytest.mark.parametrize("path", ["completed", "rolled_back"])
def test_the_canary_appears_nowhere(canary, output, path):
    extra = ["--json"] if output == "--json" else []
    if path == "rolled_back":
        extra += ["--faults", str(canary["inputs"] / "connect-fails.toml")]

    done = subprocess.run(run_args(canary, *extra), cwd=canary["work"], env=env_with(canary), text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)

    assert done.returncode == {"completed": 0, "rolled_back": 4}[path], done.stdout[-2000:] + done.stderr
    if output == "--json":
        summary = json.loads(done.stdout.splitlines()[-1])
        store = summary["keystores"][0]
        want = NEW_ACCESS_KEY if path == "completed" else OLD_ACCESS_KEY
        assert (summary["outcome"], store["final"]["access_key_id"]) == (path, want)
        assert store["original"]["access_key_id"] == OLD_ACCESS_KEY
    else:
        assert f"{path} (exit {done.returncode})" in done.stdout
    # The credential really changed hands (and back): the secrets were used, just never shown.
    with sqlite3.connect(f"file:{canary['state']}/journal.db?mode=ro", uri=True) as db:
        details = [json.loads(d) for (d,) in db.execute(
            "SELECT detail FROM events WHERE operation = 'UpdateCustomKeyStore' AND kind = 'call'")]
    sent = [d["parameters"].get("XksProxyAuthenticationCredential") for d in details]
    expected = [{"AccessKeyId": NEW_ACCESS_KEY, "RawSecretAccessKey": "env:XKS_CANARY"}]
    if path == "rolled_back":
        expected.append({"AccessKeyId": OLD_ACCESS_KEY, "RawSecretAccessKey": "env:XKS_OLD"})
    assert sent == expected
    assert_nowhere(canary, done.stdout, done.stderr)


def slow_connect(canary: dict[str, Any]) -> None:
    """Connect takes 900 simulated seconds: 4.5 real ones at scale 200, time enough to act in the window."""
    world = canary["inputs"] / "world.toml"
    text = world.read_text()
    assert "\nconnect = 300" in text
    world.write_text(text.replace("\nconnect = 300", "\nconnect = 900"))


def _wait_for_state(canary: dict[str, Any], proc: subprocess.Popen, states: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 60
    db_path = canary["state"] / "journal.db"
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the test could act"
        if db_path.exists():
            try:
                with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
                    row = db.execute("SELECT state FROM migrations").fetchone()
            except sqlite3.OperationalError:  # schema not there yet
                row = None
            if row and row[0] in states:
                return
        time.sleep(0.02)
    raise AssertionError(f"the run never reached {states}")


def test_the_canary_is_not_in_a_forced_traceback(canary):
    """After the update has sent the new secret, the journal starts refusing writes (a trigger, from
    outside the tool): an internal error, shown with its full traceback under XKSMIGRATE_DEBUG=1."""
    slow_connect(canary)
    with (canary["work"] / "out").open("w+") as out, (canary["work"] / "err").open("w+") as err:
        proc = subprocess.Popen(run_args(canary, "--json", scale="200"), cwd=canary["work"],
                                env=env_with(canary, XKSMIGRATE_DEBUG="1"), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        try:
            _wait_for_state(canary, proc, ("updated", "connecting"))
            with sqlite3.connect(canary["state"] / "journal.db", timeout=10) as db:
                db.execute("CREATE TRIGGER refuse_events BEFORE INSERT ON events "
                           "BEGIN SELECT RAISE(ABORT, 'journal refuses writes (test)'); END")
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()

    assert code == 1, stderr[-3000:]
    assert "Traceback (most recent call last)" in stderr
    assert "journal refuses writes (test)" in stderr  # the traceback is the one we provoked
    assert "UpdateCustomKeyStore" in stdout  # and it came after the secret was sent
    assert_nowhere(canary, stdout, stderr)


def test_the_canary_is_not_in_the_output_of_an_interrupted_run(canary):
    """SIGTERM mid-window: the run journals the interruption and exits 130, resumable."""
    slow_connect(canary)
    with (canary["work"] / "out").open("w+") as out, (canary["work"] / "err").open("w+") as err:
        proc = subprocess.Popen(run_args(canary, scale="200"), cwd=canary["work"],
                                env=env_with(canary, XKSMIGRATE_DEBUG="1"), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        try:
            _wait_for_state(canary, proc, ("connecting",))
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()

    assert code == 130, stdout[-2000:] + stderr[-2000:]
    assert "xksmigrate resume" in stdout + stderr
    assert_nowhere(canary, stdout, stderr)
