"""End-to-end tests of the query-protocol APIs: real boto3 clients against a tiny loopback server.

The server here stands in for the query routing of `rehearsal.server`: it parses the form body, takes the
service from the SigV4 credential scope, and calls `handle_query`. Asserting on what boto3 parses
checks the XML shapes against botocore's own service models, errors included.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from migrator.rehearsal.query.api import QueryError, handle_query
from migrator.rehearsal.query.ec2 import principal_type, verifiable
from migrator.rehearsal.world import model

REPO = Path(__file__).resolve().parents[2]
SERVICE_ID = "vpce-svc-0123456789abcdef0"
SERVICE_NAME = f"com.amazonaws.vpce.us-east-1.{SERVICE_ID}"
KMS_PRINCIPAL = "cks.kms.us-east-1.amazonaws.com"
OTHER_ACCOUNT = "444455556666"


class _Handler(BaseHTTPRequestHandler):
    """What `rehearsal.server` does for query-protocol requests, and nothing more."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        params = dict(parse_qsl(body, keep_blank_values=True))
        # Credential=AKID/20240101/us-east-1/ec2/aws4_request
        scope = self.headers["Authorization"].split("Credential=", 1)[1].split(",", 1)[0].split("/")
        self.server.calls.append((scope[3], params))  # type: ignore[attr-defined]
        status, xml = handle_query(self.server.world, scope[3], params.pop("Action"), params)  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.calls = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def world(server: HTTPServer) -> model.World:
    """A fresh copy of the public-to-vpc example world, served for this test only."""
    w = model.load_world_file(REPO / "plans/worlds/public-to-vpc.toml")
    server.world = w  # type: ignore[attr-defined]
    return w


