"""The rehearsal world models every cause of a failed cut-over (issue 12): intermediate CAs, a proxy that
offers only TLS below 1.2, proxies answering ThrottlingException / DependencyTimeoutException, and NLB
target groups with target health. Each connect-failure cause is shown by a really wrong configuration and
the ConnectionErrorCode the world's KMS ends the connect with (boto3 over HTTP, as the engine sees it)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import urllib.request
import warnings
from collections.abc import Callable

import pytest
from cryptography import x509
from world_helpers import KEY_ID, STORE_ID, VPC_ENDPOINT, VPC_SERVICE, aws_client, make_world, wait_for_state

from migrator.rehearsal.world import model
from migrator.rehearsal.world.ca import WorldCA

PROXY = "payments-proxy"
LB = "payments-xks-nlb"
HOSTS = ["myproxy.xks.example.com"]


def _disconnected(data: dict, vpc: bool = False) -> None:
    data["keystores"][0]["state"] = "DISCONNECTED"
    if vpc:
        data["keystores"][0].update(connectivity="VPC_ENDPOINT_SERVICE", uri_endpoint=VPC_ENDPOINT,
                                    vpc_endpoint_service_name=VPC_SERVICE)


def _connect(start_world, kms_client, mutate, *, vpc: bool = False, faults=()) -> dict:
    """Start a world with the store DISCONNECTED (public, or VPC), connect it, return the final entry."""
    def setup(data: dict) -> None:
        _disconnected(data, vpc)
        mutate(data)
    server = start_world(make_world(setup), faults=faults)
    kms = kms_client(server)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    return wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))


def _proxy(**fields):
    return lambda data: data["proxies"][0].update(fields)


def _log(server) -> list[dict]:
    with urllib.request.urlopen(server.endpoint_url + "/_rehearsal/log", timeout=10) as response:
        return [json.loads(line) for line in response.read().decode().splitlines()]


# -- intermediate CAs ----------------------------------------------------------------------------------

def _certificates(path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_ca_issues_a_leaf_through_an_intermediate_with_and_without_it(tmp_path):
    ca = WorldCA(tmp_path)
    via = _certificates(ca.issue(HOSTS, "via_intermediate")[0])
    missing = _certificates(ca.issue(HOSTS, "missing_intermediate")[0])
    intermediate = x509.load_pem_x509_certificate(ca.intermediate_pem)
    assert len(via) == 2 and via[1] == intermediate and via[0].issuer == intermediate.subject
    assert len(missing) == 1 and missing[0].issuer == intermediate.subject
    root = x509.load_pem_x509_certificate(ca.ca_pem)
    assert intermediate.issuer == root.subject  # the root the world's KMS trusts signed the intermediate


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> str:
    """A real handshake over a socket pair: the negotiated version, or raises the client's error."""
    server_sock, client_sock = socket.socketpair()
    thread = threading.Thread(target=lambda: _serve_quietly(server_ctx, server_sock), daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=hostname) as tls:
            return tls.version() or ""
    finally:
        thread.join(timeout=10)
        server_sock.close()


def _serve_quietly(ctx: ssl.SSLContext, sock: socket.socket) -> None:
    try:
        with ctx.wrap_socket(sock, server_side=True):
            pass
    except (ssl.SSLError, OSError):
        pass


def test_missing_intermediate_fails_verification_and_a_full_chain_passes(tmp_path):
    ca = WorldCA(tmp_path)
    assert _handshake(ca.server_context(HOSTS, "via_intermediate"), ca.client_context(), HOSTS[0])
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _handshake(ca.server_context(HOSTS, "missing_intermediate"), ca.client_context(), HOSTS[0])
    assert info.value.verify_code == 20 and "unable to get local issuer certificate" in info.value.verify_message


def test_connect_through_a_served_intermediate_succeeds(start_world, kms_client):
    entry = _connect(start_world, kms_client, _proxy(certificate="via_intermediate"))
    assert entry["ConnectionState"] == "CONNECTED"


def test_connect_to_a_proxy_without_its_intermediate_fails_with_invalid_tls_configuration(start_world, kms_client):
    entry = _connect(start_world, kms_client, _proxy(certificate="missing_intermediate"))
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED",
                                                                        "XKS_PROXY_INVALID_TLS_CONFIGURATION")


