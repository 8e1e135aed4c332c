"""Whole runs through the CLI (issue 10): operator rollback of every store, later runs, multi-store runs.

The world runs in its own `xksmigrate sim serve` process (crash_helpers.Sim) and the tool as real
subprocesses, on SQLite and PostgreSQL (the `journal_url` fixture). The world's own log is the witness of
which mutating calls were made, in which order, on which store.

- an operator rollback of a two-store run restores both stores, the last one first (finding 1); it is a run
  of its own (tests/engine/test_rollback_run.py), so the forward run's record stays `completed`;
- a rollback killed right after its request is journaled, or between its two stores, is finished by
  `resume` of the rollback run, never reported `completed` (finding 17);
- a rollback is refused with nothing changed when a later run changed the store since, or when the
  store drifted from what the run left (finding 12): the rollback run ends `blocked`, exit 3;
- every store is preflighted before the first disconnect; a store that stops unchanged after another
  changed ends the run `partial`, exit 5 (finding 4);
- the same store named twice (by id and by name) blocks `plan` and `run` with exit 3 (finding 16).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import DATA, MUTATING, PLAN, WORLD, Proc, Sim, kill_leftovers, spawn

pytestmark = pytest.mark.slow  # every case drives the CLI against sim serve in subprocesses: the full tier

TWO_WORLD = DATA / "two-stores-world.toml"
TWO_PLAN = DATA / "two-stores-plan.toml"
PAYMENTS, LEDGER = "cks-1234567890abcdef0", "cks-0fedcba9876543210"
ORIGINAL = {PAYMENTS: "https://myproxy.xks.example.com", LEDGER: "https://ledger.xks.example.com"}
TARGET = {PAYMENTS: "https://myproxy-private.xks.example.com", LEDGER: "https://ledger-private.xks.example.com"}
ROUND = ("DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore")


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    kill_leftovers()


def tool(sim: Sim, url: str, workdir: Path, name: str, *args: str, kill_after: int | None = None) -> Proc:
    """One CLI command against the world, waited for."""
    proc = spawn([*args, *sim.run_args(url)], workdir, name, kill_after=kill_after)
    proc.wait()
    return proc


def mutations(sim: Sim) -> list[tuple[str, str]]:
    """(operation, store) of every successful mutating call the world saw, in order."""
    return [(e["operation"], e["keystore"]) for e in sim.log()
            if e.get("kind") == "call" and e.get("operation") in MUTATING and not e.get("error")]


def live(sim: Sim, store_id: str) -> tuple[str, str]:
    found = sim.describe(store_id)
    return found["ConnectionState"], found["XksProxyConfiguration"]["UriEndpoint"]


def journal_of(url: str, run_id: str | None = None) -> Any:
    from migrator.journal.repository import Journal

    with Journal.open(url) as journal:
        runs = journal.list_runs()
        run = journal.get_run(run_id or runs[0].id)
        return run, journal.events(run.id)


def failure(proc: Proc) -> str:
    return f"exit {proc.popen.returncode}: {(proc.summary() or {}).get('message')!r} {proc.err.read_text()[-1500:]}"


def completed_two_store_run(sim: Sim, url: str, workdir: Path) -> str:
    run = tool(sim, url, workdir, "run", "run", str(TWO_PLAN))
    assert run.popen.returncode == 0, failure(run)
    assert mutations(sim) == [(op, PAYMENTS) for op in ROUND] + [(op, LEDGER) for op in ROUND]
    return str((run.summary() or {})["run_id"])


def assert_both_restored(sim: Sim, url: str, run_id: str, back_id: str) -> None:
    """The rollback run `back_id` restored both stores; the forward run `run_id` still says what it did."""
    for store in (PAYMENTS, LEDGER):
        assert live(sim, store) == ("CONNECTED", ORIGINAL[store])
    run, _ = journal_of(url, back_id)
    assert (run.outcome, [m.state for m in run.migrations]) == ("rolled_back", ["rolled_back", "rolled_back"])
    assert run.options["rolls_back"] == run_id
    assert all(m.verified_at and m.window_seconds for m in run.migrations)
    forward, events = journal_of(url, run_id)
    assert (forward.outcome, [m.state for m in forward.migrations]) == ("completed", ["completed", "completed"])
    assert all(m.verified_at and m.window_seconds for m in forward.migrations)
    assert [e.detail["run_id"] for e in events if e.outcome == "rolled_back_by"] == [back_id]
    # Side effects once: the run's six calls, then the rollback's, the last store first.
    assert mutations(sim) == ([(op, PAYMENTS) for op in ROUND] + [(op, LEDGER) for op in ROUND]
                              + [(op, LEDGER) for op in ROUND] + [(op, PAYMENTS) for op in ROUND])


# -- finding 1: every store of the run, in reverse order ---------------------------------------------
def test_operator_rollback_of_a_two_store_run_restores_both_stores_last_first(journal_url: str,
                                                                              tmp_path: Path) -> None:
    with Sim(tmp_path, world=TWO_WORLD) as sim:
        run_id = completed_two_store_run(sim, journal_url, tmp_path)
        back = tool(sim, journal_url, tmp_path, "rollback", "rollback", run_id)
        assert back.popen.returncode == 4, failure(back)
        summary = back.summary() or {}
        assert (summary["outcome"], summary["rolls_back"]) == ("rolled_back", run_id)
        assert summary["run_id"] != run_id
        assert_both_restored(sim, journal_url, run_id, summary["run_id"])


# -- finding 17: the request is journaled first, a resume finishes the rollback -----------------------
@pytest.mark.parametrize("where", ["after the request", "between the stores"])
def test_a_rollback_killed_part_way_is_finished_by_resume(where: str, journal_url: str, tmp_path: Path) -> None:
    with Sim(tmp_path, world=TWO_WORLD) as sim:
        run_id = completed_two_store_run(sim, journal_url, tmp_path)
        point = 1  # the rollback run's first journal point: its request
        if where == "between the stores":  # ... or the ledger store's rolled_back transition
            clean = tmp_path / "clean"
            clean.mkdir()
            with Sim(clean, world=TWO_WORLD) as other:
                other_url = f"sqlite:///{clean}/journal.db"
                first = completed_two_store_run(other, other_url, clean)
                assert tool(other, other_url, clean, "rollback", "rollback", first).popen.returncode == 4
                _, all_events = journal_of(other_url)  # the rollback run: the latest
                point = next(e.seq for e in all_events if e.to_state == "rolled_back")
        killed = tool(sim, journal_url, tmp_path, "rollback", "rollback", run_id, kill_after=point)
        assert killed.popen.returncode == -9, failure(killed)
        run, events = journal_of(journal_url)  # the rollback run, killed
        assert run.id != run_id and run.options["rolls_back"] == run_id
        assert run.outcome == "running" and len(events) == point
        assert any(e.kind == "note" and e.outcome == "operator_rollback" for e in events)

        resumed = tool(sim, journal_url, tmp_path, "resume", "resume", run.id)
        assert resumed.popen.returncode == 4, failure(resumed)
        assert ((resumed.summary() or {})["outcome"], (resumed.summary() or {})["rolls_back"]) == ("rolled_back",
                                                                                                   run_id)
        assert_both_restored(sim, journal_url, run_id, run.id)


# -- finding 12: a later run, or drift, refuses the rollback with nothing changed ---------------------
def back_to_public_plan(workdir: Path) -> Path:
    """A later plan that moves the payments store back to its public endpoint."""
    path = workdir / "back-to-public.toml"
    path.write_text('[plan]\nname = "payments-back-to-public"\nregion = "us-east-1"\nmax_disconnected = "4h"\n'
                    'poll_interval = "5s"\n\n[[keystores]]\nid = "cks-1234567890abcdef0"\n\n[keystores.target]\n'
                    'connectivity = "PUBLIC_ENDPOINT"\nuri_endpoint = "https://myproxy.xks.example.com"\n\n'
                    '[keystores.original_credential]\nsecret = "secretsmanager:arn:aws:secretsmanager:us-east-1:'
                    '111122223333:secret:payments-xks-proxy-credential"\n')
    return path


def test_rollback_of_an_older_run_is_refused_when_a_later_run_changed_the_store(journal_url: str,
                                                                                tmp_path: Path) -> None:
    with Sim(tmp_path, world=WORLD) as sim:
        first = tool(sim, journal_url, tmp_path, "run1", "run", str(PLAN))
        assert first.popen.returncode == 0, failure(first)
        first_id = (first.summary() or {})["run_id"]
        later = tool(sim, journal_url, tmp_path, "run2", "run", str(back_to_public_plan(tmp_path)))
        assert later.popen.returncode == 0, failure(later)
        later_id = (later.summary() or {})["run_id"]
        calls_before = mutations(sim)

        back = tool(sim, journal_url, tmp_path, "rollback", "rollback", first_id)
        assert back.popen.returncode == 3, failure(back)
        message = (back.summary() or {})["message"]
        assert later_id in message and "later run" in message, message
        assert mutations(sim) == calls_before  # nothing changed
        run, events = journal_of(journal_url, first_id)
        assert (run.outcome, run.exit_code, run.migrations[0].state) == ("completed", 0, "completed")
        assert not [e for e in events if e.outcome == "rolled_back_by"]  # it was not rolled back
        assert_refused_run(journal_url, (back.summary() or {})["run_id"], first_id, message)


def mutate_store(sim: Sim, store_id: str, **changes: Any) -> None:
    body = json.dumps({"kind": "keystore", "id": store_id, "set": changes}).encode()
    request = urllib.request.Request(f"{sim.endpoint_url}/_rehearsal/mutate", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def test_rollback_is_refused_when_the_store_drifted_from_what_the_run_left(journal_url: str,
                                                                           tmp_path: Path) -> None:
    with Sim(tmp_path, world=WORLD) as sim:
        first = tool(sim, journal_url, tmp_path, "run", "run", str(PLAN))
        assert first.popen.returncode == 0, failure(first)
        run_id = (first.summary() or {})["run_id"]
        mutate_store(sim, PAYMENTS, uri_path="/payments/kms/xks/v2")  # someone changed it by hand
        calls_before = mutations(sim)

        back = tool(sim, journal_url, tmp_path, "rollback", "rollback", run_id)
        assert back.popen.returncode == 3, failure(back)
        message = (back.summary() or {})["message"]
        assert "drifted" in message and "/payments/kms/xks/v1" in message and "/payments/kms/xks/v2" in message
        assert mutations(sim) == calls_before
        run, _ = journal_of(journal_url, run_id)
        assert (run.outcome, run.migrations[0].state) == ("completed", "completed")
        assert_refused_run(journal_url, (back.summary() or {})["run_id"], run_id, message)


def assert_refused_run(url: str, back_id: str, run_id: str, message: str) -> None:
    """A refused rollback is a run of its own that changed nothing: `blocked`, exit 3, its store `blocked`."""
    back, events = journal_of(url, back_id)
    assert (back.outcome, back.exit_code, back.options["rolls_back"]) == ("blocked", 3, run_id)
    assert [(m.state, m.disconnected_at) for m in back.migrations] == [("blocked", None)]
    assert back.migrations[0].error == message
    assert not [e for e in events if e.kind == "call"]


# -- finding 4: every store preflighted first; a partial run says so ------------------------------------
def test_a_store_that_fails_preflight_blocks_the_whole_run_before_any_disconnect(journal_url: str,
                                                                                 tmp_path: Path) -> None:
    plan = tmp_path / "ledger-service-missing.toml"
    plan.write_text(TWO_PLAN.read_text().replace("vpce-svc-0fedcba9876543210", "vpce-svc-0aaaaaaaaaaaaaaa0"))
    with Sim(tmp_path, world=TWO_WORLD) as sim:
        run = tool(sim, journal_url, tmp_path, "run", "run", str(plan))
        assert run.popen.returncode == 3, failure(run)
        assert mutations(sim) == []  # the payments store was never disconnected
        view, _ = journal_of(journal_url)
        assert [m.state for m in view.migrations] == ["blocked", "blocked"]
        assert view.migrations[1].error and LEDGER in (view.migrations[0].error or ""), view.migrations[0].error


def test_a_plan_with_one_store_already_on_its_target_is_blocked_naming_it(journal_url: str, tmp_path: Path) -> None:
    """As `plan` says: a no-op store in a plan that would change others blocks the run (drop it, then run)."""
    plan = tmp_path / "ledger-already-public.toml"
    ledger_target = """connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://ledger-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0fedcba9876543210"
