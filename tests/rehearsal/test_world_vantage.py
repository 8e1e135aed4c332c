"""The world's vantage point (`[world] vantage`, GET /_rehearsal/vantage) and the example worlds' Secrets
Manager: what the tool can dial from where it stands, and the current proxy secret the example plans reference.

Everything goes over HTTP to the world's endpoint URL (urllib for the control path, boto3 for Secrets Manager),
and each dialled address is proved by a real TCP/TLS connection, not by reading the world's internals.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from world_helpers import FAST_TIME_SCALE, aws_client, make_world

from migrator.rehearsal.server import RehearsalServer
from migrator.rehearsal.world import model
from migrator.rehearsal.world.derive import world_for_plan

REPO = Path(__file__).resolve().parents[2]
PUBLIC = "myproxy.xks.example.com"
PRIVATE = "myproxy-private.xks.example.com"
EXAMPLES = [("public-to-vpc", "cks-1234567890abcdef0"), ("vpc-to-public", "cks-0fedcba9876543210")]


def vantage(server: RehearsalServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.endpoint_url}/_rehearsal/vantage", timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def served_name(server: RehearsalServer, address: str, host: str) -> str:
    """Dial `address` with TLS for `host` (SNI, hostname checked against the world CA); the certificate's CN."""
    ip, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=server.ca_bundle_path)
    with socket.create_connection((ip, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        cert = tls.getpeercert()
    assert cert is not None
    return dict(pair[0] for pair in cert["subject"])["commonName"]


def test_inside_the_vpc_every_proxy_host_is_reachable_at_its_proxy(start_world):
    server = start_world(make_world())  # the example world: vantage = "inside_vpc"
    answer = vantage(server)
    assert answer["time_scale"] == FAST_TIME_SCALE and answer["vantage"] == "inside_vpc"
    reach = answer["resolve"]
    assert set(reach) == {PUBLIC, PRIVATE}
    assert reach[PUBLIC] == reach[PRIVATE]  # one proxy, published and behind the NLB
    for host in (PUBLIC, PRIVATE):
        assert served_name(server, reach[host], host) == PUBLIC  # hostname verified for each name


def test_outside_the_vpc_only_public_hostnames_are_reachable(start_world):
    server = start_world(make_world(vantage="outside"))
    answer = vantage(server)
    assert (answer["vantage"], set(answer["resolve"])) == ("outside", {PUBLIC})
    assert served_name(server, answer["resolve"][PUBLIC], PUBLIC) == PUBLIC


def test_the_default_vantage_is_inside_the_vpc(start_world):
    def drop_vantage(data: dict[str, Any]) -> None:
        data["world"].pop("vantage", None)

    server = start_world(make_world(drop_vantage))
    assert server.world.vantage == "inside_vpc" and PRIVATE in vantage(server)["resolve"]


def test_a_private_name_with_no_target_behind_its_nlb_resolves_but_refuses_connections(start_world):
    def empty_nlb(data: dict[str, Any]) -> None:
        data["load_balancers"][0]["proxy"] = ""  # an empty target group: nothing answers behind the NLB

    server = start_world(make_world(empty_nlb))
    reach = vantage(server)["resolve"]
    assert PRIVATE in reach and reach[PRIVATE] != reach[PUBLIC]
    ip, port = reach[PRIVATE].rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ip, int(port)), timeout=5).close()