# -- TLS below 1.2 -------------------------------------------------------------------------------------

def test_a_tls_1_1_proxy_is_a_real_tls_1_1_server(tmp_path):
    """Not a stand-in: a client willing to speak TLS 1.1 gets TLS 1.1; KMS's client (>= 1.2) gets an alert."""
    ca = WorldCA(tmp_path)
    server_ctx = ca.server_context(HOSTS, "valid", tls_max_version="1.1")
    old_client = ca.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old_client.set_ciphers("DEFAULT:@SECLEVEL=0")
        old_client.minimum_version = ssl.TLSVersion.TLSv1
    assert _handshake(server_ctx, old_client, HOSTS[0]) == "TLSv1.1"
    with pytest.raises(ssl.SSLError) as info:
        _handshake(server_ctx, ca.client_context(), HOSTS[0])
    assert "PROTOCOL_VERSION" in str(info.value).upper() or "UNSUPPORTED_PROTOCOL" in str(info.value).upper()


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_connect_to_a_proxy_below_tls_1_2_fails_with_invalid_tls_configuration(start_world, kms_client, version):
    entry = _connect(start_world, kms_client, _proxy(tls_max_version=version))
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED",
                                                                        "XKS_PROXY_INVALID_TLS_CONFIGURATION")


def test_a_proxy_limited_to_tls_1_2_connects(start_world, kms_client):
    assert _connect(start_world, kms_client, _proxy(tls_max_version="1.2"))["ConnectionState"] == "CONNECTED"


def test_tls_max_version_is_validated():
    with pytest.raises(model.WorldFileError, match=r"proxies\[0\]\.tls_max_version: must be one of"):
        make_world(_proxy(tls_max_version="1.4"))


# -- proxies answering ThrottlingException / DependencyTimeoutException --------------------------------

@pytest.mark.parametrize(("kind", "error", "status"), [("throttling", "ThrottlingException", 429),
                                                         ("dependency_timeout", "DependencyTimeoutException", 503)])
def test_connect_to_a_proxy_answering_a_retryable_error_fails_not_reachable(start_world, kms_client, kind, error,
                                                                            status):
    fault = model.Fault(proxy=PROXY, proxy_fault=kind)
    def setup(data: dict) -> None:
        _disconnected(data)
    server = start_world(make_world(setup), faults=[fault])
    kms = kms_client(server)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    entry = wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "XKS_PROXY_NOT_REACHABLE")
    answers = [e for e in server.state.proxy_servers[PROXY].request_log if e["operation"] == "GetHealthStatus"]
    assert [(e["status"], e["errorName"]) for e in answers] == [(status, error)]


def test_update_against_a_throttling_proxy_is_uri_unreachable(start_world, kms_client):
    server = start_world(faults=[model.Fault(proxy=PROXY, proxy_fault="throttling", count=1)])
    kms = kms_client(server)
    with pytest.raises(kms.exceptions.XksProxyUriUnreachableException):
        kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyUriPath="/payments/kms/xks/v1")
    kms.update_custom_key_store(CustomKeyStoreId=STORE_ID, XksProxyUriPath="/payments/kms/xks/v1")  # count spent


def test_dependency_timeout_by_probability_fails_some_encrypts(start_world, kms_client):
    server = start_world(faults=[model.Fault(proxy=PROXY, proxy_fault="dependency_timeout", probability=0.5)])
    kms = kms_client(server, retries={"mode": "standard", "total_max_attempts": 1})
    outcomes = []
    for _ in range(20):
        try:
            kms.encrypt(KeyId=KEY_ID, Plaintext=b"x")
            outcomes.append(True)
        except kms.exceptions.KMSInvalidStateException as exc:
            assert "DependencyTimeoutException" in str(exc)
            outcomes.append(False)
    assert 0 < outcomes.count(False) < 20


def test_retryable_fault_kinds_are_in_the_world_file_schema():
    faults = model.world_from_dict({"faults": [{"proxy": "p", "proxy_fault": "throttling", "count": 2}],
                                    "key_managers": [{"name": "k"}], "proxies": [{"name": "p", "key_manager": "k"}]})
    assert faults.faults[0].proxy_fault == "throttling"


