"""(d) `xksmigrate --help` start-up against `python -c "import typer"` (median of N runs each), and proof
(`python -X importtime`) that --help imports none of boto3, botocore, SQLAlchemy, DBOS, rich or the engine,
preflight and rehearsal packages (typer's plain help formatter needs none of them).

Usage: python bench/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, median_seconds, save, table

HEAVY = ("boto3", "botocore", "sqlalchemy", "dbos", "rich", "migrator.engine", "migrator.preflight",
         "migrator.rehearsal")


def imported_by_help() -> set[str]:
    code = "import sys; from migrator.cli.commands import main; sys.argv = ['xksmigrate', '--help']; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    if "typer" not in names:
        raise SystemExit(f"-X importtime did not list typer; stderr: {proc.stderr[-300:]}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = str(BIN / "xksmigrate")
    rows = []
    baseline = median_seconds([sys.executable, "-c", "import typer"], args.runs)
    bare = median_seconds([sys.executable, "-c", "pass"], args.runs)
    for label, argv in (("xksmigrate --help", [exe, "--help"]), ("xksmigrate run --help", [exe, "run", "--help"]),
                        ("xksmigrate status --help", [exe, "status", "--help"])):
        t = median_seconds(argv, args.runs)
        rows.append([label, t * 1000, baseline * 1000, t / baseline, (t - bare) / (baseline - bare)])
    names = imported_by_help()
    heavy = sorted(n for n in names if n.split(".")[0] in HEAVY or n in HEAVY or n.startswith(HEAVY))
    text = table(f"(d) Start-up, median of {args.runs} runs (ms)",
                 ["command", "median ms", "import typer ms", "ratio", "ratio above bare python"], rows,
                 [f"bare `python -c pass`: {bare * 1000:.1f} ms; the last column compares the time each adds on "
                  "top of the interpreter",
                  f"--help imports {'/'.join(HEAVY)}: {', '.join(heavy) or 'none'} "
                  f"({len(names)} modules in all, by python -X importtime)"])
    print(text)
    print(f"saved {save('startup', text)}", file=sys.stderr)
    if heavy:
        raise SystemExit(f"--help imported heavy modules: {heavy}")


if __name__ == "__main__":
    main()
