"""Issue 14: `xksmigrate capture` makes a twin of the account, and the twin behaves like the original.

The original is a rehearsal world standing in for the real account, reached over HTTP as AWS would be; the
capture is read-only (the world's own log says so); `plan` on the twin gives the same findings (check and
status, store by store) as `plan` on the original, for the healthy worlds and for every misconfigured world of
the catch-rate matrix (misconfigured_worlds.py), in both directions.
"""

from __future__ import annotations

import json
import re

import pytest
from capture_helpers import capture, findings, twin_world, with_secret
from engine_helpers import MUTATING, example_plan, make_env, read_world_log, roomy_plan_file
from misconfigured_worlds import LEDGER_SECRET, SECRET, VPC_TO_PUBLIC_MISCONFIGURATIONS, WORLD_MISCONFIGURATIONS
from test_blocking_worlds import REPO

from migrator.engine import runner as engine
from migrator.journal.repository import Journal
from migrator.plan import load_plan
from migrator.preflight import planner
from migrator.rehearsal.world.model import load_world_file

SECRETS = {"public-to-vpc": SECRET, "vpc-to-public": LEDGER_SECRET}
CASES = [("public-to-vpc", "healthy", None), ("vpc-to-public", "healthy", None)] + \
    [("public-to-vpc", label, mutate) for label, mutate, _ in WORLD_MISCONFIGURATIONS] + \
    [("vpc-to-public", label, mutate) for label, mutate, _ in VPC_TO_PUBLIC_MISCONFIGURATIONS]


READ_ONLY = re.compile(r"^(Describe|List|Get|Simulate)[A-Za-z]+$")


@pytest.fixture
def journal(tmp_path):
    """The capture is journal-free; the plans and runs it is compared with need one (SQLite is enough)."""
    j = Journal.open(f"sqlite:///{tmp_path}/journal.db")
    yield j
    j.close()


def _world(direction: str, mutate=None, time_scale: float = 1500.0):
    world = load_world_file(REPO / "plans" / "worlds" / f"{direction}.toml")
    world.time_scale = time_scale
    if mutate:
        mutate(world)
    return world


