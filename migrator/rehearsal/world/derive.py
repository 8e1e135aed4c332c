"""A world derived from a plan, for `run --dry-run` without `--world`.

Each planned key store exists in the OTHER connectivity, CONNECTED, with three KMS keys (the plan's verify
key ids first), and everything its target needs is present and healthy: one proxy in front of the same key
manager serves both the current and the target host (certificate covering both), an endpoint service with a
verified private DNS name equal to the VPC host, the KMS principal allowed, an NLB in two AZs.

Credentials: the store's current credential uses the plan's `original_credential` (access key id and, when
`secrets` resolves its reference, the secret), so a rollback with the operator's secret works. The target
credential is accepted by the proxy only when `secrets` gives its secret, keyed by the plan's reference
string (e.g. {"env:NEW": "..."}). A `secretsmanager:` reference is served by the world's Secrets Manager,
with a value derived from the plan when `secrets` does not give it (the CLI cannot read it before the world
exists), and that same value is the store's (or the proxy's new) secret: the tool's signed probes work.
The world's vantage point is the default, "inside_vpc": the tool reaches the private DNS name too.
Names, ids and secrets not in the plan are derived from a hash, so the same plan yields the same world.
The plan is a plain dict (the parsed TOML); this module never imports the engine's plan module.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from migrator.rehearsal.world import model

PUBLIC, VPC = "PUBLIC_ENDPOINT", "VPC_ENDPOINT_SERVICE"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def _hex(*parts: str, n: int = 17) -> str:
    return _digest(*parts).hex()[:n]


def _access_key_id(*parts: str) -> str:
    return "".join(_B32[b % 32] for b in _digest("akid", *parts)[:20])


def _secret(*parts: str) -> str:
    return base64.b64encode(_digest("secret", *parts)).decode()


def _sibling(host: str, suffix: str) -> str:
    first, _, rest = host.partition(".")
    return f"{first}-{suffix}.{rest}" if rest else f"{first}-{suffix}"


def world_for_plan(plan: dict[str, Any], secrets: dict[str, str] | None = None, *,
                   time_scale: float = 60.0) -> model.World:
    """Build (and validate) the world in which `plan` can succeed."""
    secrets = secrets or {}
    header = plan.get("plan", {})
    region = header.get("region", "us-east-1")
    account = header.get("account_id", "111122223333")
    data: dict[str, Any] = {
        "world": {"account_id": account, "region": region, "time_scale": time_scale, "seed": 1,
                  "vantage": "inside_vpc"},
        "latencies": {"connect": 300.0, "disconnect": 300.0},
        "key_managers": [], "proxies": [], "load_balancers": [], "endpoint_services": [],
        "keystores": [], "keys": [], "secrets": [],
    }
    for index, entry in enumerate(plan.get("keystores", [])):
        _add_store(data, entry, index, region, account, secrets)
    return model.world_from_dict(data, f"<world derived from plan {header.get('name', '')!r}>")


def _secret_name(ref: object) -> str:
    """The Secrets Manager secret name of a `secretsmanager:ARN` (or `secretsmanager:NAME`) reference; "" if none."""
    if not isinstance(ref, str) or not ref.startswith("secretsmanager:"):
        return ""
    rest = ref.removeprefix("secretsmanager:")
    if ":secret:" in rest:
        return rest.split(":secret:", 1)[1]
    return "" if rest.startswith("arn:") else rest


def _served(ref: object) -> bool:
    """A `secretsmanager:` reference: the world's own Secrets Manager serves it, with a derived value if need be."""
    return bool(_secret_name(ref))


def _add_secret(data: dict[str, Any], ref: str, value: str) -> None:
    name = _secret_name(ref)
    if name and not any(s["name"] == name for s in data["secrets"]):
        data["secrets"].append({"name": name, "value": value})


def _add_store(data: dict[str, Any], entry: dict[str, Any], index: int, region: str, account: str,
               secrets: dict[str, str]) -> None:
    target = entry.get("target", {})
    seed = entry.get("id") or entry.get("name") or str(index)
    store_id = entry.get("id") or f"cks-{_hex('store', seed)}"
    name = entry.get("name") or f"xks-store-{index + 1}"
    to_vpc = target.get("connectivity") == VPC
    target_host = target["uri_endpoint"].removeprefix("https://")
    current_host = _sibling(target_host, "public" if to_vpc else "private")
    public_host, private_host = (current_host, target_host) if to_vpc else (target_host, current_host)
    path = target.get("uri_path") or "/kms/xks/v1"
    prefix = path[: -len("/kms/xks/v1")] if path.endswith("/kms/xks/v1") else ""

    original = entry.get("original_credential", {})
    current_akid = original.get("access_key_id") or _access_key_id(seed)
    current_secret = secrets.get(original.get("secret", "")) or _secret(seed)
    if original.get("secret") in secrets or _served(original.get("secret")):
        _add_secret(data, original["secret"], current_secret)
    credentials = [{"access_key_id": current_akid, "secret": current_secret}]
    new = target.get("credential")
    if new and (new.get("secret") in secrets or _served(new.get("secret"))):
        new_secret = secrets.get(new["secret"]) or _secret("new", seed)
        credentials.append({"access_key_id": new.get("access_key_id") or current_akid, "secret": new_secret})
        _add_secret(data, new["secret"], new_secret)

    if to_vpc:
        service_name = target.get("vpc_endpoint_service_name", "")
        service_id = service_name.rsplit(".", 1)[-1] if service_name else f"vpce-svc-{_hex('svc', seed)}"
        owner = target.get("vpc_endpoint_service_owner", "")
    else:
        service_id, owner = f"vpce-svc-{_hex('svc', seed)}", ""
    current_service = "" if to_vpc else f"com.amazonaws.vpce.{region}.{service_id}"

    ekm, proxy, nlb = f"{name}-ekm", f"{name}-proxy", f"{name}-nlb"
    key_ids = [k for k in entry.get("verify", {}).get("key_ids", []) if k]
    while len(key_ids) < 3:
        key_ids.append(str(uuid.UUID(bytes=_digest("key", seed, str(len(key_ids)))[:16], version=4)))
    data["key_managers"].append({"name": ekm, "keys": [{"id": f"{name}-key-{i + 1}"} for i in range(len(key_ids))]})
    data["proxies"].append({"name": proxy, "key_manager": ekm, "public_hostnames": [public_host],
                            "certificate_hosts": [target_host, current_host], "uri_path_prefix": prefix,
                            "credentials": credentials})
    data["load_balancers"].append({"name": nlb, "type": "network", "scheme": "internal",
                                   "availability_zones": [f"{region}a", f"{region}b"], "proxy": proxy})
    service: dict[str, Any] = {"service_id": service_id, "load_balancer": nlb, "private_dns_name": private_host,
                               "private_dns_state": "verified",
                               "allowed_principals": [f"cks.kms.{region}.amazonaws.com"]}
    if owner and owner != account:
        service["owner"] = owner
    data["endpoint_services"].append(service)
    store: dict[str, Any] = {
        "id": store_id, "name": name, "connectivity": PUBLIC if to_vpc else VPC,
        "uri_endpoint": f"https://{current_host}", "uri_path": path, "access_key_id": current_akid,
        "secret": current_secret, "state": "CONNECTED"}
    if current_service:
        store["vpc_endpoint_service_name"] = current_service
    data["keystores"].append(store)
    for i, key_id in enumerate(key_ids):
        data["keys"].append({"key_id": key_id, "keystore": store_id, "xks_key_id": f"{name}-key-{i + 1}"})
