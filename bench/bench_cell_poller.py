"""(g) One poller per cell: ten key stores of one account-Region migrating at once, each through the real engine.

Ten stores of one account and Region (one cell) move from their public endpoint to their own VPC endpoint
service (a real disconnect, update and connect each), ten runs at once in one process: one thread, one
Environment and one SQLite journal per store, all talking boto3 over HTTP to one rehearsal world. The world
has the KMS quotas ([[quotas]], 5 requests per simulated second per operation and cell), so polling too fast
is throttled as AWS would throttle it. Variants:

- `shared`: one ClientFactory for all ten, so one cell poller (an unfiltered DescribeCustomKeyStores answers
  every store) and one token bucket (rate_budget.DEFAULT_RATE requests per simulated second for the cell).
- `per-store`: a ClientFactory (so a poller) per store, with the budget on; the budget is kept per cell
  (rate_budget.cell_budget), so the ten pollers share the bucket and the windows stretch instead.
- `per-store-unbudgeted`: a ClientFactory per store and no budget (cell_rate=None): every store polls as if
  alone, and the cell's describe rate is what the quota sees.

Measured from the world's own log (simulated seconds, its clock), the journals and the bench's own probes
(botocore events and wrappers around the poller and the budget; nothing in the engine changes), per store:
floor = the world's disconnect + connect latency; window = the journaled window (disconnect step to verified
round trip); poll lag = from KMS finishing each change to the describe that showed it *to that store*; budget
wait = time on the window's critical path (outside the two changes and the two lags) that the store spent
waiting for the cell's tokens, for its own calls and for the describes it waited on. Both are simulated seconds
whatever the scale (a 1 request/s bucket hands out one token a simulated second), so they stay as they are at
scale 1; the rest of the overhead (work) is real processing multiplied by the scale, as bench_window explains,
and is divided by it for the projection.

Usage: python bench/bench_cell_poller.py [--scale 20] [--stores 10] [--poll 5] [--rate R]
                                          [--variants shared,per-store,per-store-unbudgeted]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_env, save, table, world_log

ACCOUNT, REGION = "111122223333", "us-east-1"
CELL = (ACCOUNT, REGION)  # log_analysis.Cell
DISCONNECT, CONNECT = 300.0, 300.0  # simulated seconds: AWS documents "about five minutes" for each
QUOTA = 5  # KMS: requests per second per account and Region, each custom key store operation
PROXY_AKID, PROXY_SECRET = "XKSPROXYACCESSKEY2345", "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="  # simulated
GOAL_SECONDS = 1.0  # the goal: each window within 1 s (at scale 1) of the floor, <= 1 describe/s
VARIANTS = ("shared", "per-store", "per-store-unbudgeted")
STORE_OPS = ("DescribeCustomKeyStores", "ConnectCustomKeyStore", "DisconnectCustomKeyStore", "UpdateCustomKeyStore")


# -- the world and the plans ------------------------------------------------------------------------

@dataclass(frozen=True)
class Store:
    n: int

    @property
    def id(self) -> str:
        return f"cks-{0xCE11 * 16 ** 13 + self.n:017x}"

    @property
    def public(self) -> str:
        return f"store{self.n:02d}.xks.example.com"

    @property
    def private(self) -> str:
        return f"store{self.n:02d}-private.xks.example.com"

    @property
    def service_id(self) -> str:
        return f"vpce-svc-0ce11{self.n:012x}"

    @property
    def key_id(self) -> str:
        return f"ce110000-0000-4000-8000-{self.n:012x}"

    @property
    def secret_name(self) -> str:
        return f"store{self.n:02d}-xks-proxy-credential"


def world_data(stores: list[Store], scale: float) -> dict[str, Any]:
    """Every store on a public endpoint of one proxy fleet today, each with a verified endpoint service of its own
    (its NLB in front of the same fleet) for the move; one account, one Region: one cell."""
    data: dict[str, Any] = {
        "world": {"account_id": ACCOUNT, "region": REGION, "time_scale": scale, "vantage": "inside_vpc", "seed": 17},
        "latencies": {"connect": CONNECT, "disconnect": DISCONNECT, "update_propagation": 0,
                      "key_availability_after_connect": 0},
        "quotas": [{"operations": [op], "rate": QUOTA} for op in STORE_OPS],
        "key_managers": [{"name": "cell-hsm", "keys": [{"id": f"store{s.n:02d}-key"} for s in stores]}],
        "proxies": [{"name": "cell-proxy", "key_manager": "cell-hsm",
                     "public_hostnames": [s.public for s in stores],
                     "certificate_hosts": [h for s in stores for h in (s.public, s.private)],
                     "credentials": [{"access_key_id": PROXY_AKID, "secret": PROXY_SECRET}]}],
        "load_balancers": [], "endpoint_services": [], "keystores": [], "keys": [], "secrets": [],
    }
    for s in stores:
        data["load_balancers"].append({"name": f"store{s.n:02d}-nlb", "type": "network", "scheme": "internal",
                                       "availability_zones": [f"{REGION}a", f"{REGION}b"],
                                       "listeners": [{"port": 443, "protocol": "TCP"}], "proxy": "cell-proxy"})
        data["endpoint_services"].append({"service_id": s.service_id, "load_balancer": f"store{s.n:02d}-nlb",
                                          "private_dns_name": s.private, "private_dns_state": "verified",
                                          "allowed_principals": [f"cks.kms.{REGION}.amazonaws.com"],
                                          "acceptance_required": False})
        data["keystores"].append({"id": s.id, "name": f"store{s.n:02d}-xks", "connectivity": "PUBLIC_ENDPOINT",
                                  "uri_endpoint": f"https://{s.public}", "uri_path": "/kms/xks/v1",
                                  "access_key_id": PROXY_AKID, "secret": PROXY_SECRET, "state": "CONNECTED"})
        data["keys"].append({"key_id": s.key_id, "keystore": s.id, "xks_key_id": f"store{s.n:02d}-key"})
        data["secrets"].append({"name": s.secret_name, "keystore": s.id})
    return data


PLAN = """\
[plan]
name = "cell-store-{n:02d}-to-privatelink"
region = "{region}"
max_disconnected = "1h"
poll_interval = "{poll:g}s"

