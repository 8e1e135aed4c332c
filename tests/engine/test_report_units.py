"""The change record's parts without a rehearsal (the quick tier): close codes, escaping, a run with no window.

The rehearsals themselves, through the CLI, are in test_report.py (the full tier).
"""

from __future__ import annotations

import base64
import time

from report_helpers import external_references

from migrator.journal.models import EventView, MigrationView, RunView
from migrator.report import html, markdown, record, timeline

HOSTILE = '<img src=x onerror=alert(1)>|`[x](https://evil.example/)`<script>alert(2)</script>'


def test_the_close_codes() -> None:
    def code(outcome: str, issues: tuple[str, ...] = (), rollback_run: bool = False) -> str | None:
        return record.close_code(outcome, rollback_run=rollback_run, issues=issues)["code"]

    assert code("completed") == "successful" and code("no_changes") == "successful"
    assert code("completed", ("over budget",)) == "successful_with_issues"
    assert code("rolled_back") == "unsuccessful"
    assert code("rolled_back", rollback_run=True) == "successful"  # an operator rollback run did its change
    assert code("rolled_back", ("took over",), rollback_run=True) == "successful_with_issues"
    assert {code(o) for o in ("stuck", "partial", "blocked", "locked", "failed")} == {"unsuccessful"}
    assert code("interrupted") is None and code("running") is None  # not closed while resumable
    assert record.CLOSE_LABELS == {"successful": "Successful", "successful_with_issues": "Successful with issues",
                                   "unsuccessful": "Unsuccessful"}


def _blocked_run() -> tuple[RunView, list[EventView]]:
    now = time.time()
    snapshot = {"connectivity": "PUBLIC_ENDPOINT", "uri_endpoint": HOSTILE, "uri_path": "/kms/xks/v1",
                "access_key_id": "AKID", "id": "cks-1", "verify_keys": []}
    migration = MigrationView(id=1, run_id="run-1", keystore_ref=HOSTILE, keystore_id="cks-1", state="blocked",
                              snapshot=snapshot, target={"connectivity": "VPC_ENDPOINT_SERVICE"},
                              disconnected_at=None, reconnected_at=None, verified_at=None, window_seconds=None,
                              outcome="blocked", error=f"vpc.allowed_principal: {HOSTILE}", attempts={}, api_calls={},
                              updated_at=now)
    run = RunView(id="run-1", plan_name=HOSTILE, plan_path="/plans/p.toml", plan_text=f"# {HOSTILE}\n",
                  plan_fingerprint="00", who="op", host="box", pid=1, started_at=now, finished_at=now + 1,
                  outcome="blocked", exit_code=3, dry_run=False, region="us-east-1", account_id="111122223333",
                  options={"endpoint_url": HOSTILE, "time_scale": 1.0}, migrations=(migration,))
    events = [EventView(1, now, "run-1", 1, "finding", None, None, None, None, "block",
                        {"check": "vpc.allowed_principal", "message": HOSTILE, "remedy": HOSTILE}),
              EventView(2, now, "run-1", 1, "finding", None, None, None, None, "pass",
                        {"check": "engine.budget_floor", "message": "max_disconnected 900 s covers the floor of 605 s",
                         "remedy": ""}),
              EventView(3, now, "run-1", None, "hook", None, None, "before-disconnect", None, "failed",
                        {"hook": HOSTILE, "exit_code": 1, "output": HOSTILE})]
    return run, events


def test_what_aws_or_the_journal_says_is_escaped() -> None:
    run, events = _blocked_run()
    rec = record.from_journal(run, events, links={"rolls_back": None, "rolled_back_by": None}, now=time.time())
    assert rec["close"]["code"] == "unsuccessful" and rec["keystores"][0]["window"] is None
    assert rec["keystores"][0]["floor_seconds"] == 605.0  # the floor the run's preflight journaled
    svg, png = timeline.render(rec)  # no window: a picture that says so
    assert png.startswith(b"\x89PNG") and b"<svg" in svg
    page = html.page(rec, svg)
    assert "<script" not in page and "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert external_references(page) == []
    assert base64.b64encode(svg).decode() in page
    text = markdown.document(rec, "run-1-timeline.png")
    assert "<script" not in text and "<img" not in text and "](https://evil" not in text
    assert "|`" not in text  # no cell boundary nor code span from a value


def test_the_record_is_versioned() -> None:
    run, events = _blocked_run()
    rec = record.from_journal(run, events, links={"rolls_back": None, "rolled_back_by": None}, now=0.0)
    assert (rec["type"], rec["schema"]) == ("change_record", record.SCHEMA)
    assert list(rec)[:4] == ["type", "schema", "xksmigrate", "generated_at"]
    assert {"run", "plan", "close", "budget", "keystores", "accepted_unverified", "operator_controls",
            "interruptions", "hooks", "api_calls"} <= set(rec)
