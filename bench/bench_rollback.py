"""(b) Rollback time against its floor: the new connectivity fails at connect, the engine goes back.

The world fails the forward ConnectCustomKeyStore once (XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND, after the
world's connect latency, as KMS does). Rollback = from the journal's move to `rolling_back` to the move to
`rolled_back` (verified round trips). Its floor = the world's disconnect + connect latency (the FAILED
store must be disconnected, restored, connected). Simulated seconds; see bench_window.py for the scale.

Usage: python bench/bench_rollback.py [--scales 15,60] [--poll 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fault, load_plan, load_world, make_env, save, table, world_and_journal

DISCONNECT, CONNECT = 300.0, 300.0


def rollback(scale: float, poll: float) -> dict[str, Any]:
    from migrator.engine import runner as engine

    world = load_world("public-to-vpc", time_scale=scale, connect=CONNECT, disconnect=DISCONNECT)
    plan = load_plan("public-to-vpc", poll_interval=poll, max_disconnected=3600.0)
    failing = fault(operation="ConnectCustomKeyStore", connection_error_code="XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND",
                    count=1)
    with world_and_journal(world, [failing]) as (server, journal):
        result = engine.start(plan, make_env(server, journal))
        events = journal.events(result.run_id)
    if result.outcome != "rolled_back":
        raise SystemExit(f"scale {scale}: expected rolled_back, got {result.outcome}: {result.message}")
    began = next(e.at for e in events if e.to_state == "rolling_back")
    ended = next(e.at for e in events if e.to_state == "rolled_back")
    return {"scale": scale, "poll": poll, "rollback": (ended - began) * scale, "floor": DISCONNECT + CONNECT,
            "window": result.stores[0].disconnected_seconds,
            "window_floor": DISCONNECT + CONNECT + DISCONNECT + CONNECT}


def measure(scales: list[float], poll: float) -> list[dict[str, Any]]:
    rows = []
    for scale in scales:
        rows.append(rollback(scale, poll))
        print(f"  measured rollback at scale {scale:g}: {rows[-1]['rollback']:.1f}s", file=sys.stderr)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    body = [[f"{r['scale']:g}", f"{r['poll']:g}", r["rollback"], r["floor"], r["rollback"] - r["floor"],
             r["rollback"] / r["floor"], (r["rollback"] - r["floor"]) / r["poll"], r["window"], r["window_floor"],
             r["window"] / r["window_floor"]] for r in rows]
    return table("(b) Rollback time vs its floor (simulated seconds)",
                 ["scale", "poll", "rollback", "floor", "overhead", "rollback/floor", "overhead/poll",
                  "whole window", "window floor", "window/floor"], body,
                 ["rollback floor = disconnect + connect of the rollback (300 + 300); whole-window floor adds the "
                  "failed forward attempt (disconnect 300 + connect that ends FAILED 300)",
                  "overhead includes real processing multiplied by the scale (see (a))"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="15,60")
    parser.add_argument("--poll", type=float, default=5.0)
    args = parser.parse_args()
    text = render(measure([float(s) for s in args.scales.split(",")], args.poll))
    print(text)
    print(f"saved {save('rollback', text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