# -- ELBv2 target groups and target health -------------------------------------------------------------

def _groups(*targets: dict, name: str = "payments-xks-tg") -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        lb = data["load_balancers"][0]
        lb.pop("proxy", None)
        lb["target_groups"] = [{"name": name, "targets": list(targets)}]
    return mutate


def test_default_world_shows_one_healthy_target_and_the_listener_forwards_to_its_group(running_world):
    elbv2 = aws_client(running_world, "elbv2")
    lb_arn = elbv2.describe_load_balancers(Names=[LB])["LoadBalancers"][0]["LoadBalancerArn"]
    group = elbv2.describe_target_groups(LoadBalancerArn=lb_arn)["TargetGroups"]
    assert [(g["TargetGroupName"], g["Protocol"], g["Port"], g["TargetType"]) for g in group] == [
        (f"{LB}-tg", "TCP", 443, "ip")]
    assert group[0]["LoadBalancerArns"] == [lb_arn]
    listener = elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"][0]
    assert listener["DefaultActions"][0]["TargetGroupArn"] == group[0]["TargetGroupArn"]
    health = elbv2.describe_target_health(TargetGroupArn=group[0]["TargetGroupArn"])["TargetHealthDescriptions"]
    assert [h["TargetHealth"] for h in health] == [{"State": "healthy"}]
    assert health[0]["Target"]["Port"] == 443 and health[0]["Target"]["AvailabilityZone"] == "us-east-1a"


def test_target_health_as_written_in_the_world_file(start_world):
    server = start_world(make_world(_groups(
        {"id": "10.0.1.10", "proxy": PROXY, "health": "unhealthy", "reason": "Target.Timeout"},
        {"id": "10.0.2.10", "health": "unused", "availability_zone": "us-east-1c"},
        {"id": "10.0.1.11", "health": "initial"})))
    elbv2 = aws_client(server, "elbv2")
    [group] = elbv2.describe_target_groups(Names=["payments-xks-tg"])["TargetGroups"]
    health = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
    assert [(h["Target"]["Id"], h["TargetHealth"]["State"], h["TargetHealth"]["Reason"]) for h in health] == [
        ("10.0.1.10", "unhealthy", "Target.Timeout"), ("10.0.2.10", "unused", "Target.NotInUse"),
        ("10.0.1.11", "initial", "Elb.InitialHealthChecking")]
    assert health[1]["Target"]["AvailabilityZone"] == "us-east-1c"
    asked = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"],
                                         Targets=[{"Id": "10.0.9.9"}, {"Id": "10.0.1.10"}])
    assert [(h["Target"]["Id"], h["TargetHealth"]["State"]) for h in asked["TargetHealthDescriptions"]] == [
        ("10.0.9.9", "unused"), ("10.0.1.10", "unhealthy")]
    with pytest.raises(elbv2.exceptions.TargetGroupNotFoundException):
        elbv2.describe_target_groups(Names=["nope"])
    with pytest.raises(elbv2.exceptions.TargetGroupNotFoundException):
        elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"] + "0")


def test_connect_through_an_nlb_without_a_healthy_target_fails_not_reachable(start_world, kms_client):
    """The really wrong configuration: the targets fail their health checks because nothing answers there."""
    entry = _connect(start_world, kms_client, _groups({"id": "10.0.1.10", "health": "unhealthy"},
                                                      {"id": "10.0.2.10", "health": "unhealthy"}), vpc=True)
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "XKS_PROXY_NOT_REACHABLE")


def test_connect_through_a_healthy_target_succeeds(start_world, kms_client):
    entry = _connect(start_world, kms_client, _groups({"id": "10.0.1.10", "health": "unhealthy"},
                                                      {"id": "10.0.2.10", "proxy": PROXY}), vpc=True)
    assert entry["ConnectionState"] == "CONNECTED"


def test_an_nlb_fails_open_to_unhealthy_targets_that_answer(start_world, kms_client):
    """ELB docs: with every target failing its health checks the NLB routes to all of them; a target whose
    health check is wrong but whose proxy answers still carries KMS's traffic."""
    entry = _connect(start_world, kms_client, _groups({"id": "10.0.1.10", "proxy": PROXY, "health": "unhealthy"}),
                     vpc=True)
    assert entry["ConnectionState"] == "CONNECTED"


