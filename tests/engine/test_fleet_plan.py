"""`xksmigrate fleet plan` through the real entry point (issue 16): the example fleet, bad fleet files, the
fleet's own blocks.

The tool runs as a subprocess, as an operator runs it: `--dry-run` on the world derived from the fleet file,
or `--endpoint-url` of an in-process world this test built from the same derivation and changed (two stores
of one proxy today), with the dummy credentials of the caller's account. Every journal is under tmp_path.
A preflight of the example takes seconds (slow, the full tier); a bad fleet file stops before any call.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import tool_env
from engine_helpers import REPO, read_world_log

EXAMPLE = REPO / "plans" / "fleet-example.toml"
CANARY = "cks-1111220a100000000"
# Two public stores of two accounts in eu-west-1 that the ramp puts in one wave (wave 3) when each has its own
# proxy; in SHARED's world the second uses the first's proxy today.
FIRST, SECOND = "cks-1111220b200000000", "cks-4444551b100000000"


def fleet_plan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migrator.cli", "fleet", "plan", *args], cwd=cwd,
                          env=tool_env(NO_COLOR="1"), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def of_type(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in found if line["type"] == kind]


def holding(found: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    """(keystore, check, status) of every store or fleet finding that is not a pass."""
    return [(f.get("keystore"), f["check"], f["status"]) for f in found
            if f["type"] in ("finding", "fleet_finding") and f["status"] != "pass"]


def edited(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Path:
    text = EXAMPLE.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.slow  # a preflight of 20 stores in 5 accounts: seconds
def test_the_example_fleet_is_ready_canary_first_then_waves_holding_every_store_once(tmp_path: Path) -> None:
    from migrator.fleet.spec import load_fleet

    stores = [s.ref for s in load_fleet(EXAMPLE).stores]
    done = fleet_plan(str(EXAMPLE), "--dry-run", "--json", "--state", f"sqlite:///{tmp_path}/r.db", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    found = lines(done)
    assert found[0] == {**found[0], "type": "version", "command": "fleet plan"}
    summary = found[-1]
    assert summary["type"] == "summary" and (summary["verdict"], summary["ready"], summary["exit_code"]) == (
        "ready", True, 0)
    assert holding(found) == []
    assert len(stores) == 20 and {f["keystore"] for f in of_type(found, "finding")} == set(stores)
    assert [ks["ref"] for ks in summary["keystores"]] == stores
    assert {f["check"] for f in of_type(found, "fleet_finding")} == {"fleet.role_session", "fleet.shared_proxy"}
    assert all(f.get("keystore") is None for f in of_type(found, "fleet_finding"))

    waves = of_type(found, "wave")
    assert waves[0] == {"type": "wave", "number": 1, "label": "canary 1", "stores": [CANARY], "canary": True}
    assert [w["number"] for w in waves] == list(range(1, len(waves) + 1))
    assert not any(w["canary"] for w in waves[1:]) and all(w["label"] == f"wave {w['number']}" for w in waves[1:])
    placed = [ref for w in waves for ref in w["stores"]]
    assert sorted(placed) == sorted(stores) and len(placed) == len(set(placed))
    assert [len(w["stores"]) for w in waves] == [1, 2, 4, 8, 5]  # the ramp doubles after the canary
    assert {ks["ref"]: ks["wave"] for ks in summary["keystores"]} == {
        ref: w["number"] for w in waves for ref in w["stores"]}
    assert summary["rollout"] == {"max_in_flight": 4, "failure_tolerance": 1, "bake_seconds": 120.0,
                                  "ramp": "exponential", "alarms": [], "approval": False, "waves": len(waves)}
    assert all(ks["calls"] and ks["rollback"] for ks in summary["keystores"])

    from migrator.journal.repository import Journal

    with Journal.open(f"sqlite:///{tmp_path}/r.db") as journal:  # read-only: nothing was recorded as a run
        assert journal.list_runs() == []


BAD = [
    ("unknown account reference", ('account = "ledger"', 'account = "nobody"'),
     r"targets\[2\]\.account: 'nobody' is not an account of \[accounts\]"),
    ("duplicate store", ('id = "cks-1111220a200000000"', 'id = "cks-1111220a100000000"'),
     r"targets\[0\]\.stores\[1\]\.id: 'cks-1111220a100000000' is also used by targets\[0\]\.stores\[0\]"),
    ("failure tolerance below zero", ("failure_tolerance = 1 ", "failure_tolerance = -1 "),
     r"rollout\.failure_tolerance: must be 0 or more, not -1"),
    ("a wave naming an unknown store", ('bake = "2m"', 'bake = "2m"\nwaves = [["cks-1111220a200000000", "gone"]]'),
     r"rollout\.waves\[0\]\[1\]: 'gone' is not a store of this fleet"),
]


@pytest.fixture(scope="module")
def example_world() -> Iterator[Any]:
    """The world derived from the example fleet, served in this process: a bad file must call nothing in it."""
    from migrator.fleet.spec import load_fleet
    from migrator.rehearsal.server import RehearsalServer
    from migrator.rehearsal.world.derive import world_for_plan

    with RehearsalServer(world_for_plan(tomllib.loads(load_fleet(EXAMPLE).whole.text), {})) as server:
        yield server


@pytest.mark.parametrize(("label", "edit", "said"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_fleet_file_is_one_line_naming_the_file_and_key_exit_2_and_no_aws_call(
        label: str, edit: tuple[str, str], said: str, tmp_path: Path, example_world: Any) -> None:
    bad = edited(tmp_path, "bad.toml", edit)
    before = len(read_world_log(example_world))
    done = fleet_plan(str(bad), "--json", "--endpoint-url", example_world.endpoint_url, "--state",
                      f"sqlite:///{tmp_path}/j.db", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert re.fullmatch(rf"xksmigrate: error: {re.escape(str(bad))}: {said}.*", line), line
    assert "Traceback" not in done.stdout + done.stderr
    version, summary = lines(done)
    assert version["command"] == "fleet plan" and (summary["outcome"], summary["exit_code"]) == ("error", 2)
    assert [e for e in read_world_log(example_world)[before:] if e.get("kind") == "call"] == []


@pytest.mark.slow  # a preflight of 20 stores in 5 accounts: seconds
def test_a_session_as_short_as_the_budget_blocks_naming_the_fleet_check(tmp_path: Path) -> None:
    short = edited(tmp_path, "short.toml", ('session_duration = "1h"', 'session_duration = "15m"'))
    done = fleet_plan(str(short), "--dry-run", "--json", "--state", f"sqlite:///{tmp_path}/r.db", cwd=tmp_path)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr
    found = lines(done)
    assert holding(found) == [(None, "fleet.role_session", "block")]
    [session] = [f for f in of_type(found, "fleet_finding") if f["check"] == "fleet.role_session"]
    assert session["detail"] == {"session_seconds": 900.0, "needed_seconds": 1800}
    assert (found[-1]["verdict"], found[-1]["ready"], found[-1]["exit_code"]) == ("blocked", False, 3)


@pytest.fixture(scope="module")
def shared_world() -> Iterator[Any]:
    """The example's world where SECOND (another account, the same Region) uses FIRST's proxy today: its
    snapshot's endpoint is FIRST's, and that proxy takes SECOND's credential too (no store check fails)."""
    from migrator.fleet.spec import load_fleet
    from migrator.rehearsal.server import RehearsalServer
    from migrator.rehearsal.world.derive import world_for_plan
    from migrator.rehearsal.world.objects import ProxyCredential

    world = world_for_plan(tomllib.loads(load_fleet(EXAMPLE).whole.text), {})
    stores = {ks.id: ks for cell in world.all_cells().values() for ks in cell.keystores}
    first, second = stores[FIRST], stores[SECOND]
    second.uri_endpoint = first.uri_endpoint
    [proxy] = [p for p in world.proxies if first.uri_endpoint.removeprefix("https://") in p.public_hostnames]
    proxy.credentials.append(ProxyCredential(second.access_key_id, second.secret))
    with RehearsalServer(world) as server:
        yield server