@pytest.fixture
def client(server: HTTPServer, world: model.World, monkeypatch: pytest.MonkeyPatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def make(service: str):
        return boto3.client(service, endpoint_url=url, region_name=world.region,
                            aws_access_key_id="AKIDREHEARSALTEST", aws_secret_access_key="not-a-secret",
                            config=Config(retries={"total_max_attempts": 1}))
    return make



def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def _add_service(world: model.World, service_id: str, lb_name: str, *, lb_type: str = "network",
                 owner: str = "", private_dns_name: str = "", state: str = "Available") -> model.EndpointService:
    world.load_balancers.append(model.LoadBalancer(name=lb_name, type=lb_type, availability_zones=["us-east-1c"]))
    svc = model.EndpointService(service_id=service_id, load_balancer=lb_name, owner=owner,
                                private_dns_name=private_dns_name, state=state,
                                allowed_principals=[KMS_PRINCIPAL])
    world.endpoint_services.append(svc)
    return svc


# ---------------------------------------------------------------------------------------------
# EC2: DescribeVpcEndpointServiceConfigurations


def test_service_configuration_fields_as_boto3_parses_them(client) -> None:
    configs = client("ec2").describe_vpc_endpoint_service_configurations()["ServiceConfigurations"]
    lb_arn = client("elbv2").describe_load_balancers()["LoadBalancers"][0]["LoadBalancerArn"]

    assert len(configs) == 1
    c = configs[0]
    assert c["ServiceId"] == SERVICE_ID
    assert c["ServiceName"] == SERVICE_NAME
    assert c["ServiceType"] == [{"ServiceType": "Interface"}]
    assert c["ServiceState"] == "Available"
    assert c["AvailabilityZones"] == ["us-east-1a", "us-east-1b"]
    assert c["AcceptanceRequired"] is False
    assert c["ManagesVpcEndpoints"] is False
    assert c["NetworkLoadBalancerArns"] == [lb_arn]
    assert "GatewayLoadBalancerArns" not in c
    assert c["SupportedIpAddressTypes"] == ["ipv4"]
    assert c["BaseEndpointDnsNames"] == [f"{SERVICE_ID}.us-east-1.vpce.amazonaws.com"]
    assert c["PrivateDnsName"] == "myproxy-private.xks.example.com"
    dns = c["PrivateDnsNameConfiguration"]
    assert dns["State"] == "verified"
    assert dns["Type"] == "TXT"
    assert dns["Name"].startswith("_") and dns["Value"].startswith("vpce:")
    assert "NextToken" not in configs


def test_service_configuration_lb_arn_is_stable_and_typed(client, world: model.World) -> None:
    first = client("ec2").describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    again = client("ec2").describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    arn = first["NetworkLoadBalancerArns"][0]
    assert arn == again["NetworkLoadBalancerArns"][0]
    assert arn.startswith("arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/net/payments-xks-nlb/")
    assert len(arn.rsplit("/", 1)[1]) == 16


def test_gateway_load_balancer_is_listed_as_such(client, world: model.World) -> None:
    _add_service(world, "vpce-svc-0000000000000gwlb", "gw-lb", lb_type="gateway")
    config = client("ec2").describe_vpc_endpoint_service_configurations(
        ServiceIds=["vpce-svc-0000000000000gwlb"])["ServiceConfigurations"][0]
    assert "NetworkLoadBalancerArns" not in config
    assert config["GatewayLoadBalancerArns"][0].split(":loadbalancer/")[1].startswith("gwy/gw-lb/")
    assert config["AvailabilityZones"] == ["us-east-1c"]


def test_service_without_private_dns_name_has_no_dns_configuration(client, world: model.World) -> None:
    _add_service(world, "vpce-svc-000000000000nodns", "plain-lb")
    config = client("ec2").describe_vpc_endpoint_service_configurations(
        ServiceIds=["vpce-svc-000000000000nodns"])["ServiceConfigurations"][0]
    assert "PrivateDnsName" not in config
    assert "PrivateDnsNameConfiguration" not in config


def test_unknown_service_id_is_not_found(client) -> None:
    with pytest.raises(ClientError) as exc:
        client("ec2").describe_vpc_endpoint_service_configurations(ServiceIds=[SERVICE_ID, "vpce-svc-0999"])
    assert _code(exc) == "InvalidVpcEndpointServiceId.NotFound"
    assert "vpce-svc-0999" in exc.value.response["Error"]["Message"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_other_owners_services_are_not_in_the_provider_view(client, world: model.World) -> None:
    _add_service(world, "vpce-svc-00000000000000other", "their-lb", owner=OTHER_ACCOUNT)
    ec2 = client("ec2")
    ids = [c["ServiceId"] for c in ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"]]
    assert ids == [SERVICE_ID]
    with pytest.raises(ClientError) as exc:
        ec2.describe_vpc_endpoint_service_configurations(ServiceIds=["vpce-svc-00000000000000other"])
    assert _code(exc) == "InvalidVpcEndpointServiceId.NotFound"


@pytest.mark.parametrize(("name", "values", "expected"), [
    ("service-name", [SERVICE_NAME], [SERVICE_ID]),
    ("service-name", ["com.amazonaws.vpce.us-east-1.vpce-svc-nope"], []),
    ("service-name", ["com.amazonaws.vpce.us-east-1.*"], [SERVICE_ID, "vpce-svc-00000000000second"]),
    ("service-id", ["vpce-svc-00000000000second", "vpce-svc-nope"], ["vpce-svc-00000000000second"]),
    ("service-state", ["Pending"], ["vpce-svc-00000000000second"]),
    ("service-state", ["Available"], [SERVICE_ID]),
])
def test_configuration_filters(client, world: model.World, name: str, values: list[str],
                               expected: list[str]) -> None:
    _add_service(world, "vpce-svc-00000000000second", "second-lb", state="Pending")
    configs = client("ec2").describe_vpc_endpoint_service_configurations(
        Filters=[{"Name": name, "Values": values}])["ServiceConfigurations"]
    assert [c["ServiceId"] for c in configs] == expected


def test_filters_on_different_names_all_apply(client, world: model.World) -> None:
    _add_service(world, "vpce-svc-00000000000second", "second-lb", state="Pending")
    configs = client("ec2").describe_vpc_endpoint_service_configurations(Filters=[
        {"Name": "service-name", "Values": ["*"]},
        {"Name": "service-state", "Values": ["Pending"]},
    ])["ServiceConfigurations"]
    assert [c["ServiceId"] for c in configs] == ["vpce-svc-00000000000second"]


def test_unknown_filter_is_rejected(client) -> None:
    with pytest.raises(ClientError) as exc:
        client("ec2").describe_vpc_endpoint_service_configurations(Filters=[{"Name": "colour", "Values": ["x"]}])
    assert _code(exc) == "InvalidParameterValue"


def test_paginator_terminates(client) -> None:
    pages = list(client("ec2").get_paginator("describe_vpc_endpoint_service_configurations").paginate())
    assert [c["ServiceId"] for p in pages for c in p["ServiceConfigurations"]] == [SERVICE_ID]


def test_describe_reads_the_live_world_object(client, world: model.World) -> None:
    world.endpoint_services[0].private_dns_state = "failed"
    world.load_balancers[0].availability_zones = ["us-east-1f"]
    config = client("ec2").describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    assert config["PrivateDnsNameConfiguration"]["State"] == "failed"
    assert config["AvailabilityZones"] == ["us-east-1f"]


# ---------------------------------------------------------------------------------------------
# EC2: DescribeVpcEndpointServices (consumer view)


def test_consumer_view_lists_services_of_every_owner(client, world: model.World) -> None:
    _add_service(world, "vpce-svc-00000000000000other", "their-lb", owner=OTHER_ACCOUNT,
                 private_dns_name="theirs.xks.example.net")
    _add_service(world, "vpce-svc-0000000000000gone", "gone-lb", state="Deleted")
    out = client("ec2").describe_vpc_endpoint_services()
    other_name = "com.amazonaws.vpce.us-east-1.vpce-svc-00000000000000other"
    assert out["ServiceNames"] == sorted([SERVICE_NAME, other_name])
    by_id = {d["ServiceId"]: d for d in out["ServiceDetails"]}
    assert set(by_id) == {SERVICE_ID, "vpce-svc-00000000000000other"}
    mine, theirs = by_id[SERVICE_ID], by_id["vpce-svc-00000000000000other"]
    assert mine["Owner"] == "111122223333"
    assert mine["ServiceName"] == SERVICE_NAME
    assert mine["ServiceType"] == [{"ServiceType": "Interface"}]
    assert mine["AvailabilityZones"] == ["us-east-1a", "us-east-1b"]
    assert mine["AcceptanceRequired"] is False
    assert mine["PrivateDnsName"] == "myproxy-private.xks.example.com"
    assert mine["PrivateDnsNameVerificationState"] == "verified"
    assert mine["PrivateDnsNames"] == [{"PrivateDnsName": "myproxy-private.xks.example.com"}]
    assert mine["SupportedIpAddressTypes"] == ["ipv4"]
    assert theirs["Owner"] == OTHER_ACCOUNT
    assert theirs["PrivateDnsName"] == "theirs.xks.example.net"


def test_consumer_view_by_name_and_owner_filter(client, world: model.World) -> None:
    _add_service(world, "vpce-svc-00000000000000other", "their-lb", owner=OTHER_ACCOUNT)
    ec2 = client("ec2")
    details = ec2.describe_vpc_endpoint_services(ServiceNames=[SERVICE_NAME])["ServiceDetails"]
    assert [d["ServiceId"] for d in details] == [SERVICE_ID]
    details = ec2.describe_vpc_endpoint_services(
        Filters=[{"Name": "owner", "Values": [OTHER_ACCOUNT]}])["ServiceDetails"]
    assert [d["ServiceId"] for d in details] == ["vpce-svc-00000000000000other"]


def test_consumer_view_unknown_name(client) -> None:
    with pytest.raises(ClientError) as exc:
        client("ec2").describe_vpc_endpoint_services(ServiceNames=["com.amazonaws.vpce.us-east-1.vpce-svc-0nope"])
    assert _code(exc) == "InvalidServiceName"


# ---------------------------------------------------------------------------------------------
# EC2: permissions


def test_permissions_name_the_kms_service_principal(client) -> None:
    principals = client("ec2").describe_vpc_endpoint_service_permissions(ServiceId=SERVICE_ID)["AllowedPrincipals"]
    assert len(principals) == 1
    p = principals[0]
    assert p["Principal"] == KMS_PRINCIPAL
    assert p["PrincipalType"] == "Service"
    assert p["ServiceId"] == SERVICE_ID
    assert p["ServicePermissionId"].startswith("vpce-svc-perm-")


def test_permissions_of_unknown_service(client) -> None:
    with pytest.raises(ClientError) as exc:
        client("ec2").describe_vpc_endpoint_service_permissions(ServiceId="vpce-svc-0nope")
    assert _code(exc) == "InvalidVpcEndpointServiceId.NotFound"


def test_modify_permissions_changes_the_next_describe_and_the_world(client, world: model.World) -> None:
    ec2 = client("ec2")
    role = "arn:aws:iam::111122223333:role/xks-admin"
    out = ec2.modify_vpc_endpoint_service_permissions(
        ServiceId=SERVICE_ID, AddAllowedPrincipals=[role, "arn:aws:iam::444455556666:root"],
        RemoveAllowedPrincipals=[KMS_PRINCIPAL])
    assert out["ReturnValue"] is True
    assert [(a["Principal"], a["PrincipalType"]) for a in out["AddedPrincipals"]] == [
        (role, "Role"), ("arn:aws:iam::444455556666:root", "Account")]
    principals = ec2.describe_vpc_endpoint_service_permissions(ServiceId=SERVICE_ID)["AllowedPrincipals"]
    assert [p["Principal"] for p in principals] == [role, "arn:aws:iam::444455556666:root"]
    assert world.endpoint_services[0].allowed_principals == [role, "arn:aws:iam::444455556666:root"]

    ec2.modify_vpc_endpoint_service_permissions(ServiceId=SERVICE_ID, AddAllowedPrincipals=[KMS_PRINCIPAL, role])
    assert world.endpoint_services[0].allowed_principals == [role, "arn:aws:iam::444455556666:root", KMS_PRINCIPAL]
    only_services = ec2.describe_vpc_endpoint_service_permissions(
        ServiceId=SERVICE_ID, Filters=[{"Name": "principal-type", "Values": ["Service"]}])["AllowedPrincipals"]
    assert [p["Principal"] for p in only_services] == [KMS_PRINCIPAL]


def test_values_are_escaped_in_xml(client, world: model.World) -> None:
    odd = 'arn:aws:iam::111122223333:role/<a&b>"\'\x01'
    client("ec2").modify_vpc_endpoint_service_permissions(ServiceId=SERVICE_ID, AddAllowedPrincipals=[odd])
    principals = client("ec2").describe_vpc_endpoint_service_permissions(ServiceId=SERVICE_ID)["AllowedPrincipals"]
    assert principals[1]["Principal"] == odd.replace("\x01", "")  # XML 1.0 cannot carry \x01


@pytest.mark.parametrize(("principal", "kind"), [
    ("*", "All"),
    ("cks.kms.eu-west-1.amazonaws.com", "Service"),
    ("arn:aws:iam::111122223333:root", "Account"),
    ("arn:aws:iam::111122223333:role/r", "Role"),
    ("arn:aws:iam::111122223333:user/u", "User"),
    ("arn:aws:organizations::111122223333:ou/o-abc/ou-abc-def", "OrganizationUnit"),
])
def test_principal_types(principal: str, kind: str) -> None:
    assert principal_type(principal) == kind


# ---------------------------------------------------------------------------------------------
# EC2: configuration changes and private DNS verification


def test_modify_acceptance_required(client, world: model.World) -> None:
    ec2 = client("ec2")
    assert ec2.modify_vpc_endpoint_service_configuration(ServiceId=SERVICE_ID, AcceptanceRequired=True)["Return"]
    config = ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    assert config["AcceptanceRequired"] is True
    assert world.endpoint_services[0].acceptance_required is True
    ec2.modify_vpc_endpoint_service_configuration(ServiceId=SERVICE_ID, AcceptanceRequired=False)
    assert world.endpoint_services[0].acceptance_required is False


def test_new_private_dns_name_needs_verification_again(client, world: model.World) -> None:
    ec2 = client("ec2")
    ec2.modify_vpc_endpoint_service_configuration(ServiceId=SERVICE_ID, PrivateDnsName="new.xks.example.com")
    config = ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    assert config["PrivateDnsName"] == "new.xks.example.com"
    assert config["PrivateDnsNameConfiguration"]["State"] == "pendingVerification"
    assert world.endpoint_services[0].private_dns_state == "pendingVerification"

    assert ec2.start_vpc_endpoint_service_private_dns_verification(ServiceId=SERVICE_ID)["ReturnValue"] is True
    config = ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    assert config["PrivateDnsNameConfiguration"]["State"] == "verified"
    details = ec2.describe_vpc_endpoint_services(ServiceNames=[SERVICE_NAME])["ServiceDetails"][0]
    assert details["PrivateDnsNameVerificationState"] == "verified"


def test_same_private_dns_name_keeps_its_state(client, world: model.World) -> None:
    client("ec2").modify_vpc_endpoint_service_configuration(
        ServiceId=SERVICE_ID, PrivateDnsName="myproxy-private.xks.example.com")
    assert world.endpoint_services[0].private_dns_state == "verified"


def test_unverifiable_name_fails_verification(client, world: model.World) -> None:
    ec2 = client("ec2")
    ec2.modify_vpc_endpoint_service_configuration(ServiceId=SERVICE_ID, PrivateDnsName="xks.internal")
    ec2.start_vpc_endpoint_service_private_dns_verification(ServiceId=SERVICE_ID)
    config = ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    assert config["PrivateDnsNameConfiguration"]["State"] == "failed"
    # Fixing the name and verifying again recovers from failed.
    ec2.modify_vpc_endpoint_service_configuration(ServiceId=SERVICE_ID, PrivateDnsName="xks.corp.example.org")
    ec2.start_vpc_endpoint_service_private_dns_verification(ServiceId=SERVICE_ID)
    assert world.endpoint_services[0].private_dns_state == "verified"


def test_failed_state_is_retried_by_verification(client, world: model.World) -> None:
    world.endpoint_services[0].private_dns_state = "failed"
    client("ec2").start_vpc_endpoint_service_private_dns_verification(ServiceId=SERVICE_ID)
    assert world.endpoint_services[0].private_dns_state == "verified"


def test_remove_private_dns_name(client, world: model.World) -> None:
    ec2 = client("ec2")
    ec2.modify_vpc_endpoint_service_configuration(ServiceId=SERVICE_ID, RemovePrivateDnsName=True)
    config = ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"][0]
    assert "PrivateDnsName" not in config
    assert world.endpoint_services[0].private_dns_name == ""
    with pytest.raises(ClientError) as exc:
        ec2.start_vpc_endpoint_service_private_dns_verification(ServiceId=SERVICE_ID)
    assert _code(exc) == "InvalidParameter"


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"PrivateDnsName": "a.example.com", "RemovePrivateDnsName": True}, "InvalidParameterCombination"),
    ({"PrivateDnsName": "bad_name..example.com"}, "InvalidParameterValue"),
    ({"AddNetworkLoadBalancerArns": ["arn:aws:elasticloadbalancing:x"]}, "UnsupportedOperation"),
])
def test_modify_configuration_rejects(client, world: model.World, kwargs: dict, code: str) -> None:
    with pytest.raises(ClientError) as exc:
        client("ec2").modify_vpc_endpoint_service_configuration(ServiceId=SERVICE_ID, **kwargs)
    assert _code(exc) == code
    assert world.endpoint_services[0].private_dns_name == "myproxy-private.xks.example.com"


