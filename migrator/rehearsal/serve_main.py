"""`xksmigrate sim serve`: run the rehearsal world in the foreground until SIGTERM or SIGINT.

The first stdout line is one JSON object (endpoint_url, region, account_id, time_scale, ca_bundle, log, vantage,
accounts: each account's id, Regions and assumable role ARNs; the default account first),
flushed at once, so a parent process (tests, benchmarks, a shell script) can read where to point boto3
or the AWS CLI; stderr then gets the `export AWS_ENDPOINT_URL=... XKSMIGRATE_TIME_SCALE=...` line for a person,
and a line saying how the tool gets its vantage point (which proxy hosts it can dial): automatically, since
for a loopback --endpoint-url the CLI asks `/_rehearsal/vantage`.
A bad world or fault file is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from migrator.rehearsal.server import RehearsalServer
from migrator.rehearsal.world import model
from migrator.rehearsal.world.default import load_world


def run_serve(world_path: str | None, port: int, faults_path: str | None, log_path: str | None) -> int:
    try:
        world = load_world(world_path)
        faults = model.load_fault_file(faults_path) if faults_path else []
        proxies = {p.name for p in world.proxies}
        for i, f in enumerate(faults):
            if f.proxy and f.proxy not in proxies:
                raise model.WorldFileError(f"{faults_path}: faults[{i}].proxy: no proxy named {f.proxy!r}")
    except model.WorldFileError as exc:
        print(f"xksmigrate: error: {exc}", file=sys.stderr)
        return 2
    server = RehearsalServer(world, faults, port=port, log_path=log_path)
    try:
        server.start()
    except OSError as exc:
        print(f"xksmigrate: error: cannot listen on 127.0.0.1:{port}: {exc.strerror}", file=sys.stderr)
        server.stop()
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(json.dumps({"endpoint_url": server.endpoint_url, "region": world.region,
                          "account_id": world.account_id, "time_scale": world.time_scale,
                          "ca_bundle": server.ca_bundle_path, "log": log_path, "vantage": world.vantage,
                          "accounts": [{"account_id": a.id, "regions": a.regions,
                                        "roles": [r.arn(a.id) for r in a.roles]} for a in world.accounts]}),
              flush=True)
        # for a person: the line that points xksmigrate (and the AWS CLI) at this world on its clock
        print(f"export AWS_ENDPOINT_URL={server.endpoint_url} XKSMIGRATE_TIME_SCALE={world.time_scale:g}",
              file=sys.stderr, flush=True)
        reach = ", ".join(sorted(server.vantage())) or "no proxy host"
        print(f"# vantage point ({world.vantage}): automatic for a loopback --endpoint-url, the tool asks "
              f"{server.endpoint_url}/_rehearsal/vantage (reaches {reach}); --resolve HOST=IP:PORT overrides it",
              file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":  # python -m migrator.rehearsal.serve_main [WORLD] (handy without the CLI)
    sys.exit(run_serve(sys.argv[1] if len(sys.argv) > 1 else None, 0, None, None))