@pytest.mark.slow  # a preflight of 20 stores in 5 accounts: seconds
def test_a_hand_written_wave_of_two_stores_of_one_proxy_blocks_with_the_shared_proxy_finding(
        tmp_path: Path, shared_world: Any) -> None:
    together = edited(tmp_path, "together.toml", ('bake = "2m"', f'bake = "2m"\nwaves = [["{FIRST}", "{SECOND}"]]'))
    done = fleet_plan(str(together), "--json", "--endpoint-url", shared_world.endpoint_url, "--state",
                      f"sqlite:///{tmp_path}/j.db", cwd=tmp_path)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr
    found = lines(done)
    assert holding(found) == [(None, "fleet.shared_proxy", "block")]  # the stores' own preflight passes
    [shared] = [f for f in of_type(found, "fleet_finding") if f["check"] == "fleet.shared_proxy"]
    assert shared["detail"] == {"wave": 2, "proxy": "payments-2-private-public.euw1.xks.example.com",
                                "stores": [FIRST, SECOND]}
    assert of_type(found, "wave")[1]["stores"] == [FIRST, SECOND]
    assert found[-1]["verdict"] == "blocked"


@pytest.mark.slow  # a preflight of 20 stores in 5 accounts: seconds
def test_the_ramp_keeps_stores_of_todays_proxy_apart_and_reads_well_for_a_person(
        tmp_path: Path, shared_world: Any) -> None:
    """Only the snapshots show the shared proxy (their targets differ): the ramp reads them."""
    done = fleet_plan(str(EXAMPLE), "--endpoint-url", shared_world.endpoint_url, "--state",
                      f"sqlite:///{tmp_path}/j.db", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    text = done.stdout
    assert "Fleet org-xks-to-privatelink: 20 stores, 5 accounts, 2 Regions" in text
    assert ("Waves, in order (at most 4 stores disconnected at once; failure tolerance 1; bake 2m00s after each "
            "wave's health gate):") in " ".join(text.split())
    waves = dict(re.findall(r"^  ((?:canary|wave) \d+): (.+)$", text, re.M))
    assert waves["canary 1"] == CANARY
    [with_first] = [w for w, refs in waves.items() if FIRST in refs.split(", ")]
    [with_second] = [w for w, refs in waves.items() if SECOND in refs.split(", ")]
    assert with_first != with_second
    placed = [ref for refs in waves.values() for ref in refs.split(", ")]
    assert len(placed) == len(set(placed)) == 20
    assert "READY: `xksmigrate fleet run` would start with canary 1 (cks-1111220a100000000) after asking" in text
    assert "The run will call, in order:" in text and "BLOCKED" not in text