def test_modify_unknown_service(client) -> None:
    with pytest.raises(ClientError) as exc:
        client("ec2").modify_vpc_endpoint_service_configuration(ServiceId="vpce-svc-0nope", AcceptanceRequired=False)
    assert _code(exc) == "InvalidVpcEndpointServiceId.NotFound"


@pytest.mark.parametrize(("name", "ok"), [
    ("myproxy.xks.example.com", True),
    ("xks.example.org", True),
    ("a.b.c", True),
    ("example.com", False),
    ("localhost", False),
    ("xks.proxy.internal", False),
    ("xks.local", False),
    ("", False),
])
def test_verifiable_approximation(name: str, ok: bool) -> None:
    assert verifiable(name) is ok


# ---------------------------------------------------------------------------------------------
# EC2: DryRun and the world's IAM


def test_dry_run(client, world: model.World) -> None:
    with pytest.raises(ClientError) as exc:
        client("ec2").modify_vpc_endpoint_service_configuration(
            ServiceId=SERVICE_ID, AcceptanceRequired=True, DryRun=True)
    assert _code(exc) == "DryRunOperation"
    assert world.endpoint_services[0].acceptance_required is False


def test_denied_ec2_action_is_unauthorized(client, world: model.World) -> None:
    world.iam.denied_actions = ["ec2:ModifyVpcEndpoint*"]
    ec2 = client("ec2")
    with pytest.raises(ClientError) as exc:
        ec2.modify_vpc_endpoint_service_permissions(ServiceId=SERVICE_ID, AddAllowedPrincipals=["*"])
    assert _code(exc) == "UnauthorizedOperation"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert world.endpoint_services[0].allowed_principals == [KMS_PRINCIPAL]
    ec2.describe_vpc_endpoint_service_permissions(ServiceId=SERVICE_ID)  # not denied


