"""(e) `xksmigrate status` on a journal of 10,000 events, against the same run with 10 events.

The journal is built with the journal API (Journal.open / create_run / add_migration / record), as the
engine writes it: one run, one key store, N events (transitions, calls, results, notes). Each command is
the real CLI in a fresh process (median of N runs). `status` reads the run and its last events;
`status --watch --json` on a finished run prints every event once; `history` lists runs.

Usage: python bench/bench_status.py [--events 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, median_seconds, save, table

KINDS = ("call", "result", "note")


def build(url: str, events: int) -> str:
    """A finished run with `events` events in the journal at `url`; returns its id."""
    from migrator.journal.repository import Journal

    journal = Journal.open(url)
    run_id = journal.create_run(plan_name="bench", plan_path="bench.toml", plan_text="# bench\n",
                                plan_fingerprint="0" * 64, region="us-east-1", who="bench", host="bench",
                                pid=os.getpid(), options={"time_scale": 1.0})
    mid = journal.add_migration(run_id, "cks-1234567890abcdef0", {"connectivity": "VPC_ENDPOINT_SERVICE"})
    for i in range(events - 1):
        kind = KINDS[i % 3]
        journal.record(run_id, kind=kind, migration_id=mid, operation="DescribeCustomKeyStores",
                       outcome="ok" if kind == "result" else None, request_id=f"req-{i}",
                       detail={"connection_state": "CONNECTING", "window_seconds": float(i)})
    journal.record(run_id, kind="note", migration_id=mid, detail={"message": "done"})
    journal.finish_run(run_id, "completed", 0)
    journal.close()
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    exe = str(BIN / "xksmigrate")
    with tempfile.TemporaryDirectory(prefix="xksbench-status-") as tmp:
        small_url, big_url = f"sqlite:///{tmp}/small.db", f"sqlite:///{tmp}/big.db"
        small = build(small_url, 10)
        started = time.perf_counter()
        big = build(big_url, args.events)
        built = time.perf_counter() - started
        rows = []
        for label, extra in (("status RUN_ID", []), ("status RUN_ID --json", ["--json"]),
                             ("status RUN_ID --watch --json", ["--watch", "--json"]), ("history", None)):
            def argv(url: str, run_id: str, extra: list[str] | None = extra) -> list[str]:
                if extra is None:
                    return [exe, "history", "--state", url]
                return [exe, "status", run_id, "--state", url, *extra]
            t_small = median_seconds(argv(small_url, small), args.runs)
            t_big = median_seconds(argv(big_url, big), args.runs)
            rows.append([label, t_small * 1000, t_big * 1000, t_big / t_small])
    text = table(f"(e) status on a journal of {args.events:,} events vs 10 events, median of {args.runs} runs (ms)",
                 ["command", "10 events ms", f"{args.events:,} events ms", "ratio"], rows,
                 [f"building the {args.events:,}-event journal with Journal.record (one commit per event, as the "
                  f"engine writes): {built:.1f} s ({built / args.events * 1000:.2f} ms per event)",
                  "--watch --json on a finished run prints every event once, then the summary"])
    print(text)
    print(f"saved {save('status', text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
