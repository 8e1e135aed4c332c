"""RUNBOOK.md's manual commands, run with the AWS CLI against the rehearsal world from the states they document.

Every fenced block in RUNBOOK.md that starts with `# runbook-test: NAME [from STATE,...]` is collected:
- `setup` is the shell setup an operator pastes first (reads the snapshot from `xksmigrate status --json`
  with jq, defines store_state / wait_for / round_trip); it runs before every other block.
- every other block runs from each STATE it lists. A STATE is a run outcome (`blocked`, `locked`,
  `rolled_back`, `completed`, `stuck`) or `interrupted:<journal state>`; the test produces it with a real
  engine run against the world (faults, a declined approval, a held lock, or an interruption right
  after the journal moved to that state, or right after that state's AWS call).
The block runs in bash with `set -euo pipefail`, the real `aws` and `xksmigrate` executables, the run's
journal in XKSMIGRATE_STATE and the world in AWS_ENDPOINT_URL; only `sleep` is shortened (the world runs
at 600x). Afterwards AWS (the world, read with boto3) must show the store CONNECTED with the
configuration the block promises, a round trip must work, and every mutating call that reached the world
must be one the block names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import REPO, ROOMY_BUDGET, example_plan, load_world, make_env, read_world_log

from migrator.aws.kms import KmsApplier
from migrator.engine import runner as engine
from migrator.engine.environment import Observer

pytestmark = pytest.mark.slow

RUNBOOK = REPO / "RUNBOOK.md"
BLOCK = re.compile(r"^```sh\n# runbook-test: ([^\n]+)\n(.*?)^```", re.S | re.M)
KNOWN_OUTCOMES = ("blocked", "locked", "rolled_back", "completed", "stuck")
# The AWS call that a state makes, for the "interrupted right after the call" variant.
CALL_OF_STATE = {"disconnecting": "DisconnectCustomKeyStore", "updating": "UpdateCustomKeyStore",
                 "connecting": "ConnectCustomKeyStore", "rolling_back": "DisconnectCustomKeyStore"}
# Blocks that leave the store on the migration's target rather than on the snapshot.
FORWARD_BLOCKS = ("finish-forward",)
MUTATING_CLI = {"disconnect-custom-key-store": "DisconnectCustomKeyStore",
                "update-custom-key-store": "UpdateCustomKeyStore", "connect-custom-key-store": "ConnectCustomKeyStore",
                "create-custom-key-store": "CreateCustomKeyStore", "delete-custom-key-store": "DeleteCustomKeyStore",
                "create-key": "CreateKey"}


def runbook_blocks() -> dict[str, tuple[list[str], str]]:
    """name -> (states it is documented for, shell text)."""
    found: dict[str, tuple[list[str], str]] = {}
    for header, body in BLOCK.findall(RUNBOOK.read_text()):
        name, _, rest = header.strip().partition(" ")
        states = [s for s in rest.removeprefix("from").strip().split(",") if s] if rest else []
        assert name not in found, f"RUNBOOK.md: two blocks named {name}"
        found[name] = (states, body)
    return found


BLOCKS = runbook_blocks()
CASES = [(name, state) for name, (states, _) in BLOCKS.items() for state in states]


def _variants(state: str) -> list[str | None]:
    """Interruption points for `interrupted:<state>`: after the journal move, and after the state's call."""
    if not state.startswith("interrupted:"):
        return [None]
    inner = state.split(":", 1)[1]
    return [None, CALL_OF_STATE[inner]] if inner in CALL_OF_STATE else [None]


# Each block from each of its states, alternating the direction of the migration (each AWS CLI call costs
# a Python start-up); both directions where the update goes back across connectivities in every case.
BOTH_DIRECTIONS = ("stuck", "completed", "interrupted:updated")


def _params() -> list[Any]:
    params = []
    for i, (name, state) in enumerate(CASES):
        directions = ("public-to-vpc", "vpc-to-public") if state in BOTH_DIRECTIONS else (
            ("public-to-vpc", "vpc-to-public")[i % 2],)
        for direction in directions:
            for after_call in _variants(state) if direction == directions[0] else [None]:
                params.append(pytest.param(name, state, direction, after_call, id=f"{name}-{state}-{direction}"
                                           + (f"-after-{after_call}" if after_call else "")))
    return params


PARAMS = _params()


@pytest.fixture
def journal_url(tmp_path: Path) -> str:
    """SQLite only: the procedures are the same on PostgreSQL (status --json reads either)."""
    return f"sqlite:///{tmp_path}/state/journal.db"


