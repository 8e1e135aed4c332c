"""The fleet on DBOS Transact: one durable workflow per fleet, one child workflow per store on a queue
partitioned by account-Region cell (docs/notes/dbos-3.4-notes.md says how DBOS behaves).

- The fleet workflow goes wave by wave (rollout.py): it starts a wave's stores while fewer than
  `max_in_flight` are in flight and the failure tolerance allows, waits for each as it ends (DBOS.wait_first),
  then runs the health gate (a step) and the bake (DBOS.sleep, durable: a recovered fleet does not bake again),
  and, when the fleet file asks for approval, waits for `fleet proceed` (DBOS.recv).
- Each store is a child workflow with one step that runs or resumes the store's own run (stores.py). Its
  workflow id and its journal run id are derived from the fleet id, so a repeated step finds its run.
- The queue's partitions carry the per-cell concurrency; the per-cell request budget is the AWS layer's.
- Every worker runs the same pinned APP_VERSION: DBOS recovers and dequeues only its own version's work.

The process-local half (journals, AWS clients, the world of a rehearsal, printing) is a `FleetServices` the
caller installs before launch; the workflows only carry the fleet request, which DBOS checkpoints.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from dbos import DBOS, DBOSConfig, SetEnqueueOptions, SetWorkflowID

from migrator import __version__
from migrator.fleet.outcome import DONE, Stop, StoreOutcome, fleet_outcome
from migrator.fleet.rollout import Tolerance, Wave
from migrator.fleet.stores import FleetRequest, GateResult

# Bump the suffix whenever the workflows below change the order of their steps: DBOS replays a recovered
# workflow against its checkpoints, so only the code that started it may continue it.
APP_VERSION = f"xksmigrate-{__version__}-fleet-1"
APP_NAME = "xksmigrate-fleet"
CELL_IN_FLIGHT = 5  # stores of one account-Region in flight at once, on top of max_in_flight (its partitions)
POLL_SECONDS = 0.5  # how often DBOS looks for a child that ended, and a queue for work


class FleetServices(Protocol):
    """What the workflows need from this process (stores.py, cli/fleet_run.py build one)."""

    def drive(self, request: FleetRequest, ref: str, wave: int) -> StoreOutcome: ...
    def gate(self, request: FleetRequest, refs: list[str], wave: int) -> GateResult: ...
    def progress(self, event: dict[str, object]) -> None: ...


ServicesFor = Callable[[FleetRequest], FleetServices]
_installed: list[ServicesFor] = []
_made: dict[str, FleetServices] = {}
_installed_lock = threading.Lock()


def install(services_for: ServicesFor) -> None:
    """How this process's workflows get the services of a fleet (DBOS itself is one per process)."""
    with _installed_lock:
        _installed[:] = [services_for]
        _made.clear()


def _services(request_data: dict[str, object]) -> FleetServices:
    request = FleetRequest.from_dict(request_data)
    with _installed_lock:
        if not _installed:
            raise RuntimeError("no fleet services installed in this process")
        if request.fleet_id not in _made:
            _made[request.fleet_id] = _installed[0](request)
        return _made[request.fleet_id]


def queue_name(fleet_id: str) -> str:
    """A queue per fleet: `fleet run --dry-run` listens to its own only (its world is in its own process)."""
    return f"xksmigrate-fleet-{fleet_id}"


def store_workflow_id(fleet_id: str, ref: str) -> str:
    return f"{fleet_id}/{ref}"


def cell_key(account_id: str, region: str) -> str:
    return f"{account_id}/{region}"


@contextlib.contextmanager
def runtime(system_url: str, executor_id: str, fleet_id: str | None = None) -> Iterator[None]:
    """DBOS launched on `system_url` as `executor_id`; destroyed afterwards. With `fleet_id` this process works
    on that fleet's queue only (and registers it); without, on every fleet's (`fleet worker`)."""
    config: DBOSConfig = {"name": APP_NAME, "system_database_url": system_url, "executor_id": executor_id,
                          "application_version": APP_VERSION, "log_level": "WARNING",
                          "notification_listener_polling_interval_sec": POLL_SECONDS}
    DBOS(config=config)
    try:
        if fleet_id is not None:
            DBOS.listen_queues([queue_name(fleet_id)])
        DBOS.launch()
        if fleet_id is not None:
            DBOS.register_queue(queue_name(fleet_id), partition_concurrency=CELL_IN_FLIGHT,
                                polling_interval_sec=POLL_SECONDS, on_conflict="always_update")
        yield
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


def start(request: FleetRequest) -> dict[str, Any]:
    """Start (or, with the same fleet id, rejoin) the fleet workflow and wait for its summary."""
    with SetWorkflowID(request.fleet_id):
        handle = DBOS.start_workflow(fleet_workflow, request.to_dict())
    return dict(handle.get_result(polling_interval_sec=POLL_SECONDS))


def wait(fleet_id: str) -> dict[str, Any]:
    return dict(DBOS.retrieve_workflow(fleet_id).get_result(polling_interval_sec=POLL_SECONDS))


@DBOS.step(name="xksmigrate.fleet.drive_store")
def _drive_step(request_data: dict[str, object], ref: str, wave: int) -> dict[str, object]:
    return _services(request_data).drive(FleetRequest.from_dict(request_data), ref, wave).to_dict()


