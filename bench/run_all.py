"""Every benchmark in one go, against the rehearsal world; prints the tables and saves them under
bench/results/ (gitignored). Takes about six to seven minutes (the migrations run on a scaled clock).

Usage: python bench/run_all.py [--scale 20] [--polls 2,5,10,15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_api_calls  # noqa: E402
import bench_rollback  # noqa: E402
import bench_window  # noqa: E402
from common import save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=20.0, help="the modest scale (60 is always measured too)")
    parser.add_argument("--polls", default="2,5,10,15")
    args = parser.parse_args()
    started = time.time()
    scales = [args.scale, 60.0] if args.scale != 60.0 else [60.0]
    polls = [float(p) for p in args.polls.split(",")]
    header = (f"# xksmigrate benchmarks, {time.strftime('%Y-%m-%d %H:%M:%S')}, python {sys.version.split()[0]}\n"
              f"Simulated seconds unless marked real; one world per migration; scales {scales}.\n")
    parts = [header]
    print(header, flush=True)

    def emit(text: str) -> None:
        parts.append(text)
        print(text, flush=True)

    migrations = bench_window.measure(scales, polls)
    emit(bench_window.render(migrations))
    emit(bench_api_calls.render(migrations))
    emit(bench_rollback.render(bench_rollback.measure(scales, 5.0)))
    for script, extra in (("bench_startup.py", ["--runs", "15"]), ("bench_status.py", ["--runs", "7"]),
                          ("bench_cell_poller.py", ["--scale", f"{args.scale:g}"])):
        proc = subprocess.run([sys.executable, str(HERE / script), *extra], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{script} failed:\n{proc.stdout}\n{proc.stderr}")
        emit(proc.stdout)
    emit(f"total {time.time() - started:.0f} s\n")
    print(f"saved {save('all', chr(10).join(parts))}", file=sys.stderr)


if __name__ == "__main__":
    main()