def test_the_vantage_follows_the_world_changed_at_run_time(start_world):
    server = start_world(make_world())
    before = vantage(server)["resolve"][PRIVATE]
    body = json.dumps({"kind": "load_balancer", "id": "payments-xks-nlb", "set": {"state": "failed"}}).encode()
    request = urllib.request.Request(f"{server.endpoint_url}/_rehearsal/mutate", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    assert vantage(server)["resolve"][PRIVATE] != before


def test_a_deleted_endpoint_service_takes_its_private_name_away(start_world):
    def deleted(data: dict[str, Any]) -> None:
        data["endpoint_services"][0]["state"] = "Deleted"

    assert set(vantage(start_world(make_world(deleted)))["resolve"]) == {PUBLIC}


def test_an_unknown_vantage_is_a_one_line_world_file_error():
    with pytest.raises(model.WorldFileError, match=r"world\.vantage.*inside_vpc"):
        make_world(vantage="on_the_moon")


# -- the current proxy secret: the example plans reference it, the worlds serve it ------------------------------

def _original_ref(plan_name: str) -> str:
    plan = tomllib.loads((REPO / "plans" / f"{plan_name}.toml").read_text())
    credential = plan["keystores"][0]["original_credential"]
    assert "access_key_id" not in credential  # read from the store
    ref: str = credential["secret"]
    region, account = plan["plan"]["region"], plan["plan"].get("account_id", "111122223333")
    assert ref.startswith(f"secretsmanager:arn:aws:secretsmanager:{region}:{account}:secret:")
    return ref


def _get_secret(server: RehearsalServer, ref: str) -> str:
    client = aws_client(server, "secretsmanager")
    value: str = client.get_secret_value(SecretId=ref.removeprefix("secretsmanager:"))["SecretString"]
    return value


def _current_secret(server: RehearsalServer, store_id: str) -> str:
    return next(ks.secret for ks in server.world.keystores if ks.id == store_id)


@pytest.mark.parametrize(("name", "store_id"), EXAMPLES)
def test_each_example_world_serves_the_plans_original_credential_as_the_stores_secret(name, store_id, start_world):
    world = model.load_world_file(REPO / "plans" / "worlds" / f"{name}.toml")
    world.time_scale = FAST_TIME_SCALE
    server = start_world(world)
    secret = _get_secret(server, _original_ref(name))
    assert secret == _current_secret(server, store_id)
    assert vantage(server)["vantage"] == "inside_vpc"


def test_a_secret_tied_to_a_key_store_follows_its_current_secret(start_world):
    server = start_world(make_world())
    ref = _original_ref("public-to-vpc")
    assert _get_secret(server, ref) == _current_secret(server, EXAMPLES[0][1])
    rotated = "B" * 43 + "="
    body = json.dumps({"kind": "keystore", "id": EXAMPLES[0][1], "set": {"secret": rotated}}).encode()
    request = urllib.request.Request(f"{server.endpoint_url}/_rehearsal/mutate", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    assert _get_secret(server, ref) == rotated


@pytest.mark.parametrize(("entry", "reason"), [
    ({"name": "s"}, "exactly one of value or keystore"),
    ({"name": "s", "value": "x", "keystore": "cks-1234567890abcdef0"}, "exactly one of value or keystore"),
    ({"name": "s", "keystore": "cks-00000000000000000"}, "no key store"),
])
def test_a_secret_names_its_value_or_an_existing_key_store(entry, reason):
    def add(data: dict[str, Any]) -> None:
        data["secrets"] = [entry]

    with pytest.raises(model.WorldFileError, match=reason):
        make_world(add)


@pytest.mark.parametrize(("name", "store_id"), EXAMPLES)
def test_the_derived_world_serves_a_secretsmanager_original_credential_it_was_not_given(name, store_id,
                                                                                        start_world):
    plan = tomllib.loads((REPO / "plans" / f"{name}.toml").read_text())
    world = world_for_plan(plan, {}, time_scale=FAST_TIME_SCALE)
    store = world.keystores[0]
    server = start_world(world)
    secret = _get_secret(server, _original_ref(name))
    assert secret == store.secret  # derived once, used for the store and for Secrets Manager
    assert (store.access_key_id, secret) in {(c.access_key_id, c.secret) for c in world.proxies[0].credentials}
    assert world_for_plan(plan, {}, time_scale=FAST_TIME_SCALE).keystores[0].secret == secret  # deterministic
    target = plan["keystores"][0]["target"]["uri_endpoint"].removeprefix("https://")
    reach = vantage(server)["resolve"]
    assert target in reach and store.uri_endpoint.removeprefix("https://") in reach  # inside the VPC


def test_a_secret_given_by_the_operator_wins_over_the_derived_one(start_world):
    plan = tomllib.loads((REPO / "plans" / "public-to-vpc.toml").read_text())
    ref = _original_ref("public-to-vpc")
    given = "A" * 43 + "="
    world = world_for_plan(plan, {ref: given}, time_scale=FAST_TIME_SCALE)
    assert world.keystores[0].secret == given
    assert _get_secret(start_world(world), ref) == given


# -- `sim serve` says how the tool gets the vantage point ------------------------------------------------------

def test_sim_serve_prints_how_the_tool_gets_the_vantage_point(tmp_path):
    world = REPO / "plans" / "worlds" / "public-to-vpc.toml"
    proc = subprocess.Popen([sys.executable, "-m", "migrator.rehearsal.serve_main", str(world)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        info = json.loads(proc.stdout.readline())
        export, told = proc.stderr.readline(), proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert info["vantage"] == "inside_vpc" and export.startswith("export AWS_ENDPOINT_URL=")
    assert f"{info['endpoint_url']}/_rehearsal/vantage" in told and "automatic" in told
    assert PRIVATE in told and "--resolve" in told


# -- a dry run has the same vantage point -------------------------------------------------------------------

@pytest.mark.parametrize(("vantage_point", "private_reachable"), [("inside_vpc", True), ("outside", False)])
def test_a_dry_run_reaches_what_the_worlds_vantage_point_reaches(vantage_point, private_reachable, tmp_path):
    from migrator import dryrun
    from migrator.plan import load_plan

    text = (REPO / "plans" / "worlds" / "public-to-vpc.toml").read_text()
    assert 'vantage = "inside_vpc"' in text
    world_file = tmp_path / "world.toml"
    world_file.write_text(text.replace('vantage = "inside_vpc"', f'vantage = "{vantage_point}"'))
    plan = load_plan(REPO / "plans" / "public-to-vpc.toml")
    with dryrun.rehearsal(plan, world_path=str(world_file), time_scale=FAST_TIME_SCALE) as rh:
        public = rh.resolve(PUBLIC.upper())  # host names are case-insensitive
        assert served_name(rh.server, public, PUBLIC) == PUBLIC
        if private_reachable:
            assert rh.resolve(PRIVATE) == public
        else:
            with pytest.raises(OSError, match="does not resolve"):
                rh.resolve(PRIVATE)