# ---------------------------------------------------------------------------------------------
# ELBv2


def test_describe_load_balancers_fields(client) -> None:
    lbs = client("elbv2").describe_load_balancers()["LoadBalancers"]
    assert len(lbs) == 1
    lb = lbs[0]
    assert lb["LoadBalancerName"] == "payments-xks-nlb"
    assert lb["Type"] == "network"
    assert lb["Scheme"] == "internal"
    assert lb["State"] == {"Code": "active"}
    assert lb["IpAddressType"] == "ipv4"
    assert [z["ZoneName"] for z in lb["AvailabilityZones"]] == ["us-east-1a", "us-east-1b"]
    subnets = [z["SubnetId"] for z in lb["AvailabilityZones"]]
    assert all(s.startswith("subnet-") for s in subnets) and len(set(subnets)) == 2
    assert lb["VpcId"].startswith("vpc-")
    assert lb["DNSName"].endswith(".elb.us-east-1.amazonaws.com")
    assert lb["LoadBalancerArn"].startswith(
        "arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/net/payments-xks-nlb/")


def test_describe_load_balancers_by_arn_and_name(client, world: model.World) -> None:
    world.load_balancers.append(model.LoadBalancer(name="web-alb", type="application", scheme="internet-facing",
                                                   state="provisioning"))
    elb = client("elbv2")
    arn = client("ec2").describe_vpc_endpoint_service_configurations()[
        "ServiceConfigurations"][0]["NetworkLoadBalancerArns"][0]
    by_arn = elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"]
    assert [lb["LoadBalancerName"] for lb in by_arn] == ["payments-xks-nlb"]
    alb = elb.describe_load_balancers(Names=["web-alb"])["LoadBalancers"][0]
    assert alb["Type"] == "application"
    assert alb["Scheme"] == "internet-facing"
    assert alb["State"]["Code"] == "provisioning"
    assert ":loadbalancer/app/web-alb/" in alb["LoadBalancerArn"]