"""
    assert ledger_target in TWO_PLAN.read_text()
    plan.write_text(TWO_PLAN.read_text().replace(ledger_target, """connectivity = "PUBLIC_ENDPOINT"
uri_endpoint = "https://ledger.xks.example.com"
"""))
    with Sim(tmp_path, world=TWO_WORLD) as sim:
        run = tool(sim, journal_url, tmp_path, "run", "run", str(plan))
        assert run.popen.returncode == 3, failure(run)
        assert mutations(sim) == []
        view, _ = journal_of(journal_url)
    assert view.outcome == "blocked"
    assert [(m.state, m.outcome) for m in view.migrations] == [("blocked", "blocked"), ("blocked", "no_changes")]
    assert f"{LEDGER} already has the target configuration" in (view.migrations[0].error or ""), view.migrations[0]


def test_a_store_that_stops_unchanged_after_another_changed_ends_partial(journal_url: str, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir(mode=0o700)
    script = hooks / "before-disconnect"
    script.write_text(f'#!/bin/sh\n[ "$XKSMIGRATE_KEYSTORE_ID" = "{LEDGER}" ] && exit 7\nexit 0\n')
    script.chmod(0o700)
    with Sim(tmp_path, world=TWO_WORLD) as sim:
        run = tool(sim, journal_url, tmp_path, "run", "run", str(TWO_PLAN), "--hooks", str(hooks))
        assert run.popen.returncode == 5, failure(run)
        summary = run.summary() or {}
        assert summary["outcome"] == "partial"
        message = summary["message"]
        assert "nothing changed" not in message and PAYMENTS in message and LEDGER in message, message
        assert mutations(sim) == [(op, PAYMENTS) for op in ROUND]
        assert live(sim, PAYMENTS) == ("CONNECTED", TARGET[PAYMENTS])
        assert live(sim, LEDGER) == ("CONNECTED", ORIGINAL[LEDGER])
        view, _ = journal_of(journal_url)
        assert (view.outcome, view.exit_code) == ("partial", 5)
        assert [m.state for m in view.migrations] == ["completed", "blocked"]


# -- finding 16: the same store twice ----------------------------------------------------------------------
def same_store_twice_plan(workdir: Path) -> Path:
    path = workdir / "same-store-twice.toml"
    path.write_text(PLAN.read_text() + '\n[[keystores]]\nname = "payments-xks"\n\n[keystores.target]\n'
                    'connectivity = "PUBLIC_ENDPOINT"\nuri_endpoint = "https://myproxy-other.xks.example.com"\n')
    return path


def test_the_same_store_named_twice_blocks_plan_and_run(journal_url: str, tmp_path: Path) -> None:
    plan = same_store_twice_plan(tmp_path)
    with Sim(tmp_path, world=WORLD) as sim:
        report = spawn(["plan", str(plan), "--json", "--endpoint-url", sim.endpoint_url, "--state", journal_url],
                       tmp_path, "plan")
        assert report.wait() == 3, report.err.read_text()
        found = [line for line in report.lines() if line.get("check") == "plan.distinct_keystores"]
        assert found and all(line["status"] == "block" for line in found)
        assert PAYMENTS in found[0]["message"] and "payments-xks" in found[0]["message"]

        run = tool(sim, journal_url, tmp_path, "run", "run", str(plan))
        assert run.popen.returncode == 3, failure(run)
        assert "plan.distinct_keystores" in (run.summary() or {})["message"]
        assert mutations(sim) == []
        view, _ = journal_of(journal_url)
        assert [m.state for m in view.migrations] == ["blocked", "blocked"]