[[keystores]]
id = "{id}"

[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://{private}"
vpc_endpoint_service_name = "com.amazonaws.vpce.{region}.{service_id}"

[keystores.original_credential]
secret = "secretsmanager:arn:aws:secretsmanager:{region}:{account}:secret:{secret_name}"

[keystores.verify]
key_ids = ["{key_id}"]
"""


def plan_for(s: Store, poll: float) -> Any:
    from migrator.plan import parse_plan

    text = PLAN.format(n=s.n, region=REGION, account=ACCOUNT, poll=poll, id=s.id, private=s.private,
                       service_id=s.service_id, secret_name=s.secret_name, key_id=s.key_id)
    return parse_plan(text, f"<bench plan store{s.n:02d}>")


# -- what the bench sees of the budget and the poller (real epoch seconds) -----------------------------------

@dataclass
class Probe:
    """Token waits and poller looks, recorded through botocore events and wrappers: nothing in the engine changes.

    `label` is the ClientFactory's: "cell" when all stores share one, else the store's id."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)
    waits: list[tuple[float, float, str, str, str | None]] = field(default_factory=list)  # t0, t1, label, op, store
    looks: dict[str, list[tuple[float, float, str | None]]] = field(default_factory=dict)  # label: start, end, rid
    observes: dict[str, list[tuple[float, float, str | None]]] = field(default_factory=dict)  # store: a, r, state
    tagged: set[int] = field(default_factory=set)  # the kms clients already tagged
    budgets: list[Any] = field(default_factory=list)  # the cell budgets wrapped (process-wide: unwrapped after)

    def close(self) -> None:
        for budget in self.budgets:
            del budget.acquire, budget._bench_probe

    def watch(self, clients: Any, label: str) -> None:
        from migrator.aws import rate_budget
        from migrator.aws.cell_poller import poller_for

        kms = clients.client("kms")  # made now (the engine reuses it), so the tags go first
        local = self.local

        def tag(event_name: str = "", request: Any = None, **_: Any) -> None:
            op = event_name.rsplit(".", 1)[-1]
            store = None
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                store = json.loads(request.body or b"{}").get("CustomKeyStoreId")
            local.tag, local.rid = (label, op, store), None

        def request_id(response: Any = None, **_: Any) -> None:
            if isinstance(response, tuple) and len(response) > 1 and isinstance(response[1], dict):
                local.rid = response[1].get("ResponseMetadata", {}).get("RequestId")

        if id(kms) not in self.tagged:
            self.tagged.add(id(kms))
            kms.meta.events.register_first("before-send.kms", tag)
            kms.meta.events.register("needs-retry.kms", request_id)
        if clients.cell_rate is not None:
            cell = (clients.endpoint_url or "aws", clients.account_id or "caller", clients.region)
            budget = rate_budget.cell_budget(cell, rate=clients.cell_rate, scale=clients.time_scale)
            if not getattr(budget, "_bench_probe", False):
                acquire = budget.acquire

                def timed_acquire(urgent: bool = False) -> float:
                    t0 = time.time()
                    waited = acquire(urgent)
                    if waited > 0:
                        with self.lock:
                            self.waits.append((t0, time.time(), *getattr(local, "tag", ("?", "?", None))))
                    return waited

                budget.acquire = timed_acquire  # type: ignore[method-assign]
                budget._bench_probe = True  # type: ignore[attr-defined]
                self.budgets.append(budget)
        poller = poller_for(clients)
        if label not in self.looks:
            self.looks[label] = []
            all_stores, describe = poller._all_stores, poller.describe

            def timed_all_stores() -> Any:
                start = time.time()
                try:
                    return all_stores()
                finally:
                    with self.lock:
                        self.looks[label].append((start, time.time(), getattr(local, "rid", None)))

            def timed_describe(store_id: str, polling: bool = False) -> Any:
                asked, state = time.time(), None
                try:
                    found = describe(store_id, polling)
                    state = found.state
                    return found
                finally:
                    with self.lock:
                        self.observes.setdefault(store_id, []).append((asked, time.time(), state))

            poller._all_stores = timed_all_stores  # type: ignore[method-assign]
            poller.describe = timed_describe  # type: ignore[method-assign]


# -- one variant: ten runs at once ---------------------------------------------------------------------------

def factory(server: Any, rate: float | None) -> Any:
    from migrator.aws.clients import ClientFactory
    from migrator.dryrun import DUMMY_CREDENTIALS

    return ClientFactory(region=REGION, endpoint_url=server.endpoint_url, credentials=dict(DUMMY_CREDENTIALS),
                         cell_rate=rate, time_scale=server.world.time_scale, account_id=ACCOUNT)


def run_variant(variant: str, scale: float, count: int, poll: float, rate: float | None = None) -> dict[str, Any]:
    from migrator.aws.rate_budget import DEFAULT_RATE
    from migrator.engine import runner as engine
    from migrator.journal.repository import Journal
    from migrator.rehearsal.server import RehearsalServer
    from migrator.rehearsal.world import model

    stores = [Store(n) for n in range(1, count + 1)]
    world = model.world_from_dict(world_data(stores, scale), "<bench cell world>")
    probe = Probe()
    rate = None if variant == "per-store-unbudgeted" else (rate or DEFAULT_RATE)
    with tempfile.TemporaryDirectory(prefix="xksbench-cell-") as tmp:
        server = RehearsalServer(world).start()
        journals = [Journal.open(f"sqlite:///{tmp}/journal-{s.n:02d}.db") for s in stores]
        try:
            shared = factory(server, rate) if variant == "shared" else None
            envs = []
            for s, journal in zip(stores, journals, strict=True):
                clients = shared or factory(server, rate)
                probe.watch(clients, "cell" if shared else s.id)
                envs.append(make_env(server, journal, clients))
            results: dict[int, Any] = {}

            def drive(i: int) -> None:
                try:
                    results[i] = engine.start(plan_for(stores[i], poll), envs[i])
                except BaseException as exc:  # reported below, with the store
                    results[i] = exc

            threads = [threading.Thread(target=drive, args=(i,), name=f"store{s.n:02d}") for i, s in enumerate(stores)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            real = time.perf_counter() - started
            log = world_log(server)
            views = {}
            for i, s in enumerate(stores):
                result = results.get(i)
                if not hasattr(result, "outcome") or result.outcome != "completed":
                    why = result if not hasattr(result, "outcome") else f"{result.outcome}: {result.message}"
                    raise SystemExit(f"{variant}: {s.id}: {why}")
                views[s.id] = journals[i].get_run(result.run_id).migrations[0]
        finally:
            probe.close()
            for journal in journals:
                journal.close()
            server.stop()
    return {**analyse(variant, scale, poll, stores, log, views, probe, real), "rate": rate}


# -- analysis ---------------------------------------------------------------------------------------------

Interval = tuple[float, float]


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    out = [(max(a, c), min(b, d)) for a, b in xs for c, d in ys]
    return _merge(i for i in out if i[1] > i[0])


def _length(xs: list[Interval]) -> float:
    return sum(b - a for a, b in xs)


def analyse(variant: str, scale: float, poll: float, stores: list[Store], log: list[dict[str, Any]],
            views: dict[str, Any], probe: Probe, real: float) -> dict[str, Any]:
    from migrator.rehearsal.world.log_analysis import calls, peak_rate, throttled

    offset = statistics.median(e["wall"] - e["t"] / scale for e in calls(log))  # wall = offset + t / scale
    per_store = [_store_figures(s, scale, log, views[s.id], probe, offset) for s in stores]
    # The cell's traffic while stores were in their windows (first disconnect step to last verification)
    first = (min(r["start"] for r in per_store) - offset) * scale
    last = (max(r["end"] for r in per_store) - offset) * scale
    during = [e for e in log if first <= e.get("t", -1.0) <= last]
    return {"variant": variant, "scale": scale, "poll": poll, "stores": per_store, "floor": DISCONNECT + CONNECT,
            "real": real, "span": last - first, "describes": len(calls(during, "DescribeCustomKeyStores", CELL)),
            "peak": peak_rate(during, "DescribeCustomKeyStores", CELL),
            "peak_all_ops": max(peak_rate(during, op, CELL) for op in STORE_OPS),
            "throttled": len(throttled(log, CELL)), "disconnect_spread": _spread(log, "DisconnectCustomKeyStore")}


def _store_figures(s: Store, scale: float, log: list[dict[str, Any]], view: Any, probe: Probe,
                   offset: float) -> dict[str, Any]:
    """One store's window taken apart: floor, poll lag, budget wait and work (simulated seconds)."""
    from migrator.rehearsal.world.log_analysis import calls

    def wall(t: float) -> float:
        return offset + t / scale

    def arrived(operation: str) -> float:  # the store's (last) accepted call of `operation`, world time
        return max(e["t"] for e in calls(log, operation, CELL) if e.get("keystore") == s.id and not e.get("error"))

    by_rid = {e["request_id"]: e for e in calls(log) if e.get("request_id")}
    label = "cell" if "cell" in probe.looks else s.id
    looks = probe.looks[label]
    ends = [look[1] for look in looks]
    lags, seen = [], []
    for done, state in (("DisconnectCompleted", "DISCONNECTED"), ("ConnectCompleted", "CONNECTED")):
        changed = max(e["t"] for e in log if e.get("kind") == "state" and e.get("operation") == done
                      and e.get("keystore") == s.id)
        asked, answered = next((a, r) for a, r, shown in probe.observes[s.id] if shown == state and r >= wall(changed))
        # the look that answered: the last of this store's poller that ended by then and began after it asked
        look = next(lk for lk in reversed(looks[:bisect.bisect_right(ends, answered)]) if lk[0] >= asked)
        entry = by_rid.get(look[2])
        seen.append(entry["t"] if entry is not None else (look[1] - offset) * scale)
        lags.append(seen[-1] - changed)
    # The window's critical path besides the two changes and the two lags: up to the disconnect call, from
    # seeing DISCONNECTED to the connect call (observe, update, prove it, observe, connect), from seeing
    # CONNECTED to the verified round trip. Token waits elsewhere (polls during a change) lengthen nothing.
    critical = _merge([(view.disconnected_at, wall(arrived("DisconnectCustomKeyStore"))),
                       (wall(seen[0]), wall(arrived("ConnectCustomKeyStore"))),
                       (wall(seen[1]), view.verified_at)])
    describe_waits = _merge((t0, t1) for t0, t1, lab, op, _ in probe.waits
                            if lab == label and op == "DescribeCustomKeyStores")
    observing = _merge((a, r) for a, r, _ in probe.observes[s.id])
    own = [(t0, t1) for t0, t1, _, _, store in probe.waits if store == s.id]
    wait = _length(_intersect(_merge(own + _intersect(describe_waits, observing)), critical)) * scale
    overhead = (view.verified_at - view.disconnected_at) * scale - (DISCONNECT + CONNECT)
    work = _length(critical) * scale - wait
    unexplained = overhead - sum(lags) - wait - work  # a change slower than the world's latency (never, here)
    return {"store": s.id, "overhead": overhead, "lag": sum(lags), "lag_change": max(lags), "wait": wait,
            "work": work, "unexplained": unexplained, "projected": sum(lags) + wait + unexplained + work / scale,
            "start": view.disconnected_at, "end": view.verified_at}


def _spread(log: list[dict[str, Any]], operation: str) -> float:
    from migrator.rehearsal.world.log_analysis import calls

    times = [e["t"] for e in calls(log, operation, CELL) if not e.get("error")]
    return max(times) - min(times) if times else 0.0


def measure(variants: list[str], scale: float, count: int, poll: float,
            rate: float | None = None) -> list[dict[str, Any]]:
    rows = []
    for variant in variants:
        rows.append(run_variant(variant, scale, count, poll, rate))
        worst = max(r["overhead"] for r in rows[-1]["stores"])
        odd = max(abs(r["unexplained"]) for r in rows[-1]["stores"])
        print(f"  measured {variant}: {count} stores, worst window - floor {worst:.1f}s, {rows[-1]['real']:.0f} real s"
              f" (window not explained by lag, wait and work: at most {odd:.2f}s)", file=sys.stderr)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        st = r["stores"]
        over, proj = [x["overhead"] for x in st], [x["projected"] for x in st]
        met = max(proj) <= GOAL_SECONDS and r["peak"] <= 1
        body.append([r["variant"], len(st), f"{r['scale']:g}", "none" if r["rate"] is None else f"{r['rate']:g}",
                     max(over), statistics.median(over),
                     max(x["lag"] for x in st), statistics.median(x["lag"] for x in st),
                     max(x["lag_change"] for x in st), max(x["wait"] for x in st),
                     statistics.median(x["work"] for x in st) / r["scale"], max(proj), statistics.median(proj),
                     r["describes"], r["describes"] / r["span"], r["peak"], r["peak_all_ops"], r["throttled"],
                     "yes" if met else "no"])
    notes = [f"{len(rows[0]['stores'])} stores of one account-Region, each public endpoint -> its own VPC endpoint "
             f"service, one run (thread, journal) each, all started at once; poll_interval {rows[0]['poll']:g}s; "
             f"world quota {QUOTA}/s per operation and cell; floor = disconnect + connect = {rows[0]['floor']:g} s",
             "w-f = window - floor: the journaled window (disconnect step to verified round trip) minus the floor, "
             "max and median over the stores (simulated s, at the run's scale)",
             "lag: from KMS finishing the disconnect, and the connect, to the DescribeCustomKeyStores that showed it "
             "to *that* store (the look its poller answered with), summed (lag/change: the larger of the two); "
             "budget wait: on the window's critical path (outside the changes and the lags), waiting for the cell's "
             "tokens, for its own calls and for the describes it waited on. Both are simulated seconds at any scale "
             "and are kept as they are at scale 1 (the lag also holds some amplified processing: conservative)",
             "work real s = (w-f - lag - budget wait) / scale, median store: real processing, multiplied by the scale "
             "in the simulation; at scale 1 = lag + budget wait + work real s, max and median over the stores",
             "describes: DescribeCustomKeyStores the cell received from the first disconnect step to the last "
             "verification; describes/s their mean per simulated second; peak/s the most in any 1 simulated second "
             "(log_analysis.peak_rate, throttled ones included); peak all ops/s: the most of any one of the four "
             "store operations; throttled: ThrottlingException answers in the whole run",
             "budget/s: the cell's token bucket (rate_budget, burst 5 - rate) for the four store operations, requests "
             "per simulated second; none: cell_rate=None. The cell's looks (cell_poller.LookPace) average at most 1 a "
             "second and may go two at once (a step's look, e.g. an update's proof, right after a poll): describes/s "
             "is the average; the bucket keeps two in any second by the process's clock, the world counts arrivals, "
             "which the process's own scheduling moves by tens of real ms (a simulated second at scale 20), so "
             "peak/s may read 3; the preflights' own describes (one unfiltered per store) come before the windows",
             f"goal: every store within {GOAL_SECONDS:g} s of the floor at scale 1 and peak/s <= 1 (the issue's words "
             "read strictly; with the proof of each update a look of its own, the strict reading leaves a store a "
             "tick's wait on its critical path)",
             "disconnect calls spread over " + ", ".join(f"{r['variant']} {r['disconnect_spread']:.0f} s"
                                                         for r in rows)
             + " (the cell admits one window per rate_budget.WINDOW_CALLS tokens: a store waits its turn while still "
             "connected; the preflights share the cell's budget too); each window is measured from its own disconnect"]
    base = next((r for r in rows if r["variant"] == "shared"), None)
    for r in rows:
        if base is not None and r is not base:
            rate = (r["describes"] / r["span"]) / (base["describes"] / base["span"])
            worst = max(x["overhead"] for x in r["stores"]) / max(max(x["overhead"] for x in base["stores"]), 1e-9)
            notes.append(f"{r['variant']} / shared: {rate:.2f}x the describe rate, {worst:.2f}x the worst w-f")
    return table(f"(g) {len(rows[0]['stores'])} stores in one cell at once: one poller per cell vs per-store polling "
                 "(simulated seconds)",
                 ["variant", "stores", "scale", "budget/s", "max w-f", "median w-f", "max lag", "median lag",
                  "max lag/change", "max budget wait", "work real s", "max at scale 1", "median at scale 1",
                  "describes", "describes/s", "peak/s", "peak all ops/s", "throttled", "goal"], body, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--poll", type=float, default=5.0, help="each plan's poll_interval (seconds)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rate", type=float, default=None,
                        help="the cell budget of the budgeted variants, requests per simulated second "
                             "(default rate_budget.DEFAULT_RATE)")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    text = render(measure(variants, args.scale, args.stores, args.poll, args.rate))
    print(text)
    print(f"saved {save('cell-poller', text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