def test_load_balancer_not_found(client) -> None:
    elb = client("elbv2")
    with pytest.raises(elb.exceptions.LoadBalancerNotFoundException):
        elb.describe_load_balancers(Names=["nope"])
    with pytest.raises(ClientError) as exc:
        elb.describe_load_balancers(
            LoadBalancerArns=["arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/net/nope/0"])
    assert _code(exc) == "LoadBalancerNotFound"
    assert exc.value.response["Error"]["Type"] == "Sender"


def test_names_and_arns_together_are_invalid(client) -> None:
    with pytest.raises(ClientError) as exc:
        client("elbv2").describe_load_balancers(Names=["a"], LoadBalancerArns=["b"])
    assert _code(exc) == "ValidationError"


def test_load_balancer_of_another_owners_service_is_invisible(client, world: model.World) -> None:
    _add_service(world, "vpce-svc-00000000000000other", "their-lb", owner=OTHER_ACCOUNT)
    names = [lb["LoadBalancerName"] for lb in client("elbv2").describe_load_balancers()["LoadBalancers"]]
    assert names == ["payments-xks-nlb"]


def test_describe_listeners(client, world: model.World) -> None:
    world.load_balancers[0].listeners = [{"port": 443, "protocol": "TCP"}, {"port": 8443, "protocol": "TLS"}]
    elb = client("elbv2")
    arn = elb.describe_load_balancers()["LoadBalancers"][0]["LoadBalancerArn"]
    listeners = elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]
    assert [(x["Port"], x["Protocol"]) for x in listeners] == [(443, "TCP"), (8443, "TLS")]
    assert all(x["LoadBalancerArn"] == arn for x in listeners)
    assert all(":listener/net/payments-xks-nlb/" in x["ListenerArn"] for x in listeners)
    one = elb.describe_listeners(ListenerArns=[listeners[1]["ListenerArn"]])["Listeners"]
    assert [x["Port"] for x in one] == [8443]


