"""(h) A fleet of 100 key stores in waves: its span against ceil(stores / max_in_flight) x one store's time.

`xksmigrate fleet run FILE --dry-run --yes --json --world-log PATH --time-scale S` as a subprocess, as an operator
runs it: 10 accounts x 2 Regions x 5 stores, each moving from its public endpoint to its own VPC endpoint
service (a real disconnect, update and connect each) on DBOS against the world derived from the fleet file; the
canary is one store, the ramp the default (waves of 2, 4, 8, ... after the canary), bake 0 s, failure tolerance
0. A 1-store fleet of the same shape runs first, in the same bench run and at the same scale: its span is one
store's time. Then one fleet per max_in_flight value. From the world's own log (simulated seconds, its clock)
and the fleet's `--json` summary:

- span: the first accepted DisconnectCustomKeyStore to the last store CONNECTED again;
- ideal: ceil(stores / max_in_flight) x one store's time (every slot always busy, no preflight, no gates);
  waves: the same within the fleet's waves (sum over waves of ceil(wave / max_in_flight) x one store's time),
  since a wave ends before the next starts and the first waves (1, 2, 4, ...) are smaller than max_in_flight;
- out at once: the most stores out of CONNECTED at one moment (must be <= max_in_flight);
- cell rate: the highest rate, over every account-Region cell, of the four budgeted calls together
  (DescribeCustomKeyStores, Disconnect, Update, Connect), in any 1 simulated second and averaged over any 60
  simulated seconds; against AWS's quota (5/s per cell) and the tool's budget (1/s, burst 4). Bounds: at most 5
  in any second, at most 60 + 5 in any 60 s (the bucket's burst on top of its rate);
- throttled: calls the world refused with ThrottlingException (the derived world has no [[quotas]], so none
  can be: the rates above are what would meet AWS's);
- window mean/max: each store's own disconnect to CONNECTED; none out: seconds of the span in which no store was
  out of CONNECTED (between waves, and while every slot's store is still in its preflight);
- cpu/wall and preflight: the process's CPU seconds per real second, and each store's run from its first
  journal event to its disconnect call (real seconds), which say how much of the span is this machine's work.

Everything that really takes time (a boto3 call, a TLS handshake, a journal commit, DBOS's own polling every
0.5 real s) is multiplied by the time scale, as bench/README.md explains, and the world, DBOS and every store in
flight share one Python process: at scale 300, 0.1 real second is 30 simulated ones. With many stores in flight
a store's preflight takes seconds of real time (minutes on the world's clock) and its window outgrows its
downtime budget (the engine counts the budget from just before its disconnect call), so the store rolls back and
the fleet stops (failure tolerance 0): that is this machine, not AWS, and a lower --time-scale or a larger
--max-disconnected tells the two apart.

Exit 1 if a fleet did not complete or a bound was broken.

Usage: python bench/bench_fleet.py [--in-flight 5,10,20] [--time-scale 300] [--accounts 10] [--stores-per-cell 5]
                                   [--max-disconnected 15m] [--keep DIR] [--json]
Measured with: python bench/bench_fleet.py (2 cores: about 5 minutes; in-flight 5 completed, 10 and 20 stopped on
a store's budget as above) and python bench/bench_fleet.py --in-flight 10,20 --max-disconnected 25m (10 completed,
20 stopped again).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table

from migrator.rehearsal.world.log_analysis import (
    calls,
    calls_per_cell,
    first_disconnects,
    most_disconnected_at_once,
    peak_rate,
    throttled,
)

CLI = [sys.executable, "-m", "migrator.cli"]
REGIONS = {"us-east-1": "use1", "eu-west-1": "euw1"}
BUDGETED = ("DescribeCustomKeyStores", "DisconnectCustomKeyStore", "UpdateCustomKeyStore", "ConnectCustomKeyStore")
QUOTA = 5.0  # AWS KMS: requests per second per account and Region for these operations
RATE, BURST = 1.0, 5  # migrator/aws/rate_budget.py: DEFAULT_RATE, DEFAULT_BURST
LONG_WINDOW = 60.0  # simulated seconds
TIMEOUT = 1800.0  # real seconds a fleet process may take before the bench gives up on it


# -- the fleet file ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    accounts: int = 10
    regions: tuple[str, ...] = tuple(REGIONS)
    stores_per_cell: int = 5
    max_disconnected: str = "15m"  # each store's downtime budget ([defaults])

    @property
    def stores(self) -> int:
        return self.accounts * len(self.regions) * self.stores_per_cell


def account_id(a: int) -> str:
    return f"{100000000000 + a * 111111111:012d}"  # 12 digits, one account each


def store_id(a: int, r: int, s: int) -> str:
    return f"cks-{0xF1EE7 * 16 ** 12 + (a * 16 + r) * 16 ** 3 + s:017x}"  # 17 hex digits, unique


def store_table(a: int, r: int, s: int, region: str) -> dict[str, Any]:
    ref, label = store_id(a, r, s), f"acct{a:02d}-{s + 1}"
    return {"id": ref,
            "target": {"connectivity": "VPC_ENDPOINT_SERVICE",
                       "uri_endpoint": f"https://{label}-private.{REGIONS[region]}.xks.example.com",
                       "vpc_endpoint_service_name": f"com.amazonaws.vpce.{region}.vpce-svc-{ref[4:]}"},
            "original_credential": {"secret": f"secretsmanager:arn:aws:secretsmanager:{region}:{account_id(a)}:"
                                              f"secret:{label}-xks-proxy-credential"}}


def fleet_file(path: Path, shape: Shape, max_in_flight: int) -> list[str]:
    """Write the fleet (the first store the canary); its store ids in file order."""
    groups = [(a, region, [store_table(a, r, s, region) for s in range(shape.stores_per_cell)])
              for a in range(shape.accounts) for r, region in enumerate(shape.regions)]
    targets = [{"account": f"acct{a:02d}", "region": region, "stores": stores} for a, region, stores in groups]
    refs = [str(s["id"]) for _, _, stores in groups for s in stores]
    data = {"fleet": {"name": f"bench-{shape.stores}-stores", "account_id": account_id(0)},
            "defaults": {"max_disconnected": shape.max_disconnected, "poll_interval": "5s"},
            "access": {"role_name": "xks-migrator", "external_id": "xksmigrate-rehearsal", "session_duration": "1h"},
            "accounts": {f"acct{a:02d}": {"account_id": account_id(a)} for a in range(shape.accounts)},
            "rollout": {"canary": [refs[0]], "max_in_flight": max_in_flight, "failure_tolerance": 0, "bake": "0s"},
            "targets": targets}
    path.write_text(tomli_w.dumps(data))
    return refs


def wave_sizes(stores: int) -> list[int]:
    """The default ramp's waves: the canary, then 2, 4, 8, ... (rollout.plan_waves; every proxy here is its
    store's own, so no store is deferred)."""
    sizes, rest, size = [1], stores - 1, 2
    while rest > 0:
        sizes.append(min(size, rest))
        rest, size = rest - sizes[-1], size * 2
    return sizes