def test_runbook_marks_its_blocks_and_has_the_stuck_anchor():
    text = RUNBOOK.read_text()
    assert re.search(r"^## Stuck$", text, re.M), "the tool prints RUNBOOK.md#stuck"
    assert "setup" in BLOCKS and {"back-to-snapshot", "unchanged", "finish-forward", "inspect"} <= set(BLOCKS)
    # Every way a run can stop has a tested block: each outcome and each state of the critical section.
    from migrator.engine import machine

    covered = {state for _, state in CASES}
    wanted = {"blocked", "locked", "rolled_back", "stuck", "completed"} | {
        f"interrupted:{s}" for s in (*machine.CRITICAL, "rolling_back")}
    assert wanted <= covered, f"states without a tested manual procedure: {sorted(wanted - covered)}"
    # The stuck help the tool prints names the same AWS CLI operations as the Stuck section.
    stuck = BLOCKS["back-to-snapshot"][1]
    for op in ("describe-custom-key-stores", "disconnect-custom-key-store", "update-custom-key-store",
               "connect-custom-key-store"):
        assert f"aws kms {op}" in stuck


class _Interrupt(Observer):
    """Ctrl-C right after the journal recorded the move to `state` (or that state's AWS call)."""

    def __init__(self, state: str | None, after_call: str | None):
        self.state, self.after_call, self.armed = state, after_call, False

    def event(self, event: dict[str, Any]) -> None:
        if self.state is None:
            return
        if event.get("kind") == "transition" and event.get("to_state") == self.state:
            if self.after_call is None:
                raise KeyboardInterrupt
            self.armed = True
        elif (self.armed and event.get("kind") == "result" and event.get("operation") == self.after_call
              and event.get("outcome") == "ok"):
            raise KeyboardInterrupt


def _post(server: Any, path: str, payload: Any) -> None:
    import json
    import urllib.request

    request = urllib.request.Request(f"{server.endpoint_url}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _connect_fails(server: Any, count: int) -> None:
    _post(server, "/_rehearsal/faults", [{"operation": "ConnectCustomKeyStore",
                                          "connection_error_code": "XKS_PROXY_NOT_REACHABLE", "count": count}])


def produce(state: str, after_call: str | None, server: Any, journal: Any, plan: Any) -> str:
    """Drive a real run into `state`; return the run id an operator would use."""
    if state.startswith("interrupted:"):
        inner = state.split(":", 1)[1]
        if inner == "rolling_back":
            _connect_fails(server, 1)
        result = engine.start(plan, make_env(server, journal, observer=_Interrupt(inner, after_call)))
        assert result.outcome == "interrupted", result.message
        assert journal.get_run(result.run_id).migrations[0].state == inner
        return result.run_id
    assert state in KNOWN_OUTCOMES, f"RUNBOOK.md documents a block for an unknown state {state!r}"
    if state == "blocked":
        result = engine.start(plan, make_env(server, journal, approve=False))  # the operator declines
    elif state == "locked":
        holder = engine.start(plan, make_env(server, journal, approve=False))  # a run that snapshotted
        from migrator.journal.repository import Journal

        # another runner, with its own connection, holds the store's lock
        other = Journal.open(journal.url.render_as_string(hide_password=False))
        store_id = holder.stores[0].id
        other.acquire_lock(f"keystore/{plan.region}/{store_id}", run_id=holder.run_id, owner="colleague")
        result = engine.start(plan, make_env(server, journal))
        assert (result.outcome, result.exit_code) == ("locked", 6), result.message
        assert "xksmigrate unlock" in result.message
        return holder.run_id  # the runbook says: look at the holder's run
    else:
        if state in ("rolled_back", "stuck"):
            _connect_fails(server, 1 if state == "rolled_back" else 2)
        result = engine.start(plan, make_env(server, journal))
    assert result.outcome == state, result.message
    return result.run_id


def run_block(block: str, server: Any, journal_url: str, run_id: str, workdir: Path,
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    aws = shutil.which("aws", path=str(bin_dir)) or shutil.which("aws")
    assert aws, "the AWS CLI is a test dependency"
    assert shutil.which("jq"), "jq is needed by RUNBOOK.md's setup block"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "AWS_ENDPOINT_URL": server.endpoint_url,
                "AWS_ACCESS_KEY_ID": "AKIDREHEARSAL", "AWS_SECRET_ACCESS_KEY": "rehearsal-secret",
                "AWS_CONFIG_FILE": str(workdir / "aws-config"), "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_PAGER": "", "XKSMIGRATE_STATE": journal_url, "RUN_ID": run_id, **(extra_env or {})})
    script = "\n".join(["set -euo pipefail", "sleep() { command sleep 0.05; }",
                        BLOCKS["setup"][1], block])
    return subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300)


def _kebab_ops(text: str) -> set[str]:
    return {MUTATING_CLI[m] for m in re.findall(r"aws kms ([a-z-]+)", text) if m in MUTATING_CLI}