@DBOS.step(name="xksmigrate.fleet.gate")
def _gate_step(request_data: dict[str, object], refs: list[str], wave: int) -> dict[str, object]:
    return _services(request_data).gate(FleetRequest.from_dict(request_data), refs, wave).to_dict()


@DBOS.step(name="xksmigrate.fleet.progress")
def _progress_step(request_data: dict[str, object], event: dict[str, object]) -> None:
    _services(request_data).progress(event)  # a step: a recovered fleet does not print again what it printed


@DBOS.workflow(name="xksmigrate.fleet.store")
def store_workflow(request_data: dict[str, object], ref: str, wave: int) -> dict[str, object]:
    return _drive_step(request_data, ref, wave)


@DBOS.workflow(name="xksmigrate.fleet")
def fleet_workflow(request_data: dict[str, object]) -> dict[str, object]:
    request = FleetRequest.from_dict(request_data)
    spec = request.spec()
    rollout = spec.rollout
    waves = request.rollout_waves()
    planned = [(ref, spec.store(ref).account.account_id, spec.store(ref).keystore.region, w.number)
               for w in waves for ref in w.refs]
    DBOS.set_event("planned", [list(p) for p in planned])  # `fleet status` reads the order while it runs
    tolerance = Tolerance(rollout.failure_tolerance)
    ended: dict[str, StoreOutcome] = {}
    gates: list[dict[str, object]] = []
    stop: Stop | None = None
    for index, wave in enumerate(waves):
        if index > 0 and rollout.approval:
            _progress_step(request_data, {"type": "fleet_waiting", "fleet_id": request.fleet_id, "wave": wave.number,
                            "message": f"waiting for: xksmigrate fleet proceed {request.fleet_id} --wave "
                                       f"{wave.number}"})
            while DBOS.recv(f"proceed-{wave.number}", timeout_seconds=3600) is None:
                pass
        _progress_step(request_data, {"type": "fleet_wave", "fleet_id": request.fleet_id, "wave": wave.number,
                        "label": wave.label, "stores": list(wave.refs)})
        _run_wave(request_data, spec_cells(planned), wave, rollout.max_in_flight, tolerance, ended)
        DBOS.set_event("ended", {ref: o.to_dict() for ref, o in ended.items()})
        if tolerance.stopped_by is not None:
            stop = _stopped_by(tolerance, ended, wave)
            break
        if index == len(waves) - 1:
            break
        completed = [ref for ref in wave.refs if ref in ended and ended[ref].outcome in DONE]
        gate = _gate_step(request_data, completed, wave.number)
        gates.append(gate)
        DBOS.set_event("gates", gates)  # `fleet status` and a running fleet's report read them
        _progress_step(request_data, {"type": "fleet_gate", "fleet_id": request.fleet_id, **gate})
        if not gate["ok"]:
            failures = gate.get("failures") or []
            stop = Stop(f"the gate after {wave.label}", "; ".join(map(str, failures))  # type: ignore[call-overload]
                        or "failed", wave.number)
            break
        if rollout.bake > 0:
            _progress_step(request_data, {"type": "fleet_bake", "fleet_id": request.fleet_id, "wave": wave.number,
                            "seconds": rollout.bake})
            DBOS.sleep(rollout.bake / request.time_scale)
    summary = fleet_outcome(request.fleet_id, planned, ended, stop, gates=gates).summary()
    _progress_step(request_data, summary)
    return summary


def _stopped_by(tolerance: Tolerance, ended: dict[str, StoreOutcome], wave: Wave) -> Stop:
    by = str(tolerance.stopped_by)
    if wave.canary:
        return Stop(by, f"canary {ended[by].outcome}", wave.number)
    return Stop(by, f"{ended[by].outcome}; {tolerance.failures} failed, {tolerance.failure_tolerance} tolerated",
                wave.number)


def spec_cells(planned: list[tuple[str, str, str, int]]) -> dict[str, str]:
    return {ref: cell_key(account, region) for ref, account, region, _ in planned}


def _run_wave(request_data: dict[str, object], cells: dict[str, str], wave: Wave, max_in_flight: int,
              tolerance: Tolerance, ended: dict[str, StoreOutcome]) -> None:
    """Start the wave's stores while fewer than max_in_flight are in flight and none stopped the fleet;
    count each as it ends. Stores in flight always finish (completed or rolled back)."""
    fleet_id = str(request_data["fleet_id"])
    pending = list(wave.refs)
    running: dict[str, Any] = {}
    while pending or running:
        while pending and len(running) < max_in_flight and tolerance.may_start:
            ref = pending.pop(0)
            queue = queue_name(fleet_id)
            with SetWorkflowID(store_workflow_id(fleet_id, ref)), SetEnqueueOptions(queue_partition_key=cells[ref]):
                running[ref] = DBOS.enqueue_workflow(queue, store_workflow, request_data, ref, wave.number)
        if not running:
            return
        done = DBOS.wait_first(list(running.values()), polling_interval_sec=POLL_SECONDS)
        ref = next(r for r, h in running.items() if h.workflow_id == done.workflow_id)
        del running[ref]
        outcome = StoreOutcome.from_dict(done.get_result(polling_interval_sec=POLL_SECONDS))
        ended[ref] = outcome
        tolerance.record(ref, outcome.outcome, canary=wave.canary)
