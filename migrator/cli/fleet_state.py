"""Where a fleet's DBOS state lives and how it is read: the fleet's summary and request, for `fleet status`,
`fleet report` and `fleet resume`.

On PostgreSQL the state is in the journal's own database (schema `dbos`); on SQLite it is a file beside the
journal's (`<journal>.fleet.sqlite`), so a rehearsal's fleet state sits beside the rehearsal journal. Reading a
fleet never creates that file: a journal with no fleet state says "no fleet".
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from migrator.cli import environment as support

if TYPE_CHECKING:
    from migrator.fleet.stores import FleetRequest
    from migrator.journal.repository import Journal

    FleetView = tuple[dict[str, Any], bool, FleetRequest]  # summary, whether it ended, the request


def system_url(journal: Journal) -> str:
    """Where DBOS keeps the fleet's state: the journal's PostgreSQL database, or a SQLite file beside it."""
    if journal.backend == "postgresql":
        return journal.url.render_as_string(hide_password=False)
    database = journal.url.database or ""
    if not database or database == ":memory:":
        raise support.fail("a fleet needs a journal on disk or on PostgreSQL (--state)")
    return f"sqlite:///{os.path.abspath(database)}.fleet.sqlite"

def request_of(status: Any) -> FleetRequest:
    from migrator.fleet.stores import FleetRequest

    args = (status.input or {}).get("args") or ()  # DBOS's WorkflowInputs: {"args": [...], "kwargs": {...}}
    return FleetRequest.from_dict(dict(args[0]))

def fleet_status_of(client: Any, fleet_id: str | None) -> Any:
    if fleet_id:
        found = client.list_workflows(workflow_ids=[fleet_id], load_output=True)
    else:
        found = client.list_workflows(name="xksmigrate.fleet", sort_desc=True, limit=1, load_output=True)
    if not found:
        raise support.fail(f"no fleet {fleet_id}" if fleet_id else "no fleet has run with this journal")
    return found[0]

def state_journal(state: str | None, dry_run: bool, read_only: bool = True) -> Journal:
    from migrator.dryrun import REHEARSAL_JOURNAL_NAME

    url = state or (support.default_journal_url(REHEARSAL_JOURNAL_NAME) if dry_run else None)
    return support.open_journal(url, rehearsal=dry_run, read_only=read_only)

def fleet_view(journal: Journal, fleet_id: str | None) -> FleetView:
    """The fleet's summary (as it ended, or where each store stands), whether it ended, and its request."""
    from dbos import DBOSClient

    from migrator.fleet.outcome import StoreOutcome, fleet_outcome
    from migrator.fleet.stores import store_run_id
    from migrator.journal.models import JournalError

    url = system_url(journal)
    if url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
        raise support.fail(f"no fleet {fleet_id}" if fleet_id else "no fleet has run with this journal")
    client = DBOSClient(system_database_url=url)
    try:
        status = fleet_status_of(client, fleet_id)
        if status.status == "SUCCESS" and isinstance(status.output, dict):
            summary = dict(status.output)
        else:
            planned = client.get_event(status.workflow_id, "planned", timeout_seconds=0) or []
            ended = {ref: StoreOutcome.from_dict(o) for ref, o in
                     (client.get_event(status.workflow_id, "ended", timeout_seconds=0) or {}).items()}
            gates = client.get_event(status.workflow_id, "gates", timeout_seconds=0) or []
            for ref, account, region, wave in planned:
                if ref in ended:
                    continue
                with contextlib.suppress(JournalError):
                    run = journal.get_run(store_run_id(status.workflow_id, ref))
                    state_now = run.migrations[0].state if run.migrations else run.outcome
                    ended[ref] = StoreOutcome(ref, account, region, wave, run.id, state_now, 0)
            summary = fleet_outcome(status.workflow_id, [tuple(p) for p in planned], ended, None,
                                    finished=False, gates=gates).summary()
        summary["dbos_status"], summary["executor_id"] = status.status, status.executor_id
        request = request_of(status)
    finally:
        client.destroy()
    return summary, status.status not in ("PENDING", "ENQUEUED"), request
