"""(c) DescribeCustomKeyStores calls per migration against the minimum.

Minimum = 4: the snapshot, one look that sees DISCONNECTED, one that proves the update, one that sees
CONNECTED (a tool that knew exactly when KMS finishes could do no better). Fixed-interval polling would
cost 4 + floor / poll_interval. The quota: DescribeCustomKeyStores is 5 requests/s per account and
Region, shared by everyone (facts §8.1). Counts come from the engine's summary (`api_calls`) and are
checked against the world's own call log.

Usage: python bench/bench_api_calls.py [--scales 15,60] [--polls 2,5,10,15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_window import measure
from common import save, table

MINIMUM = 4


def render(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        if r["describe_calls"] != r["describe_calls_world"]:
            raise SystemExit(f"the summary counts {r['describe_calls']} DescribeCustomKeyStores calls, the world "
                             f"saw {r['describe_calls_world']}")
        fixed = MINIMUM + r["floor"] / r["poll"]
        body.append([f"{r['scale']:g}", f"{r['poll']:g}", r["describe_calls"], MINIMUM,
                     r["describe_calls"] / MINIMUM, round(fixed), r["describe_calls"] / fixed,
                     r["describe_calls"] / (r["window"] / 60)])
    return table("(c) DescribeCustomKeyStores calls per migration",
                 ["scale", "poll", "calls", "minimum", "calls/minimum", "fixed-interval", "calls/fixed",
                  "calls per simulated minute"], body,
                 ["minimum = snapshot + seen DISCONNECTED + update proven + seen CONNECTED; fixed-interval = "
                  "minimum + floor/poll (a poll every interval through both waits)",
                  "the engine polls once a (simulated) second around the moment a change is expected to finish; "
                  "at a high scale each real millisecond of a call is many simulated ones, so the count grows "
                  "with the scale"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="15,60")
    parser.add_argument("--polls", default="2,5,10,15")
    args = parser.parse_args()
    rows = measure([float(s) for s in args.scales.split(",")], [float(p) for p in args.polls.split(",")])
    text = render(rows)
    print(text)
    print(f"saved {save('api-calls', text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
