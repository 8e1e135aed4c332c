"""The fleet's output: each store's engine events prefixed with the store, and the fleet's own events (a wave
starts, a gate, the bake, a takeover, the summary), as lines for a person or NDJSON (`--json`)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from migrator.cli.output import describe_event, fmt_seconds, json_line, printable, write_version


class FleetLines:
    """The fleet's output: every store's events prefixed with the store, and the fleet's own (thread-safe)."""

    def __init__(self, json_output: bool, simulated: bool, command: str, stream: TextIO | None = None):
        self.json_output, self.simulated = json_output, simulated
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        if json_output:  # as every NDJSON stream of the tool: which xksmigrate, which schema, which command
            write_version(self.stream, command)

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def store_event(self, ref: str, event: dict[str, Any]) -> None:
        if self.json_output:
            if event.get("type") == "event":
                self._write(json_line({**event, "fleet_store": ref}))
            return
        if event.get("type") == "event" and (line := describe_event(event, self.simulated)):
            self._write(f"{time.strftime('%H:%M:%S')} {ref}: {printable(line.strip())}")

    def took_over(self, me: str) -> Callable[[str], None]:
        def say(dead: str) -> None:
            self.fleet_event({"type": "fleet_takeover", "executor_id": me, "dead": dead,
                              "message": f"{me} took over the unfinished work of {dead}, which is no longer alive"})
        return say

    def fleet_event(self, event: dict[str, Any]) -> None:
        if self.json_output:
            self._write(json_line(event))
            return
        for line in describe_fleet_event(event, self.simulated):
            self._write(printable(line))


def describe_fleet_event(event: dict[str, Any], simulated: bool = False) -> list[str]:
    kind = event.get("type")
    if kind in ("fleet_takeover", "fleet_worker", "fleet_worker_stopped", "fleet_proceed",
                "fleet_interrupted"):
        return [str(event["message"])]
    if kind == "fleet_start":
        return [str(event["message"]) + (" (dry run: a rehearsal world derived from the fleet file)"
                                          if event.get("dry_run") else "")]
    if kind == "fleet_wave":
        return [f"== {event['label']}: {', '.join(event['stores'])}"]
    if kind == "fleet_gate":
        verdict = "passed" if event.get("ok") else "FAILED"
        proved = ", ".join(f"{ref} ({n} keys)" for ref, n in (event.get("proved") or {}).items()) or "no store"
        lines = [f"   gate after wave {event['wave']} {verdict}: round trips proved {proved}"]
        return lines + [f"     {failure}" for failure in event.get("failures") or []]
    if kind == "fleet_bake":
        return [f"   baking {fmt_seconds(float(event['seconds']))}{' simulated' if simulated else ''}"]
    if kind == "fleet_waiting":
        return [f"   {event['message']}"]
    if kind == "fleet_summary":
        unit = " simulated" if simulated else ""
        fleet = event.get("fleet_id") or "(not started)"
        lines = [f"fleet {fleet}: {event['outcome']} (exit {event['exit_code']}): {event['message']}"]
        for ks in event.get("keystores") or []:
            window = ks.get("window_seconds")
            shown = f"window {fmt_seconds(window)}{unit}" if window is not None else "no window"
            budget = ks.get("budget_seconds")
            of = f" of {fmt_seconds(budget)}" if budget is not None and window is not None else ""
            run = f"  run {ks['run_id']}" if ks.get("run_id") and ks["outcome"] != "not_started" else ""
            lines.append(f"  {ks['ref']:<24} {ks['account_id']} {ks['region']:<12} wave {ks['wave']:<3} "
                         f"{ks['outcome']:<12} {shown}{of}{run}")
        return lines
    return []