def test_describe_listeners_unknown_load_balancer(client) -> None:
    elb = client("elbv2")
    with pytest.raises(elb.exceptions.LoadBalancerNotFoundException):
        elb.describe_listeners(
            LoadBalancerArn="arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/net/nope/0")


def test_denied_elb_action(client, world: model.World) -> None:
    world.iam.denied_actions = ["elasticloadbalancing:DescribeLoadBalancers"]
    with pytest.raises(ClientError) as exc:
        client("elbv2").describe_load_balancers()
    assert _code(exc) == "AccessDenied"


# ---------------------------------------------------------------------------------------------
# IAM and STS


def test_simulate_principal_policy(client, world: model.World) -> None:
    world.iam.denied_actions = ["kms:UpdateCustomKeyStore", "ec2:Modify*"]
    results = client("iam").simulate_principal_policy(
        PolicySourceArn="arn:aws:iam::111122223333:user/rehearsal-operator",
        ActionNames=["kms:DescribeCustomKeyStores", "kms:updatecustomkeystore",
                     "ec2:ModifyVpcEndpointServicePermissions"])
    assert results["IsTruncated"] is False
    decisions = [(r["EvalActionName"], r["EvalResourceName"], r["EvalDecision"]) for r in results["EvaluationResults"]]
    assert decisions == [
        ("kms:DescribeCustomKeyStores", "*", "allowed"),
        ("kms:updatecustomkeystore", "*", "implicitDeny"),
        ("ec2:ModifyVpcEndpointServicePermissions", "*", "implicitDeny"),
    ]