# -- one fleet run -----------------------------------------------------------------------------------

def tool_env(workdir: Path) -> dict[str, str]:
    """Dummy AWS credentials, nothing inherited from AWS_* or XKSMIGRATE_*, the state under `workdir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIDBENCHFLEET000000", AWS_SECRET_ACCESS_KEY="bench-fleet-dummy",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, XDG_STATE_HOME=str(workdir / "state"))
    return env


@dataclass
class Result:
    label: str
    stores: int
    max_in_flight: int
    exit_code: int
    outcome: str
    completed: int
    wall: float  # real seconds of the process
    cpu: float = math.nan  # its CPU seconds (user + system)
    preflight_median: float = math.nan  # real seconds of a store's own preflight and start-up (`preflights`)
    preflight_max: float = math.nan
    span: float = math.nan  # simulated seconds
    one_store: float = math.nan
    ideal: float = math.nan
    wave_ideal: float = math.nan
    out_at_once: int = 0
    window_mean: float = math.nan  # a store's own window (disconnect to CONNECTED), mean over the fleet
    window_max: float = math.nan
    idle: float = math.nan  # span seconds with no store out (between waves: the gate, the next preflights)
    peak_1s: int = 0  # the busiest cell's budgeted calls in one simulated second
    peak_60s: int = 0  # ... and in 60 simulated seconds
    cells: int = 0
    calls: int = 0  # budgeted calls, every cell
    throttled: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.span / self.ideal if self.ideal else math.nan

    @property
    def wave_ratio(self) -> float:
        return self.span / self.wave_ideal if self.wave_ideal else math.nan


@dataclass
class Run:
    code: int
    summary: dict[str, Any]
    log: list[dict[str, Any]]  # the world's
    lines: list[dict[str, Any]]  # the process's --json lines (each store's journal events among them)
    wall: float  # real seconds
    cpu: float  # the process's user + system CPU seconds


def run_fleet(path: Path, workdir: Path, scale: float) -> Run:
    """`fleet run PATH --dry-run --yes --json` in `workdir`; its stdout and stderr are left there."""
    log = workdir / "world-log.jsonl"
    argv = [*CLI, "fleet", "run", str(path), "--dry-run", "--yes", "--json", "--world-log", str(log),
            "--time-scale", f"{scale:g}", "--state", f"sqlite:///{workdir}/journal.db"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=workdir, env=tool_env(workdir), text=True, capture_output=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (workdir / "stdout.jsonl").write_text(done.stdout)
    (workdir / "stderr.txt").write_text(done.stderr)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    summaries = [line for line in lines if line.get("type") == "fleet_summary"]
    if not summaries:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode} with no fleet summary:\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    world = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    return Run(done.returncode, summaries[-1], world, lines, wall, cpu)


def preflights(lines: list[dict[str, Any]]) -> list[float]:
    """Each store's real seconds from its run's first journal event to its DisconnectCustomKeyStore call: its
    own preflight and start-up (the journal's `at` is wall-clock time)."""
    first: dict[str, float] = {}
    down: dict[str, float] = {}
    for e in lines:
        ref, at = e.get("fleet_store"), e.get("at")
        if not isinstance(ref, str) or not isinstance(at, int | float):
            continue
        first[ref] = min(first.get(ref, at), at)
        if e.get("kind") == "call" and e.get("operation") == "DisconnectCustomKeyStore" and ref not in down:
            down[ref] = at
    return [down[ref] - first[ref] for ref in down]


def span_of(log: list[dict[str, Any]]) -> float:
    """From the first accepted DisconnectCustomKeyStore to the last store CONNECTED again after it."""
    downs = [e["t"] for e in calls(log, "DisconnectCustomKeyStore", accepted=True) if e.get("error") is None]
    if not downs:
        return math.nan
    first = min(downs)
    back = [e["t"] for e in log if e.get("kind") == "state" and e.get("to") == "CONNECTED" and e["t"] > first]
    return float(max(back)) - float(first) if back else math.nan


def windows(log: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each store's (first accepted disconnect, CONNECTED again after it), simulated seconds."""
    down: dict[str, float] = {}
    for e in calls(log, "DisconnectCustomKeyStore", accepted=True):
        if e.get("error") is None:
            down.setdefault(str(e.get("keystore")), float(e["t"]))
    out = []
    for ref, start in down.items():
        back = [float(e["t"]) for e in log if e.get("kind") == "state" and e.get("keystore") == ref
                and e.get("to") == "CONNECTED" and e["t"] > start]
        if back:
            out.append((start, min(back)))
    return out


def none_out(spans: list[tuple[float, float]]) -> float:
    """Simulated seconds between the first window's start and the last one's end in which no store was out."""
    if not spans:
        return math.nan
    idle, reach = 0.0, 0.0
    for i, (start, end) in enumerate(sorted(spans)):
        if i and start > reach:
            idle += start - reach
        reach = end if i == 0 else max(reach, end)
    return idle


def measure_one(label: str, shape: Shape, max_in_flight: int, scale: float, tmp: Path) -> Result:
    workdir = tmp / label
    workdir.mkdir(parents=True)
    path = workdir / "fleet.toml"
    refs = fleet_file(path, shape, max_in_flight)
    print(f"  {label}: {len(refs)} stores, max_in_flight {max_in_flight}, scale {scale:g} ...", file=sys.stderr,
          flush=True)
    run = run_fleet(path, workdir, scale)
    code, summary, log = run.code, run.summary, run.log
    outcomes = [str(ks.get("outcome")) for ks in summary.get("keystores") or []]
    cells = calls_per_cell(log)
    result = Result(label, len(refs), max_in_flight, code, str(summary.get("outcome")),
                    outcomes.count("completed"), run.wall, cpu=run.cpu, span=span_of(log),
                    out_at_once=most_disconnected_at_once(log)[0], cells=len(cells),
                    calls=len(calls(log, BUDGETED)), throttled=len(throttled(log)))
    if pre := preflights(run.lines):
        result.preflight_median, result.preflight_max = statistics.median(pre), max(pre)
    spans = windows(log)
    if spans:
        result.window_mean = sum(end - start for start, end in spans) / len(spans)
        result.window_max = max(end - start for start, end in spans)
        result.idle = none_out(spans)
    if cells:
        result.peak_1s = max(peak_rate(log, BUDGETED, cell, window=1.0) for cell in cells)
        result.peak_60s = max(peak_rate(log, BUDGETED, cell, window=LONG_WINDOW) for cell in cells)
    complete = code == 0 and result.outcome == "completed" and result.completed == len(refs)
    if not complete:
        failed = [ks for ks in summary.get("keystores") or [] if ks.get("outcome") not in ("completed", "not_started")]
        result.problems.append(f"the fleet did not complete: {result.outcome}, exit {code}, "
                               f"{result.completed}/{len(refs)} stores completed; {summary.get('message')}")
        result.problems += [f"  {ks['ref']} (wave {ks.get('wave')}): {ks.get('outcome')}, window "
                            f"{ks.get('window_seconds')} s of {ks.get('budget_seconds')}: {ks.get('message')}"
                            for ks in failed[:5]]
    order = first_disconnects(log)
    if order and order[0] != refs[0]:
        result.problems.append(f"the canary {refs[0]} was not the first store disconnected ({order[0]} was)")
    downs = [str(e.get("keystore")) for e in calls(log, "DisconnectCustomKeyStore", accepted=True)
             if e.get("error") is None]
    if complete and sorted(downs) != sorted(refs):
        result.problems.append("not every store was disconnected exactly once")
    if result.out_at_once > max_in_flight:
        result.problems.append(f"{result.out_at_once} stores out at once, more than max_in_flight {max_in_flight}")
    if result.peak_1s > BURST:
        result.problems.append(f"{result.peak_1s} budgeted calls in one simulated second in a cell (burst {BURST})")
    if result.peak_60s > RATE * LONG_WINDOW + BURST:
        result.problems.append(f"{result.peak_60s} budgeted calls in {LONG_WINDOW:g} simulated seconds in a cell "
                               f"(at most {RATE * LONG_WINDOW + BURST:g})")
    if result.throttled:
        result.problems.append(f"{result.throttled} calls throttled")
    return result


def measure(in_flight: list[int], scale: float, shape: Shape, keep: Path | None = None) -> list[Result]:
    """The 1-store fleet, then one fleet per max_in_flight; `keep`: leave each fleet's directory (its fleet file,
    world log, journal, stdout and stderr) there instead of in a temporary one."""
    with tempfile.TemporaryDirectory(prefix="xksbench-fleet-") as tmp:
        work = Path(keep or tmp)
        one = measure_one("one-store", replace(shape, accounts=1, regions=shape.regions[:1], stores_per_cell=1), 1,
                          scale, work)
        results = [one]
        for n in in_flight:
            r = measure_one(f"in-flight-{n}", shape, n, scale, work)
            r.one_store = one.span
            r.ideal = math.ceil(r.stores / n) * one.span
            r.wave_ideal = sum(math.ceil(w / n) for w in wave_sizes(r.stores)) * one.span
            results.append(r)
        one.one_store, one.ideal, one.wave_ideal = one.span, one.span, one.span
    return results


# -- the table ---------------------------------------------------------------------------------------

def render(results: list[Result], scale: float, shape: Shape, total: float) -> str:
    rows = [[r.label, r.stores, r.max_in_flight, r.outcome, f"{r.span:.0f}", f"{r.wall:.1f}",
             f"{r.cpu / r.wall:.2f}", f"{r.preflight_median:.2f} / {r.preflight_max:.2f}", f"{r.one_store:.0f}",
             f"{r.ideal:.0f}", f"{r.ratio:.2f}", f"{r.wave_ideal:.0f}", f"{r.wave_ratio:.2f}",
             f"{r.window_mean:.0f} / {r.window_max:.0f}", f"{r.idle:.0f}", f"{r.out_at_once} <= {r.max_in_flight}",
             f"{r.peak_1s} ({QUOTA:g} / {BURST})",
             f"{r.peak_60s / LONG_WINDOW:.2f} ({QUOTA:g} / {RATE:g})", r.throttled] for r in results]
    headers = ["fleet", "stores", "in flight", "outcome", "span s", "wall real s", "cpu/wall",
               "preflight median/max real s", "one store s", "ideal s",
               "span/ideal", "waves ideal s", "span/waves", "window mean/max s", "none out s", "out at once",
               "cell 1 s peak (quota/burst)", "cell 60 s mean /s (quota/budget)", "throttled"]
    problems = [f"{r.label}: {p}" for r in results for p in r.problems]
    notes = [f"time scale {scale:g} (simulated seconds per real second); {shape.accounts} accounts x "
             f"{len(shape.regions)} Regions x {shape.stores_per_cell} stores; waves {wave_sizes(shape.stores)}; "
             f"max_disconnected {shape.max_disconnected}, bake 0 s, failure tolerance 0; one store = the 1-store "
             "fleet's span in this run",
             "span: first accepted DisconnectCustomKeyStore to the last store CONNECTED again (the world's clock); "
             "wall: the whole `fleet run` process, preflight and DBOS start-up included; cpu/wall: its CPU seconds "
             "per real second (1.00 = one core busy; the world, DBOS and every store share one process and its "
             "GIL); preflight: a store's run from its first journal event to its disconnect call (real seconds, "
             f"x {scale:g} on the world's clock)",
             "store window: each store's own disconnect to CONNECTED; none out: seconds of the span with no store "
             "out of CONNECTED (between waves: the health gate, the next stores' preflight and start-up)",
             "ideal = ceil(stores / in flight) x one store; waves ideal = sum over the waves of ceil(wave / in "
             "flight) x one store (a wave ends before the next starts)",
             "cell peak / mean: the busiest account-Region cell's DescribeCustomKeyStores + Disconnect + Update + "
             "Connect, in any 1 simulated second and per second over any 60 (AWS quota 5/s; budget 1/s, burst 4)",
             "throttled: the derived world has no [[quotas]], so nothing can be; the cell rates are what AWS would "
             "see",
             f"total {total:.0f} real s",
             *(problems or ["every fleet completed within its bounds"])]
    return table(f"(h) a fleet of {shape.stores} stores in waves, by max_in_flight", headers, rows, notes)


def plain(value: Any) -> Any:
    """`value` with every NaN as null (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", default="5,10,20", help="max_in_flight values, comma-separated")
    parser.add_argument("--time-scale", type=float, default=300.0, help="simulated seconds per real second")
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--stores-per-cell", type=int, default=5, help="stores per account and Region (2 Regions)")
    parser.add_argument("--max-disconnected", default="15m",
                        help="each store's downtime budget ([defaults] max_disconnected; at most 25m with the "
                             "1h role sessions)")
    parser.add_argument("--keep", type=Path, help="keep each fleet's directory (world log, stdout) under this one")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    args = parser.parse_args()
    if not 1 <= args.accounts <= 99 or not 1 <= args.stores_per_cell <= 4095:
        parser.error("--accounts 1-99, --stores-per-cell 1-4095")
    in_flight = [int(n) for n in args.in_flight.split(",") if n.strip()]
    if not in_flight or min(in_flight) < 1:
        parser.error("--in-flight: one or more positive integers")
    shape = Shape(accounts=args.accounts, stores_per_cell=args.stores_per_cell,
                  max_disconnected=args.max_disconnected)
    started = time.perf_counter()
    results = measure(in_flight, args.time_scale, shape, args.keep)
    total = time.perf_counter() - started
    if args.json:
        fleets = [{**asdict(r), "ratio": r.ratio, "wave_ratio": r.wave_ratio,
                   "peak_60s_per_second": r.peak_60s / LONG_WINDOW} for r in results]
        doc = {"time_scale": args.time_scale, "shape": asdict(shape), "waves": wave_sizes(shape.stores),
               "quota_per_second": QUOTA, "budget_per_second": RATE, "budget_burst": BURST,
               "total_real_seconds": total, "fleets": fleets}
        print(json.dumps(plain(doc), indent=2))
    else:
        text = render(results, args.time_scale, shape, total)
        print(text)
        print(f"saved {save('fleet', text)}", file=sys.stderr)
    if any(r.problems for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
