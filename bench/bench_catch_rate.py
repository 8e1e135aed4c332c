"""(f) Catch rate: of the misconfigurations that make a real cut-over fail, how many does `plan` block beforehand?

A matrix of worlds, one real misconfiguration (cause) each, in both directions (public -> VPC from
plans/worlds/public-to-vpc.toml, VPC -> public from plans/worlds/vpc-to-public.toml), each with the vantage
point (the world's default, inside the VPC) and the current proxy secret (the example plan's
`original_credential`, served by the world's Secrets Manager). For each cause, in a fresh world on loopback:

1. `xksmigrate plan PLAN --endpoint-url URL --json` as a subprocess (the CLI asks the world's
   /_rehearsal/vantage, resolves the secret through its Secrets Manager, trusts its CA through the plan's
   extra_trusted_roots): exit 3 naming blocking checks = caught; unverified checks are shown with "?".
2. Whether the cut-over fails, in the same world (plan is read-only): when plan lets it through (and for the
   baselines), the real `xksmigrate run PLAN --endpoint-url URL --yes --json` (fails = exit != 0); when plan
   blocks, the tool's run would stop at its gate, so the cut-over's own calls through boto3, exactly those the
   run makes after the gate (disconnect, wait, update to the plan's target, connect, wait, Encrypt+Decrypt of
   the store's keys): fails = the update is rejected, the connect ends FAILED, or a round trip fails.

catch rate = causes whose cut-over fails and whose plan exits 3 / causes whose cut-over fails. The healthy
baseline (each example world unchanged) must complete the cut-over and `plan` must exit 0 with no warn and no
unverified finding. A cause whose cut-over succeeds but which plan blocks is listed as a false alarm.

Usage: python bench/bench_catch_rate.py [--quick] [--direction public-to-vpc|vpc-to-public] [--only TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, REPO, save, table

SCALE = 600.0  # a 300 s connect takes half a real second
DIRECTIONS = ("public-to-vpc", "vpc-to-public")
OTHER_SECRET = "Zm9yZWlnbi1zZWNyZXQtbm90LXRoZS1zdG9yZXMtMDAwMDA="


@dataclass
class Cause:
    label: str
    mutate: Callable[[Any, str], None]  # (world, direction)
    directions: tuple[str, ...] = DIRECTIONS
    faults: Callable[[Any], list[Any]] = field(default=lambda world: [])
    quick: bool = False


def _proxy(w: Any) -> Any:
    return w.proxies[0]


def _set(getter: Callable[[Any], Any], **values: Any) -> Callable[[Any, str], None]:
    def mutate(w: Any, _direction: str) -> None:
        for name, value in values.items():
            setattr(getter(w), name, value)
    return mutate


def _proxy_fault(kind: str) -> Callable[[Any], list[Any]]:
    from migrator.rehearsal.world import model

    return lambda w: [model.Fault(proxy=_proxy(w).name, proxy_fault=kind)]


def _current_host(w: Any) -> str:
    return str(w.keystores[0].uri_endpoint.removeprefix("https://"))


def _cert_without_target(w: Any, _direction: str) -> None:
    _proxy(w).certificate_hosts = [_current_host(w)]


def _rotated_credential(w: Any, _direction: str) -> None:
    from migrator.rehearsal.world import model

    _proxy(w).credentials = [model.ProxyCredential("XKSROTATEDACCESSKEY23", OTHER_SECRET)]


def _other_key_manager(w: Any, direction: str) -> None:
    """The target host reaches a proxy in front of another key manager (the store's keys are not there)."""
    from migrator.rehearsal.world import model

    first = _proxy(w)
    w.key_managers.append(model.KeyManager("other-hsm", [model.KeyManagerKey("unrelated-key")]))
    other = model.Proxy(name="other-proxy", key_manager="other-hsm", uri_path_prefix=first.uri_path_prefix,
                        credentials=list(first.credentials), certificate_hosts=list(first.certificate_hosts))
    w.proxies.append(other)
    if direction == "public-to-vpc":
        w.load_balancers[0].proxy = "other-proxy"
    else:
        other.public_hostnames, first.public_hostnames = list(first.public_hostnames), []


def _target_in_use(w: Any, direction: str) -> None:
    from migrator.rehearsal.world import model

    plan = _plan_data(direction)
    target = plan["keystores"][0]["target"]
    store = w.keystores[0]
    w.keystores.append(model.KeyStore(
        id="cks-0000000000000000a", name="other", connectivity=target["connectivity"],
        uri_endpoint=target["uri_endpoint"], uri_path="/kms/xks/v1", access_key_id=store.access_key_id,
        secret=store.secret, vpc_endpoint_service_name=target.get("vpc_endpoint_service_name", ""),
        state="DISCONNECTED"))


def _empty_nlb(w: Any, _direction: str) -> None:
    from migrator.rehearsal.world import model

    lb = w.load_balancers[0]
    lb.proxy = ""
    lb.target_groups = [model.TargetGroup(name="payments-tg", targets=[
        model.Target(id="10.0.1.10", proxy="", health="unhealthy", reason="Target.Timeout"),
        model.Target(id="10.0.2.10", proxy="", health="unhealthy", reason="Target.Timeout")])]


def _service(w: Any) -> Any:
    return w.endpoint_services[0]


def _lb(w: Any) -> Any:
    return w.load_balancers[0]


VPC_ONLY = ("public-to-vpc",)
CAUSES: list[Cause] = [
    # TLS, as KMS sees it at connect time
    Cause("certificate expired", _set(_proxy, certificate="expired"), quick=True),
    Cause("certificate for another host", _set(_proxy, certificate="wrong_host")),
    Cause("certificate lacks the target name", _cert_without_target),
    Cause("untrusted CA", _set(_proxy, certificate="untrusted_ca")),
    Cause("self-signed certificate", _set(_proxy, certificate="self_signed")),
    Cause("chain lacks its intermediate", _set(_proxy, certificate="missing_intermediate"), quick=True),
    Cause("TLS 1.1 only", _set(_proxy, tls_max_version="1.1"), quick=True),
    # the proxy
    Cause("proxy refuses connections", _set(_proxy, down=True), quick=True),
    Cause("proxy slower than KMS's 250 ms", _set(_proxy, latency_ms=400.0), quick=True),
    Cause("key manager UNAVAILABLE", _set(_proxy, health="UNAVAILABLE")),
    Cause("proxy rejects the store's credential", _rotated_credential, quick=True),
    Cause("proxy serves another URI path", _set(_proxy, uri_path_prefix="/elsewhere")),
    Cause("proxy throttles", lambda w, d: None, faults=_proxy_fault("throttling"), quick=True),
    Cause("proxy dependency timeout", lambda w, d: None, faults=_proxy_fault("dependency_timeout")),
    Cause("target fronts another key manager", _other_key_manager),
    Cause("target endpoint used by another store", _target_in_use),
    # the VPC endpoint service and its NLB (the target of public -> VPC)
    Cause("KMS principal not allowed", _set(_service, allowed_principals=["arn:aws:iam::111122223333:root"]),
          VPC_ONLY, quick=True),
    Cause("acceptance required", _set(_service, acceptance_required=True), VPC_ONLY),
    Cause("service Pending", _set(_service, state="Pending"), VPC_ONLY),
    Cause("Gateway endpoint service", _set(_service, service_type="Gateway"), VPC_ONLY),
    Cause("private DNS pendingVerification", _set(_service, private_dns_state="pendingVerification"), VPC_ONLY),
    Cause("private DNS verification failed", _set(_service, private_dns_state="failed"), VPC_ONLY),
    Cause("private DNS name mismatch", _set(_service, private_dns_name="elsewhere.xks.example.com"), VPC_ONLY),
    Cause("endpoint service missing", _set(_service, service_id="vpce-svc-0ffffffffffffffff"), VPC_ONLY),
    Cause("NLB in one AZ", _set(_lb, availability_zones=["us-east-1a"]), VPC_ONLY),
    Cause("application load balancer", _set(_lb, type="application"), VPC_ONLY),
    Cause("NLB with no healthy target", _empty_nlb, VPC_ONLY, quick=True),
    Cause("NLB failed", _set(_lb, state="failed"), VPC_ONLY),
    # the public endpoint (the target of VPC -> public)
    Cause("public name not published", _set(_proxy, public_hostnames=[]), ("vpc-to-public",), quick=True),
]


def _plan_data(direction: str) -> dict[str, Any]:
    return tomllib.loads((REPO / "plans" / f"{direction}.toml").read_text())


def _world(direction: str, cause: Cause | None) -> tuple[Any, list[Any]]:
    from migrator.rehearsal.world import model

    world = model.load_world_file(REPO / "plans" / "worlds" / f"{direction}.toml")
    world.time_scale = SCALE
    if cause is None:
        return world, []
    cause.mutate(world, direction)
    return world, cause.faults(world)


def _tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIDCATCHRATEBENCH00", AWS_SECRET_ACCESS_KEY="bench",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               COLUMNS="200")
    return env


def _plan_file(server: Any, direction: str, tmp: Path) -> Path:
    """The example plan, trusting the world's CA (as `run --dry-run` does) and with a roomy downtime budget
    (at scale 600 every real millisecond of the tool's work is 0.6 simulated seconds)."""
    text = (REPO / "plans" / f"{direction}.toml").read_text()
    roots = f"extra_trusted_roots = [{json.dumps(server.ca_bundle_path)}]"
    text = text.replace("[plan]\n", f"[plan]\n{roots}\n", 1).replace('max_disconnected = "15m"',
                                                                      'max_disconnected = "1h"')
    path = tmp / f"{direction}.toml"
    path.write_text(text)
    return path


def _tool(command: str, server: Any, direction: str, tmp: Path, *extra: str) -> tuple[int, list[dict[str, Any]],
                                                                                          str]:
    done = subprocess.run([str(BIN / "xksmigrate"), command, str(_plan_file(server, direction, tmp)),
                           "--endpoint-url", server.endpoint_url, "--state", f"sqlite:///{tmp}/journal.db",
                           "--json", *extra], capture_output=True, text=True, env=_tool_env(), cwd=tmp, timeout=300,
                          stdin=subprocess.DEVNULL)
    events = []
    for line in done.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return done.returncode, events, " ".join(done.stderr.strip().splitlines()[-1:])


def run_plan(server: Any, direction: str, tmp: Path) -> dict[str, Any]:
    """`xksmigrate plan` against the world: exit code and the checks by status."""
    code, events, stderr = _tool("plan", server, direction, tmp)
    by_status: dict[str, list[str]] = {}
    for event in events:
        if event.get("type") == "finding":
            by_status.setdefault(event["status"], []).append(event["check"])
    return {"exit": code, "status": by_status, "stderr": [stderr] if stderr else []}


def real_run(server: Any, direction: str, tmp: Path) -> str:
    """`xksmigrate run --yes --json` against the world: "" when it completes, else its outcome (for the causes
    plan lets through, and the baselines: the tool's own run, not only its calls, fails or completes)."""
    code, events, stderr = _tool("run", server, direction, tmp, "--yes", "--time-scale", f"{SCALE:g}")
    summary: dict[str, Any] = next((e for e in reversed(events) if e.get("type") == "summary"), {})
    return "" if code == 0 else f"run exit {code}: {summary.get('outcome', stderr)}"


def _wait(kms: Any, store_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        entry: dict[str, Any] = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
        if entry["ConnectionState"] in states or time.monotonic() > deadline:
            return entry
        time.sleep(0.05)


def cut_over(server: Any, direction: str) -> str:
    """The run's calls after its gate, through boto3: "" when the store ends CONNECTED and verified, else why not."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    kms = boto3.client("kms", endpoint_url=server.endpoint_url, region_name=server.world.region,
                       aws_access_key_id="AKIDCATCHRATEBENCH00", aws_secret_access_key="bench",
                       config=Config(retries={"mode": "standard", "max_attempts": 3}))
    target = _plan_data(direction)["keystores"][0]["target"]
    store = server.world.keystores[0].id
    update = {"XksProxyConnectivity": target["connectivity"], "XksProxyUriEndpoint": target["uri_endpoint"]}
    if target.get("vpc_endpoint_service_name"):
        update["XksProxyVpcEndpointServiceName"] = target["vpc_endpoint_service_name"]
    try:
        kms.disconnect_custom_key_store(CustomKeyStoreId=store)
        _wait(kms, store, ("DISCONNECTED",))
        kms.update_custom_key_store(CustomKeyStoreId=store, **update)
    except ClientError as exc:
        return f"update rejected: {exc.response['Error']['Code']}"
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    entry = _wait(kms, store, ("CONNECTED", "FAILED"))
    if entry["ConnectionState"] != "CONNECTED":
        return f"connect {entry['ConnectionState']}: {entry.get('ConnectionErrorCode', '?')}"
    keys = [k.key_id for k in server.world.keys if k.keystore == store and k.state == "Enabled"][:3]
    try:
        for key_id in keys:
            blob = kms.encrypt(KeyId=key_id, Plaintext=b"catch-rate")["CiphertextBlob"]
            if kms.decrypt(KeyId=key_id, CiphertextBlob=blob)["Plaintext"] != b"catch-rate":
                return f"verify: {key_id} round trip differs"
    except ClientError as exc:
        return f"verify: {exc.response['Error']['Code']}"
    return ""


def measure(direction: str, cause: Cause | None) -> dict[str, Any]:
    from migrator.rehearsal.server import RehearsalServer

    world, faults = _world(direction, cause)
    with tempfile.TemporaryDirectory(prefix="xkscatch-") as tmpdir, RehearsalServer(world, faults) as server:
        plan = run_plan(server, direction, Path(tmpdir))
        failure = "run exit 3"  # the tool's run would stop at its gate
        if cause is None or plan["exit"] != 3:  # the tool's run goes ahead: see what it does
            failure = real_run(server, direction, Path(tmpdir))
        if failure.startswith("run exit 3"):  # stopped at the gate: the cut-over's own calls say if it would fail
            failure = cut_over(server, direction)
    return {"cause": cause.label if cause else "healthy baseline", "direction": direction, "plan": plan,
            "failure": failure}


def _plan_cell(plan: dict[str, Any]) -> str:
    status = plan["status"]
    named = sorted(set(status.get("block", []))) + [f"{c}?" for c in sorted(set(status.get("unverified", [])))]
    if plan["exit"] == 0:
        warned = sorted(set(status.get("warn", [])))
        return "no (exit 0" + (f"; warn {', '.join(warned)})" if warned else ")")
    if plan["exit"] == 3:
        return f"yes: {', '.join(named)}"
    return f"exit {plan['exit']}: {' '.join(plan['stderr'])}"


def render(rows: list[dict[str, Any]]) -> str:
    arrow = {"public-to-vpc": "public -> VPC", "vpc-to-public": "VPC -> public"}
    body, failing, caught, false_alarms, baseline = [], 0, 0, [], []
    for r in rows:
        fails = bool(r["failure"])
        blocks = r["plan"]["exit"] == 3
        if r["cause"] == "healthy baseline":
            clean = r["plan"]["exit"] == 0 and not r["plan"]["status"].get("warn") and not r["plan"]["status"].get(
                "unverified")
            baseline.append(f"{arrow[r['direction']]}: `xksmigrate run` {r['failure'] if fails else 'completes'}"
                            f", plan {_plan_cell(r['plan'])}{'' if clean else ' (NOT clean)'}")
            continue
        failing += fails
        caught += fails and blocks
        if blocks and not fails:
            false_alarms.append(f"{r['cause']} ({arrow[r['direction']]})")
        body.append([r["cause"], arrow[r["direction"]], f"yes ({r['failure']})" if fails else "no",
                     _plan_cell(r["plan"])])
    rate = f"{caught}/{failing} = {100.0 * caught / failing:.0f} %" if failing else "n/a (no cause made it fail)"
    by_direction = []
    for d in DIRECTIONS:
        mine = [r for r in rows if r["direction"] == d and r["cause"] != "healthy baseline" and r["failure"]]
        if mine:
            hit = sum(r["plan"]["exit"] == 3 for r in mine)
            by_direction.append(f"{arrow[d]} {hit}/{len(mine)}")
    notes = [f"catch rate (plan exits 3 among causes whose cut-over fails): {rate}"
             + (f" ({'; '.join(by_direction)})" if by_direction else ""),
             *[f"healthy baseline, {b}" for b in baseline],
             f"false alarms (plan blocks, cut-over would succeed): {', '.join(false_alarms) or 'none'}",
             "vantage point: the world's (inside the VPC); current secret: the plan's original_credential "
             "(secretsmanager:, served by the world); `check?` = unverified (could not be made)",
             "run fails = for a cause plan blocks, the cut-over's own calls through boto3 (update rejected / "
             "connect FAILED / round trip failed); otherwise the real `xksmigrate run --yes` (exit != 0); "
             "both in the same world after `plan` (read-only)"]
    return table("(f) Catch rate: misconfigurations that fail the cut-over, and whether `plan` blocks them first",
                 ["cause", "direction", "run fails?", "plan blocks (check id)?"], body, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cause per family (about a third)")
    parser.add_argument("--direction", choices=DIRECTIONS, help="only this direction")
    parser.add_argument("--only", help="only causes whose label contains this text")
    args = parser.parse_args()
    directions = [args.direction] if args.direction else list(DIRECTIONS)
    started = time.perf_counter()
    rows = []
    for direction in directions:
        rows.append(measure(direction, None))
        for cause in CAUSES:
            if direction not in cause.directions or (args.quick and not cause.quick):
                continue
            if args.only and args.only.lower() not in cause.label.lower():
                continue
            rows.append(measure(direction, cause))
            r = rows[-1]
            print(f"  {direction}: {cause.label}: fails={bool(r['failure'])} plan exit {r['plan']['exit']}",
                  file=sys.stderr)
    text = render(rows)
    text += f"\n{len(rows)} worlds in {time.perf_counter() - started:.0f} s (world time scale {SCALE:g})\n"
    print(text)
    print(f"saved {save('catch-rate', text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