@pytest.mark.parametrize(("direction", "label", "mutate"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_plan_on_the_twin_finds_what_plan_on_the_original_finds(direction, label, mutate, start_world, journal,
                                                                 tmp_path, monkeypatch):
    monkeypatch.setenv("XKS_CAPTURE_TEST_SECRET", SECRETS[direction])
    original = start_world(_world(direction, mutate))
    plan = with_secret(example_plan(direction), "env:XKS_CAPTURE_TEST_SECRET")
    expected = findings(planner.make_report(plan, make_env(original, journal)))

    capture(original, journal, plan, tmp_path / "twin.toml")
    twin, twin_plan = twin_world(tmp_path / "twin.toml", plan, {"env:XKS_CAPTURE_TEST_SECRET": SECRETS[direction]},
                                 time_scale=1500.0)
    got = findings(planner.make_report(twin_plan, make_env(start_world(twin), journal)))
    assert got == expected, (label, [g for g in got if g not in expected], [e for e in expected if e not in got])


@pytest.mark.parametrize("direction", sorted(SECRETS))
def test_the_plan_as_shipped_reads_its_secretsmanager_secret_from_the_twin(direction, start_world, journal, tmp_path):
    """The example plans name their secret by a `secretsmanager:` ARN: the twin serves it (pseudonymised ARN,
    the store's own made-up secret), so nothing is left unverified there either."""
    original = start_world(_world(direction))
    plan = example_plan(direction)
    expected = findings(planner.make_report(plan, make_env(original, journal)))
    capture(original, journal, plan, tmp_path / "twin.toml")
    twin, twin_plan = twin_world(tmp_path / "twin.toml", plan, {}, time_scale=1500.0)
    assert twin_plan.keystores[0].original_credential.secret_ref != plan.keystores[0].original_credential.secret_ref
    assert findings(planner.make_report(twin_plan, make_env(start_world(twin), journal))) == expected
    assert "unverified" not in {status for _, _, status in expected}


def test_a_scrubbed_capture_holds_no_secret_access_key_or_real_name(start_world, journal, tmp_path):
    """The canary: the proxy secret, the caller's AWS access key id, the XKS access key id, the account id, the
    store's id and name, host names, the service id and the external key ids appear nowhere in the file."""
    world = _world("public-to-vpc")
    original = start_world(world)
    caller = {"aws_access_key_id": "AKIACAPTURECANARY777",
              "aws_secret_access_key": "canary/SecretAccessKeyThatMustNotLeak+0001"}
    unseen = capture(original, journal, example_plan("public-to-vpc"), tmp_path / "twin.toml", credentials=caller)
    text = (tmp_path / "twin.toml").read_text()
    canaries = [SECRET, caller["aws_access_key_id"], caller["aws_secret_access_key"],
                world.account_id, "XKSPROXYACCESSKEY2345", "cks-1234567890abcdef0", "payments", "example.com",
                "myproxy", "0123456789abcdef0", "1234abcd-12ab", "payments-key-1", "rehearsal-operator"]
    assert [c for c in canaries if c.lower() in text.lower()] == []
    assert "placeholder:filled-by-the-rehearsal-world" in text
    assert any("connect and disconnect durations" in line for line in unseen)
    assert "connect and disconnect durations" in text  # what it cannot see is in the file too


def test_capture_makes_only_read_only_calls(start_world, journal, tmp_path):
    original = start_world(_world("vpc-to-public"))
    capture(original, journal, example_plan("vpc-to-public"), tmp_path / "twin.toml")
    calls = [e["operation"] for e in read_world_log(original) if e.get("kind") == "call"]
    assert calls and [c for c in calls if not READ_ONLY.match(c) or c in MUTATING] == []
    assert {"DescribeCustomKeyStores", "DescribeKey", "DescribeVpcEndpointServiceConfigurations",
            "DescribeTargetHealth", "SimulatePrincipalPolicy"} <= set(calls)


def test_an_unscrubbed_capture_keeps_real_names_and_still_no_secret(start_world, journal, tmp_path):
    original = start_world(_world("public-to-vpc"))
    capture(original, journal, example_plan("public-to-vpc"), tmp_path / "twin.toml", key=None)
    text = (tmp_path / "twin.toml").read_text()
    assert "cks-1234567890abcdef0" in text and "myproxy-private.xks.example.com" in text
    assert SECRET not in text and "scrubbed = false" in text


@pytest.mark.parametrize(("direction", "label", "mutate", "outcome"), [
    ("public-to-vpc", "healthy", None, ("completed", 0)),
    ("vpc-to-public", "healthy", None, ("completed", 0)),
    ("public-to-vpc", "NLB without a healthy target",
     next(m for label, m, _ in WORLD_MISCONFIGURATIONS if label == "NLB without a healthy target"), ("blocked", 3)),
])
def test_a_dry_run_on_the_twin_ends_as_a_real_run_on_the_original(direction, label, mutate, outcome, start_world,
                                                                   journal, tmp_path):
    plan = load_plan(roomy_plan_file(tmp_path, direction))
    original = start_world(_world(direction, mutate, time_scale=600.0))
    capture(original, journal, plan, tmp_path / "twin.toml")
    real = engine.start(plan, make_env(original, journal))
    assert (real.outcome, real.exit_code) == outcome, real.message

    twin, twin_plan = twin_world(tmp_path / "twin.toml", plan, {}, time_scale=600.0)
    twin_server = start_world(twin)
    rehearsal = engine.start(twin_plan, make_env(twin_server, journal))
    assert (rehearsal.outcome, rehearsal.exit_code) == outcome, rehearsal.message
    mutations = [e["operation"] for e in read_world_log(twin_server) if e.get("operation") in MUTATING]
    assert mutations == [e["operation"] for e in read_world_log(original) if e.get("operation") in MUTATING]


@pytest.mark.slow
def test_capture_then_plan_and_rehearse_through_the_command_line(start_world, tmp_path, monkeypatch):
    """README's path: `capture --plan` against the account (a `sim serve` world here), then `plan PLAN --world`
    and `run PLAN --dry-run --world` with the same plan file, real names in it, translated by the capture key."""
    from test_lock_cli import run_cli

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    original = start_world(_world("public-to-vpc", time_scale=600.0))
    plan = roomy_plan_file(tmp_path)
    state = ["--state", f"sqlite:///{tmp_path}/j.db"]
    done = run_cli(["capture", "--plan", str(plan), "--endpoint-url", original.endpoint_url, "--out",
                    str(tmp_path / "twin.toml")], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "capture cannot see:" in done.stdout and (tmp_path / "xdg" / "xksmigrate" / "capture.key").exists()

    def plan_findings(args):
        done = run_cli(["plan", str(plan), "--json", *args], tmp_path)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return done.returncode, [(f["check"], f["status"]) for f in lines if f.get("type") == "finding"]

    code, on_original = plan_findings(["--endpoint-url", original.endpoint_url, *state])
    assert code == 0, on_original
    assert plan_findings(["--world", str(tmp_path / "twin.toml")]) == (0, on_original)
    rehearsal = run_cli(["run", str(plan), "--dry-run", "--world", str(tmp_path / "twin.toml"), "--yes",
                         "--time-scale", "600"], tmp_path)
    assert rehearsal.returncode == 0, rehearsal.stdout[-3000:] + rehearsal.stderr[-2000:]
    mutating = [e for e in read_world_log(original) if e.get("operation") in MUTATING]
    assert mutating == [], mutating

    (tmp_path / "xdg" / "xksmigrate" / "capture.key").write_text("00" * 32 + "\n")
    wrong = run_cli(["plan", str(plan), "--world", str(tmp_path / "twin.toml")], tmp_path)
    assert wrong.returncode == 2 and "another capture key" in wrong.stderr and "Traceback" not in wrong.stderr


def test_capture_refuses_bad_input_in_one_line(tmp_path):
    from test_lock_cli import run_cli

    refusals = [(["capture"], "give --plan PLAN or --keystore ID"),
                (["capture", "--keystore", "cks-1234567890abcdef0"], "give --region"),
                (["capture", "--plan", str(REPO / "plans" / "public-to-vpc.toml"), "--out",
                  str(tmp_path / "no" / "such" / "dir" / "w.toml")], "no directory")]
    for args, says in refusals:
        done = run_cli(args, tmp_path)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