@pytest.mark.parametrize(("name", "state", "direction", "after_call"), PARAMS)
def test_runbook_block_recovers_from_the_state_it_documents(name, state, direction, after_call, journal,
                                                            journal_url, start_world, tmp_path):
    server = start_world(load_world(direction, time_scale=600.0))
    plan = example_plan(direction, poll_interval=5.0, max_disconnected=ROOMY_BUDGET)
    run_id = produce(state, after_call, server, journal, plan)
    kms = KmsApplier(make_env(server, journal).clients.client("kms"))
    snapshot = journal.get_run(run_id).migrations[0].snapshot
    store_id = snapshot["id"]
    before = len(read_world_log(server))

    proc = run_block(BLOCKS[name][1], server, journal_url, run_id, tmp_path)

    assert proc.returncode == 0, f"{name} from {state}:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    # AWS, not the script's word: the store is CONNECTED on the configuration the block promises.
    live = kms.describe(store_id)
    assert live.state == "CONNECTED", proc.stdout
    target = plan.keystores[0].target
    forward = name in FORWARD_BLOCKS or (name == "inspect" and state == "completed")
    if forward:
        want = (target.connectivity, target.uri_endpoint, target.vpc_endpoint_service_name or "")
    else:
        want = (snapshot["connectivity"], snapshot["uri_endpoint"], snapshot["vpc_endpoint_service_name"] or "")
    got = (live.config.connectivity, live.config.uri_endpoint, live.config.vpc_endpoint_service_name or "")
    assert got == want
    assert live.config.uri_path == snapshot["uri_path"]
    # A round trip works now, with boto3 (independent of the script's own round_trip).
    key_id = snapshot["verify_keys"][0]["key_id"]
    client = make_env(server, journal).clients.client("kms")
    blob = client.encrypt(KeyId=key_id, Plaintext=b"after the runbook")["CiphertextBlob"]
    assert client.decrypt(KeyId=key_id, CiphertextBlob=blob)["Plaintext"] == b"after the runbook"
    # Every mutating call that reached the world was one the block names; the round trip ran.
    calls = [e for e in read_world_log(server)[before:] if e.get("kind") == "call"]
    made = {e["operation"] for e in calls}
    assert made & set(MUTATING_CLI.values()) <= _kebab_ops(BLOCKS[name][1])
    if "round_trip" in BLOCKS[name][1]:
        assert {"Encrypt", "Decrypt"} <= made and "round trip OK" in proc.stdout
    if name == "back-to-snapshot":
        assert {"UpdateCustomKeyStore", "ConnectCustomKeyStore"} <= made
        if state in ("completed", "stuck", "interrupted:connected", "interrupted:verifying"):
            assert "DisconnectCustomKeyStore" in made  # it was CONNECTED/FAILED: the block disconnected first
    if name in ("inspect", "unchanged", "finish-forward"):
        assert not made & set(MUTATING_CLI.values()), "a look-only block changed the store"


def test_the_setup_block_reads_the_snapshot_from_the_journal(journal, journal_url, start_world, tmp_path):
    """The variables the recovery blocks use come from `xksmigrate status --json`, not from the test."""
    server = start_world(load_world("vpc-to-public", time_scale=600.0))
    plan = example_plan("vpc-to-public", max_disconnected=ROOMY_BUDGET)
    run_id = produce("stuck", None, server, journal, plan)
    snap = journal.get_run(run_id).migrations[0].snapshot
    show = ('printf "%s|" "$AWS_DEFAULT_REGION" "$STORE_ID" "$KEY_ID" "$ORIG_CONNECTIVITY" "$ORIG_URI_ENDPOINT" '
            '"$ORIG_URI_PATH" "$ORIG_VPCE_SERVICE" > vars.txt')
    proc = run_block(show, server, journal_url, run_id, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "vars.txt").read_text().split("|")[:7] == [
        plan.region, snap["id"], snap["verify_keys"][0]["key_id"], "VPC_ENDPOINT_SERVICE", snap["uri_endpoint"],
        snap["uri_path"], snap["vpc_endpoint_service_name"]]


def test_the_alarm_commands_are_well_formed(tmp_path, start_world):
    """The world has no CloudWatch, but the AWS CLI validates every parameter before it sends: a command
    that reaches the endpoint (and fails there) is well formed; a usage or validation error fails here."""
    server = start_world(load_world("public-to-vpc", time_scale=600.0))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "AWS_ENDPOINT_URL": server.endpoint_url,
                "AWS_ACCESS_KEY_ID": "AKIDREHEARSAL", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_MAX_ATTEMPTS": "1",
                "STORE_ID": "cks-1234567890abcdef0", "CERT_NAME": "myproxy.xks.example.com",
                "TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:xks-alarms"})
    block = BLOCKS["alarms"][1]
    # one command each, and the loop over Retryable / Non-retryable sends its command twice
    commands = block.count("aws cloudwatch put-metric-alarm") + block.count("for type in Retryable Non-retryable")
    script = "aws() { command aws \"$@\" 2>>errors.txt || echo sent >> sent.txt; }\n" + block
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    errors = (tmp_path / "errors.txt").read_text()
    assert "Parameter validation failed" not in errors and "usage:" not in errors and "Error parsing" not in errors
    assert "Unknown options" not in errors and "Invalid JSON" not in errors, errors
    sent = (tmp_path / "sent.txt").read_text().split()
    assert len(sent) == commands == 5
    assert errors.count("when calling the PutMetricAlarm operation") == len(sent), errors
