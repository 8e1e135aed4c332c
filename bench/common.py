"""Shared plumbing for the benchmarks: a rehearsal world over HTTP, the engine in-process, tables, timing.

The engine meets the world exactly as it meets AWS: boto3 over HTTP to the world's endpoint URL. Nothing
here is mocked; only time is scaled (the world's `time_scale` simulated seconds pass per real second).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent


def load_world(name: str = "public-to-vpc", **overrides: Any) -> Any:
    """plans/worlds/<name>.toml; overrides go to [world] (time_scale, seed) or [latencies]."""
    from migrator.rehearsal.world import model

    data = tomllib.loads((REPO / "plans" / "worlds" / f"{name}.toml").read_text())
    for key, value in overrides.items():
        section = "world" if key in ("time_scale", "seed") else "latencies"
        data.setdefault(section, {})[key] = value
    return model.world_from_dict(data, f"{name}.toml")


def load_plan(name: str = "public-to-vpc", **overrides: Any) -> Any:
    from migrator.plan import load_plan as _load

    plan = _load(REPO / "plans" / f"{name}.toml")
    return dataclasses.replace(plan, **overrides) if overrides else plan


@contextlib.contextmanager
def world_and_journal(world: Any, faults: Sequence[Any] = ()) -> Iterator[tuple[Any, Any]]:
    """A started rehearsal world and a fresh SQLite journal, both gone afterwards."""
    from migrator.journal.repository import Journal
    from migrator.rehearsal.server import RehearsalServer

    with tempfile.TemporaryDirectory(prefix="xksbench-") as tmp:
        server = RehearsalServer(world, faults).start()
        journal = Journal.open(f"sqlite:///{tmp}/journal.db")
        try:
            yield server, journal
        finally:
            journal.close()
            server.stop()


def make_env(server: Any, journal: Any, clients: Any = None) -> Any:
    """An engine Environment for `server`, as `run --dry-run` builds it (dummy credentials, auto-approve, the
    world's vantage point); `clients`: a ClientFactory of the caller's (default: a new one, no cell budget)."""
    from migrator.aws.clients import ClientFactory
    from migrator.aws.secret_refs import resolve_secret
    from migrator.dryrun import DUMMY_CREDENTIALS
    from migrator.engine.clock import Clock
    from migrator.engine.runner import Environment, Observer

    if clients is None:
        clients = ClientFactory(region=server.world.region, endpoint_url=server.endpoint_url,
                                credentials=dict(DUMMY_CREDENTIALS))

    def resolve(host: str) -> str:  # where this machine reaches a proxy host: the world's vantage (dryrun.py)
        address = server.vantage().get(host.lower().rstrip("."))
        if address is None:
            raise OSError(f"{host} does not resolve from this machine (private DNS or unknown host)")
        return str(address)

    return Environment(journal=journal, clients=clients, clock=Clock(server.world.time_scale), observer=Observer(),
                       approve=lambda question: True,
                       secret_resolver=lambda ref: resolve_secret(ref, client_factory=clients), who="bench",
                       dry_run=True, extra_roots_pem=[Path(server.ca_bundle_path).read_bytes()], resolve=resolve)


def world_log(server: Any) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.endpoint_url}/_rehearsal/log", timeout=10) as response:
        return [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]


def fault(**fields: Any) -> Any:
    from migrator.rehearsal.world import model

    return model.Fault(**fields)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> str:
    """A GitHub-flavoured markdown table (readable in a terminal and pasteable into a note)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [f"### {title}", "", "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def median_seconds(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time of `runs` executions of argv (each must exit 0)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(list(argv), capture_output=True, env=env)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return statistics.median(times)


def save(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(text)
    return path