def test_simulate_with_resources(client) -> None:
    key_arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    results = client("iam").simulate_principal_policy(
        PolicySourceArn="arn:aws:iam::111122223333:user/rehearsal-operator",
        ActionNames=["kms:Encrypt"], ResourceArns=[key_arn])["EvaluationResults"]
    assert [(r["EvalResourceName"], r["EvalDecision"]) for r in results] == [(key_arn, "allowed")]


def test_simulation_itself_denied(client, world: model.World) -> None:
    world.iam.simulation_denied = True
    with pytest.raises(ClientError) as exc:
        client("iam").simulate_principal_policy(
            PolicySourceArn="arn:aws:iam::111122223333:user/rehearsal-operator", ActionNames=["kms:Encrypt"])
    assert _code(exc) == "AccessDenied"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_get_caller_identity_default(client) -> None:
    out = client("sts").get_caller_identity()
    assert out["Account"] == "111122223333"
    assert out["Arn"] == "arn:aws:iam::111122223333:user/rehearsal-operator"
    assert out["UserId"].startswith("AIDA")


def test_get_caller_identity_assumed_role(client, world: model.World) -> None:
    world.iam.caller_arn = "arn:aws:sts::111122223333:assumed-role/XksOperator/alice"
    out = client("sts").get_caller_identity()
    assert out["Arn"] == world.iam.caller_arn
    assert out["UserId"].startswith("AROA") and out["UserId"].endswith(":alice")


def test_get_user(client, world: model.World) -> None:
    iam = client("iam")
    assert iam.get_user()["User"]["UserName"] == "rehearsal-operator"
    named = iam.get_user(UserName="bob")["User"]
    assert named["Arn"] == "arn:aws:iam::111122223333:user/bob"
    world.iam.caller_arn = "arn:aws:sts::111122223333:assumed-role/XksOperator/alice"
    with pytest.raises(ClientError) as exc:
        iam.get_user()
    assert _code(exc) == "ValidationError"


def test_service_comes_from_the_credential_scope(client, server: HTTPServer) -> None:
    client("elbv2").describe_load_balancers()
    client("iam").simulate_principal_policy(
        PolicySourceArn="arn:aws:iam::111122223333:user/rehearsal-operator", ActionNames=["kms:Encrypt"])
    assert [svc for svc, _ in server.calls[-2:]] == ["elasticloadbalancing", "iam"]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# handle_query directly: unknown actions and services


@pytest.mark.parametrize(("service", "root"), [("ec2", "Response"), ("elasticloadbalancing", "ErrorResponse"),
                                               ("iam", "ErrorResponse"), ("sts", "ErrorResponse"),
                                               ("s3", "ErrorResponse")])
def test_unknown_action(world: model.World, service: str, root: str) -> None:
    status, body = handle_query(world, service, "LaunchRockets", {})
    assert status == 400
    doc = ET.fromstring(body)
    assert doc.tag.split("}")[-1] == root
    codes = [e.text for e in doc.iter() if e.tag.split("}")[-1] == "Code"]
    assert codes == ["InvalidAction"]


def test_query_error_carries_code_message_status() -> None:
    err = QueryError("AccessDenied", "no", 403)
    assert (err.code, err.message, err.http_status) == ("AccessDenied", "no", 403)