def test_unused_and_draining_targets_carry_no_traffic(start_world, kms_client):
    entry = _connect(start_world, kms_client, _groups({"id": "10.0.1.10", "proxy": PROXY, "health": "unused"},
                                                      {"id": "10.0.2.10", "proxy": PROXY, "health": "draining"}),
                     vpc=True)
    assert entry["ConnectionErrorCode"] == "XKS_PROXY_NOT_REACHABLE"


def test_target_health_changed_at_run_time_is_what_connect_sees(start_world, kms_client):
    server = start_world(make_world(lambda d: (_disconnected(d, vpc=True), _groups({"id": "10.0.1.10",
                                                                                      "proxy": PROXY})(d))))
    request = urllib.request.Request(server.endpoint_url + "/_rehearsal/mutate", method="POST", data=json.dumps(
        {"kind": "target", "id": "payments-xks-tg/10.0.1.10", "set": {"health": "draining"}}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["health"] == "draining"
    kms = kms_client(server)
    kms.connect_custom_key_store(CustomKeyStoreId=STORE_ID)
    assert wait_for_state(kms, STORE_ID, ("CONNECTED", "FAILED"))["ConnectionErrorCode"] == "XKS_PROXY_NOT_REACHABLE"
    state = json.loads(urllib.request.urlopen(server.endpoint_url + "/_rehearsal/state", timeout=10).read())
    assert state["load_balancers"][0]["routed_proxy"] == ""


def test_a_listener_forwards_to_the_group_it_names(start_world, kms_client):
    def two_groups(data: dict) -> None:
        lb = data["load_balancers"][0]
        lb.pop("proxy")
        lb["listeners"] = [{"port": 443, "protocol": "TCP", "target_group": "live-tg"}]
        lb["target_groups"] = [{"name": "empty-tg"}, {"name": "live-tg", "targets": [{"id": "10.0.1.5",
                                                                                       "proxy": PROXY}]}]
    assert _connect(start_world, kms_client, two_groups, vpc=True)["ConnectionState"] == "CONNECTED"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["load_balancers"][0].update(target_groups=[{"name": "tg"}]), r"proxy: give either proxy"),
    (_groups({"id": "10.0.0.1", "proxy": "nobody"}), r"targets\[0\]\.proxy: no proxy named 'nobody'"),
    (_groups({"id": "10.0.0.1", "health": "sick"}), r"targets\[0\]\.health: must be one of"),
    (_groups(name="bad_name"), r"target_groups\[0\]\.name: 'bad_name' does not match"),
    (lambda d: (_groups()(d), d["load_balancers"][0].update(listeners=[{"port": 443, "target_group": "x"}])),
     r"listeners: target_group 'x' is not a target group"),
])
def test_target_group_schema_errors_name_the_key(mutate, message):
    with pytest.raises(model.WorldFileError, match=message):
        make_world(mutate)


@pytest.mark.slow
def test_aws_cli_reads_target_health(start_world):
    """An independent client (the AWS CLI) parses the world's DescribeTargetGroups / DescribeTargetHealth."""
    import os
    import shutil
    import subprocess
    import sys

    server = start_world(make_world(_groups({"id": "10.0.1.10", "health": "unhealthy"})))
    aws = shutil.which("aws") or os.path.join(os.path.dirname(sys.executable), "aws")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDREHEARSAL", "AWS_SECRET_ACCESS_KEY": "rehearsal-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_PAGER": ""}
    env.pop("AWS_PROFILE", None)

    def elbv2(*args: str) -> dict:
        proc = subprocess.run([aws, "--endpoint-url", server.endpoint_url, "--output", "json", "elbv2", *args],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    arn = elbv2("describe-target-groups", "--names", "payments-xks-tg")["TargetGroups"][0]["TargetGroupArn"]
    health = elbv2("describe-target-health", "--target-group-arn", arn)["TargetHealthDescriptions"]
    assert health[0]["TargetHealth"] == {"State": "unhealthy", "Reason": "Target.FailedHealthChecks",
                                         "Description": "Health checks failed"}
