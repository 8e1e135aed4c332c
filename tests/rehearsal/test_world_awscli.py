"""The AWS CLI (an independent client) performs AWS's documented procedure against the world, and
`sim serve` as a subprocess prints its JSON line and answers boto3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import boto3
import pytest
from world_helpers import STORE_ID, VPC_ENDPOINT, VPC_SERVICE

pytestmark = pytest.mark.slow


def _aws(server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """AWS CLI v1 fetches any parameter value that starts with https:// (`cli_follow_urlparam`), which
    would turn `--xks-proxy-uri-endpoint https://...` into a download: the config file switches it off."""
    aws = shutil.which("aws") or os.path.join(os.path.dirname(sys.executable), "aws")
    config = server.state.ca.directory / "aws-cli-config"
    config.write_text("[default]\ncli_follow_urlparam = false\n")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDREHEARSAL", "AWS_SECRET_ACCESS_KEY": "rehearsal-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": str(config),
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_PAGER": ""}
    env.pop("AWS_PROFILE", None)
    proc = subprocess.run([aws, "--endpoint-url", server.endpoint_url, "--output", "json", "kms", *args],
                          env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _describe(server) -> dict:
    out = _aws(server, "describe-custom-key-stores", "--custom-key-store-id", STORE_ID)
    return json.loads(out.stdout)["CustomKeyStores"][0]


def _poll(server, states: tuple[str, ...]) -> dict:
    for _ in range(20):
        entry = _describe(server)
        if entry["ConnectionState"] in states:
            return entry
    return entry


def test_documented_procedure_with_the_aws_cli(running_world):
    server = running_world
    refused = _aws(server, "update-custom-key-store", "--custom-key-store-id", STORE_ID,
                   "--xks-proxy-uri-endpoint", VPC_ENDPOINT, check=False)
    assert refused.returncode != 0 and "CustomKeyStoreInvalidStateException" in refused.stderr

    _aws(server, "disconnect-custom-key-store", "--custom-key-store-id", STORE_ID)
    assert _poll(server, ("DISCONNECTED",))["ConnectionState"] == "DISCONNECTED"
    again = _aws(server, "disconnect-custom-key-store", "--custom-key-store-id", STORE_ID, check=False)
    assert again.returncode != 0 and "CustomKeyStoreInvalidStateException" in again.stderr
    encrypt = _aws(server, "encrypt", "--key-id", "1234abcd-12ab-34cd-56ef-1234567890ab", "--plaintext",
                   "aGVsbG8=", check=False)
    assert "KMSInvalidStateException" in encrypt.stderr and "is unavailable." in encrypt.stderr

    _aws(server, "update-custom-key-store", "--custom-key-store-id", STORE_ID,
         "--xks-proxy-connectivity", "VPC_ENDPOINT_SERVICE", "--xks-proxy-uri-endpoint", VPC_ENDPOINT,
         "--xks-proxy-vpc-endpoint-service-name", VPC_SERVICE)
    _aws(server, "connect-custom-key-store", "--custom-key-store-id", STORE_ID)
    entry = _poll(server, ("CONNECTED", "FAILED"))
    assert entry["ConnectionState"] == "CONNECTED"
    assert entry["XksProxyConfiguration"]["Connectivity"] == "VPC_ENDPOINT_SERVICE"
    assert entry["XksProxyConfiguration"]["VpcEndpointServiceName"] == VPC_SERVICE


def _serve_command(world: str = "-", faults: str = "-", log: str = "-") -> list[str]:
    """run_serve(world, port 0, faults, log) in a fresh interpreter ("-" = None)."""
    code = ("import sys; from migrator.rehearsal.serve_main import run_serve; "
            "a = [None if v == '-' else v for v in sys.argv[1:]]; sys.exit(run_serve(a[0], 0, a[1], a[2]))")
    return [sys.executable, "-c", code, world, faults, log]


def test_serve_main_prints_one_json_line_and_answers_boto3(tmp_path):
    log = tmp_path / "world.jsonl"
    proc = subprocess.Popen(_serve_command("-", "-", str(log)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"endpoint_url", "region", "account_id", "time_scale", "ca_bundle", "log", "vantage",
                             "accounts"}
        assert info["region"] == "us-east-1" and info["account_id"] == "111122223333"
        assert info["accounts"] == [{"account_id": "111122223333", "regions": ["us-east-1"], "roles": []}]
        assert info["vantage"] == "inside_vpc"
        assert os.path.exists(info["ca_bundle"])
        kms = boto3.client("kms", endpoint_url=info["endpoint_url"], region_name=info["region"],
                           aws_access_key_id="AKIDREHEARSAL", aws_secret_access_key="x")
        stores = kms.describe_custom_key_stores()["CustomKeyStores"]
        assert [s["CustomKeyStoreId"] for s in stores] == [STORE_ID]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["operation"] == "DescribeCustomKeyStores" and e["kind"] == "call" for e in entries)


def test_serve_main_rejects_a_bad_world_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[world]\naccount_id = "12"\n')
    proc = subprocess.run(_serve_command(str(bad)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "world.account_id" in lines[0] and "Traceback" not in proc.stderr
