"""Issue 4, "Done when": for every blocking check, a world with that real misconfiguration where `plan`
exits 3 naming the check, and where `run` stops before the disconnect: exit 3, zero mutating calls in the
world's own log, the store untouched.

The tool is modelled as running inside the VPC (or with the plan's probe address), so the target's private
DNS name is reachable for the TLS checks; from outside, those are warnings (test_inspect_world.py).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from engine_helpers import example_plan, make_env, mutating_calls, read_world_log
from misconfigured_worlds import SECRET, WORLD_MISCONFIGURATIONS

from migrator.aws.kms import KmsApplier
from migrator.engine import runner as engine
from migrator.plan import CredentialRef
from migrator.preflight import planner
from migrator.rehearsal.world.model import load_world_file

REPO = Path(__file__).resolve().parents[2]
STORE = "cks-1234567890abcdef0"


def _inside_the_vpc(server):
    """host -> 127.0.0.1:<proxy port> by the world's own naming rules, private DNS names included."""
    state = server.state

    def resolve(host: str) -> str:
        for proxy in state.world.proxies:
            if host in proxy.public_hostnames:
                return f"127.0.0.1:{state.proxy_servers[proxy.name].port}"
        for svc in state.world.endpoint_services:
            lb = next((b for b in state.world.load_balancers if b.name == svc.load_balancer), None)
            if svc.private_dns_name == host and lb and lb.proxy:
                return f"127.0.0.1:{state.proxy_servers[lb.proxy].port}"
        raise OSError(f"{host} does not resolve")

    return resolve


@pytest.fixture
def proxy_secret(monkeypatch):
    monkeypatch.setenv("XKS_BLOCKING_TEST_SECRET", SECRET)
    return CredentialRef("", "env:XKS_BLOCKING_TEST_SECRET")


@pytest.mark.parametrize(("label", "mutate", "check"), WORLD_MISCONFIGURATIONS,
                         ids=[m[0] for m in WORLD_MISCONFIGURATIONS])
def test_plan_exits_3_naming_the_check_and_run_changes_nothing(label, mutate, check, start_world, journal,
                                                               proxy_secret):
    world = load_world_file(REPO / "plans" / "worlds" / "public-to-vpc.toml")
    world.time_scale = 1500.0
    mutate(world)
    server = start_world(world)
    base = example_plan()
    # The plan says where the current proxy secret is, so the proxy itself can be probed beforehand.
    plan = dataclasses.replace(base, keystores=(dataclasses.replace(base.keystores[0],
                                                                    original_credential=proxy_secret),))
    env = make_env(server, journal, resolve=_inside_the_vpc(server))

    report = planner.make_report(plan, env)
    assert report.exit_code == 3, label
    blocking = [f.check for s in report.stores for f in s.findings if f.status == "block"]
    assert check in blocking, (label, blocking)

    result = engine.start(plan, env)
    assert (result.outcome, result.exit_code) == ("blocked", 3), (label, result.message)
    assert check in result.message
    assert mutating_calls(read_world_log(server)) == [], label
    live = KmsApplier(env.clients.client("kms")).describe(STORE)
    assert (live.state, live.config.connectivity, live.config.uri_endpoint) == (
        "CONNECTED", "PUBLIC_ENDPOINT", "https://myproxy.xks.example.com")
    assert journal.get_run(result.run_id).migrations[0].state == "blocked"


def test_the_example_world_is_ready(start_world, journal, proxy_secret):
    world = load_world_file(REPO / "plans" / "worlds" / "public-to-vpc.toml")
    world.time_scale = 1500.0
    server = start_world(world)
    plan = example_plan()
    plan = dataclasses.replace(plan, keystores=(dataclasses.replace(plan.keystores[0],
                                                                    original_credential=proxy_secret),))
    report = planner.make_report(plan, make_env(server, journal, resolve=_inside_the_vpc(server)))
    assert report.exit_code == 0, [(f.check, f.message) for s in report.stores for f in s.findings
                                   if f.status == "block"]
    assert os.environ["XKS_BLOCKING_TEST_SECRET"] == SECRET
