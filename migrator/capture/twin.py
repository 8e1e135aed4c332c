"""Observations -> a rehearsal world file: the twin, pseudonymised unless the operator asked for real names.

The file is the world schema (`migrator/rehearsal/world/model.py`) and nothing else, so `sim serve --world`,
`plan --world` and `run --dry-run --world` load it unchanged. Each proxy host this machine reached becomes a
proxy (hosts that serve the same certificate and answer the same way are one proxy: a shared proxy stays
shared); its certificate is re-issued by the world's CA in the captured shape (kind, names, days left); its
health, latency and key answers are what the signed probes saw. What capture cannot see is written in the
file (comments and `[capture] unseen`) and returned to the command.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from migrator.capture.observe import CellCapture
from migrator.capture.probes import EndpointProbe
from migrator.capture.pseudonyms import Pseudonyms, key_check

PLACEHOLDER = "placeholder:filled-by-the-rehearsal-world"  # = the world's SECRET_PLACEHOLDER (a test pins it)
CUSTOM_KEY_STORE_APIS = ["DescribeCustomKeyStores", "ConnectCustomKeyStore", "DisconnectCustomKeyStore",
                         "UpdateCustomKeyStore"]
ALWAYS_UNSEEN = [
    "KMS's own network path to the proxy: the twin's KMS reaches what this machine reached",
    "connect and disconnect durations: the twin uses the world's defaults (300 simulated seconds each)",
    "the proxy's internals (key manager fleet size, rate limits): only its answers to the probes are modelled",
]
_ROUTABLE_WHEN_NONE_HEALTHY = ("initial", "unhealthy", "unavailable")  # an NLB fails open to these


@dataclass
class SecretLink:
    """A plan's `secretsmanager:` reference to a store's current secret: the twin serves it from that store."""

    account: str
    region: str
    name: str  # the secret's name as its ARN gives it
    keystore: str


@dataclass
class Observed:
    """Everything a capture saw, real names throughout."""

    cells: list[CellCapture]
    probes: dict[str, EndpointProbe]  # host -> what this machine saw there
    host_paths: dict[str, set[str]] = field(default_factory=dict)  # host -> uri paths used on it
    host_keys: dict[str, set[str]] = field(default_factory=dict)  # host -> access key ids used on it
    host_regions: dict[str, str] = field(default_factory=dict)  # host -> the Region whose KMS signs to it
    host_stores: dict[str, set[str]] = field(default_factory=dict)  # host -> key store ids that use or will use it
    secrets: list[SecretLink] = field(default_factory=list)
    roles: dict[str, tuple[str, str]] = field(default_factory=dict)  # account -> (role name, external id)
    unseen: list[str] = field(default_factory=list)


def _prefix_of(uri_path: str) -> str:
    return uri_path.rpartition("/kms/xks/")[0]


class _Builder:
    def __init__(self, seen: Observed, ps: Pseudonyms):
        self.seen, self.ps = seen, ps
        self.unseen = list(seen.unseen)
        self.private_hosts = {svc.get("PrivateDnsName") or "": cell for cell in seen.cells for svc in cell.services}
        self.private_hosts.pop("", None)
        self.proxies: list[dict[str, Any]] = []
        self.key_managers: list[dict[str, Any]] = []
        self.proxy_of_host: dict[str, str] = {}
        self.faults: list[dict[str, Any]] = []

    # -- proxies and key managers ---------------------------------------------------------------

    def _store_xks_ids(self, host: str) -> list[str]:
        stores = self.seen.host_stores.get(host, set())
        return sorted({k["xks_key_id"] for c in self.seen.cells for k in c.keys if k["keystore"] in stores})

    def _key_manager(self, keys: list[dict[str, Any]]) -> str:
        for km in self.key_managers:
            if km["keys"] == keys:
                return str(km["name"])
        name = f"key-manager-{len(self.key_managers) + 1}"
        self.key_managers.append({"name": name, "keys": keys})
        return name

    def build_proxies(self) -> None:
        groups: dict[tuple[Any, ...], list[EndpointProbe]] = {}
        for host, probe in sorted(self.seen.probes.items()):
            if probe.reach == "dns" and host not in self.private_hosts:
                self.unseen.append(f"{self.ps.host(host)} does not resolve from where capture ran")
                continue
            if probe.reach == "connect" and host in self.private_hosts:
                continue  # a private name refused: the NLB routes nowhere (its targets say why)
            if probe.reach == "dns":
                self.unseen.append(f"{self.ps.host(host)} (a private DNS name) was not reached from where capture "
                                   "ran: the twin puts a healthy proxy with a valid certificate behind its NLB")
            keys = tuple(sorted((k, a.found, a.status, tuple(a.usage)) for k, a in probe.keys.items()))
            signature = (probe.leaf_sha256 or host, probe.reach, probe.health, probe.error_name, keys,
                         probe.tls_version)
            groups.setdefault(signature, []).append(probe)
        for n, members in enumerate(groups.values(), 1):
            self.proxies.append(self._proxy(f"proxy-{n}", members))

    def _proxy(self, name: str, members: list[EndpointProbe]) -> dict[str, Any]:
        ps, first = self.ps, members[0]
        hosts = [p.host for p in members]
        for host in hosts:
            self.proxy_of_host[host] = name
        paths = sorted({_prefix_of(p) for h in hosts for p in self.seen.host_paths.get(h, ())})
        if first.probed and not first.error_name:
            keys = [{"id": ps.xks_key_id(k), "status": a.status if a.status in ("ENABLED", "DISABLED") else "DISABLED",
                     "usage": [u for u in a.usage if u in ("ENCRYPT", "DECRYPT")] or ["ENCRYPT"]}
                    for k, a in sorted(first.keys.items()) if a.found]
        else:
            keys = [{"id": ps.xks_key_id(k)} for h in hosts for k in self._store_xks_ids(h)]
            why = first.not_probed_why or ("no secret for its credential in the plan" if not first.probed
                                           else f"GetHealthStatus answered {first.error_name}")
            self.unseen.append(f"proxy at {', '.join(ps.host(h) for h in hosts)} not probed with a signed request "
                               f"({why}): health, latency and key answers are assumed good")
        proxy: dict[str, Any] = {
            "name": name, "key_manager": self._key_manager(keys),
            "public_hostnames": [ps.host(h) for h in hosts if h not in self.private_hosts and first.reach != "dns"],
            "uri_path_prefix": ps.path_prefix(paths[0]) if paths else "",
            "credentials": [{"access_key_id": ps.access_key_id(k), "secret": PLACEHOLDER}
                            for k in sorted({k for h in hosts for k in self.seen.host_keys.get(h, ())})],
            "region": self.seen.host_regions.get(first.host, self.seen.cells[0].region),
        }
        if len(paths) > 1:
            self.unseen.append(f"proxy {name} is used under {len(paths)} paths; the twin serves the first only")
        if first.chain is not None:
            proxy.update(certificate=first.chain.kind, certificate_hosts=[ps.host(h) for h in first.chain.names],
                         certificate_days_valid=first.chain.days_valid)
        if first.reach == "version":
            proxy["tls_max_version"] = "1.1"
        elif first.tls_version in ("1.2", "1.3"):
            proxy["tls_max_version"] = first.tls_version
        if first.reach in ("connect", "timeout", "handshake_timeout"):
            proxy["down"] = True
        if first.health:
            proxy["health"] = first.health
        if first.latency_ms is not None:
            proxy["latency_ms"] = round(max(0.5, first.latency_ms), 1)
        fault = {"ThrottlingException": "throttling", "DependencyTimeoutException": "dependency_timeout"}.get(
            first.error_name)
        if fault:
            self.faults.append({"proxy": name, "proxy_fault": fault})
        elif first.error_name:
            self.unseen.append(f"proxy {name} answered GetHealthStatus with {first.error_name}; the twin's answers")
        return proxy

    # -- one cell's AWS resources ------------------------------------------------------------------

    def cell_items(self, cell: CellCapture) -> dict[str, list[dict[str, Any]]]:
        ps = self.ps
        lb_names = {lb["LoadBalancerArn"]: lb["LoadBalancerName"] for lb in cell.load_balancers}
        lb_host: dict[str, str] = {}
        services = []
        for svc in cell.services:
            arns = (svc.get("NetworkLoadBalancerArns") or []) + (svc.get("GatewayLoadBalancerArns") or [])
            lb = next((lb_names[a] for a in arns if a in lb_names), "")
            if not lb:
                self.unseen.append(f"endpoint service {ps.service_id(svc['ServiceId'])}: its load balancer was not "
                                   "among those described; the twin's service has none")
            host = svc.get("PrivateDnsName") or ""
            lb_host[lb] = host
            dns = svc.get("PrivateDnsNameConfiguration") or {}
            services.append({
                "service_id": ps.service_id(svc["ServiceId"]), "load_balancer": ps.name("lb", lb),
                "private_dns_name": ps.host(host), "private_dns_state": dns.get("State") or "verified",
                "allowed_principals": [ps.principal(p) for p in svc.get("principals", [])],
                "acceptance_required": bool(svc.get("AcceptanceRequired")),
                "service_type": ((svc.get("ServiceType") or [{}])[0]).get("ServiceType", "Interface"),
                "state": svc.get("ServiceState", "Available")})
        return {"load_balancers": [self._load_balancer(lb, self.proxy_of_host.get(lb_host.get(lb["LoadBalancerName"],
                                                                                               ""), ""))
                                   for lb in cell.load_balancers],
                "endpoint_services": services,
                "keystores": [self._keystore(s) for s in cell.stores if s.get("CustomKeyStoreType") != "AWS_CLOUDHSM"],
                "keys": [{"key_id": ps.key_id(k["key_id"]), "keystore": ps.keystore_id(k["keystore"]),
                          "xks_key_id": ps.xks_key_id(k["xks_key_id"]), "state": k["state"]} for k in cell.keys]}

    def _load_balancer(self, lb: dict[str, Any], proxy: str) -> dict[str, Any]:
        ps = self.ps
        groups = {g["TargetGroupArn"]: g for g in lb.get("target_groups", [])}
        listeners = []
        for listener in lb.get("listeners", []):
            forward = next((a.get("TargetGroupArn") for a in listener.get("DefaultActions", []) if
                            a.get("TargetGroupArn") in groups), None)
            item = {"port": int(listener.get("Port", 443)), "protocol": str(listener.get("Protocol", "TCP"))}
            if forward:
                item["target_group"] = ps.name("tg", groups[forward]["TargetGroupName"])
            listeners.append(item)
        tables = []
        for group in groups.values():
            registered = [t for t in group.get("targets", [])
                          if (t.get("TargetHealth") or {}).get("Reason") != "Target.NotRegistered"]
            healthy = any((t.get("TargetHealth") or {}).get("State") == "healthy" for t in registered)
            targets = []
            for t in registered:
                state = (t.get("TargetHealth") or {}).get("State", "healthy")
                routed = state == "healthy" or (not healthy and state in _ROUTABLE_WHEN_NONE_HEALTHY)
                target = {"id": self._target_id(str(t["Target"]["Id"])), "port": int(t["Target"].get("Port", 443)),
                          "health": state, "proxy": proxy if routed else ""}
                if (t.get("TargetHealth") or {}).get("Reason"):
                    target["reason"] = t["TargetHealth"]["Reason"]
                if t["Target"].get("AvailabilityZone"):
                    target["availability_zone"] = t["Target"]["AvailabilityZone"]
                targets.append(target)
            tables.append({"name": ps.name("tg", group["TargetGroupName"]), "protocol": group.get("Protocol", "TCP"),
                           "port": int(group.get("Port", 443)), "target_type": group.get("TargetType", "ip"),
                           "targets": targets})
        return {"name": ps.name("lb", lb["LoadBalancerName"]), "type": lb.get("Type", "network"),
                "scheme": lb.get("Scheme", "internal"), "state": (lb.get("State") or {}).get("Code", "active"),
                "availability_zones": [z["ZoneName"] for z in lb.get("AvailabilityZones", [])],
                "listeners": listeners, "target_groups": tables}

    def _target_id(self, value: str) -> str:
        if not self.ps.scrubbed:
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return "i-" + self.ps.name("target", value).removeprefix("ta-").ljust(17, "0")[:17]
        digest = self.ps.name("ip", value).removeprefix("ip-")
        return "10." + ".".join(str(int(digest[i:i + 2], 16)) for i in (0, 2, 4))

    def _keystore(self, s: dict[str, Any]) -> dict[str, Any]:
        ps, xks = self.ps, s.get("XksProxyConfiguration") or {}
        item = {"id": ps.keystore_id(s["CustomKeyStoreId"]), "name": ps.name("keystore", s["CustomKeyStoreName"]),
                "connectivity": xks.get("Connectivity", "PUBLIC_ENDPOINT"),
                "uri_endpoint": ps.uri_endpoint(xks.get("UriEndpoint", "")), "uri_path": ps.uri_path(xks.get("UriPath",
                                                                                                           "")),
                "access_key_id": ps.access_key_id(xks.get("AccessKeyId", "")), "secret": PLACEHOLDER,
                "state": s.get("ConnectionState", "CONNECTED")}
        if xks.get("VpcEndpointServiceName"):
            item["vpc_endpoint_service_name"] = ps.service_name(xks["VpcEndpointServiceName"])
        if xks.get("VpcEndpointServiceOwner"):
            item["vpc_endpoint_service_owner"] = ps.account(xks["VpcEndpointServiceOwner"])
        if s.get("ConnectionErrorCode"):
            item["connection_error_code"] = s["ConnectionErrorCode"]
        return item

    def secrets_of(self, cell: CellCapture) -> list[dict[str, Any]]:
        return [{"name": self.ps.name("secret", link.name), "keystore": self.ps.keystore_id(link.keystore)}
                for link in self.seen.secrets if (link.account, link.region) == (cell.account, cell.region)]

    def iam_of(self, cell: CellCapture) -> dict[str, Any]:
        return {"caller_arn": self.ps.arn(cell.caller_arn), "denied_actions": cell.denied_actions,
                "simulation_denied": cell.simulation_denied}


def build_world(seen: Observed, ps: Pseudonyms, *, version: str, seed: int = 1) -> tuple[dict[str, Any], list[str]]:
    """(the world file as a TOML table, what capture could not see)."""
    b = _Builder(seen, ps)
    b.build_proxies()
    home = seen.cells[0]
    private = [p for h, p in seen.probes.items() if h in b.private_hosts]
    world: dict[str, Any] = {
        "capture": {"tool": "xksmigrate capture", "version": version, "scrubbed": ps.scrubbed,
                    "captured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "world": {"account_id": ps.account(home.account), "region": home.region, "time_scale": 60.0, "seed": seed,
                  "vantage": "outside" if any(p.reach == "dns" for p in private) else "inside_vpc"},
        "quotas": [{"operations": CUSTOM_KEY_STORE_APIS, "rate": 5.0}],
        "key_managers": b.key_managers, "proxies": b.proxies,
        **{k: v for k, v in b.cell_items(home).items() if v},
        "iam": b.iam_of(home),
    }
    if ps.key is not None:
        world["capture"]["key_check"] = key_check(ps.key)
    if secrets := b.secrets_of(home):
        world["secrets"] = secrets
    accounts = _accounts(b, seen.cells[1:], home)
    if accounts:
        world["accounts"] = accounts
    if b.faults:
        world["faults"] = b.faults
    unseen = ALWAYS_UNSEEN + b.unseen + [u for c in seen.cells for u in c.unseen]
    world["capture"]["unseen"] = unseen
    return world, unseen


def _accounts(b: _Builder, cells: Iterable[CellCapture], home: CellCapture) -> list[dict[str, Any]]:
    ps, by_account = b.ps, dict[str, list[CellCapture]]()
    for cell in cells:
        by_account.setdefault(cell.account, []).append(cell)
    out = []
    for account, its in by_account.items():
        table: dict[str, Any] = {"id": ps.account(account), "regions": sorted({c.region for c in its})}
        if account != home.account:
            role = b.seen.roles.get(account)
            if role:
                table["roles"] = [{"name": ps.name("role", role[0]), "trusted": [ps.account(home.account)],
                                   **({"external_id": ps.external_id(role[1])} if role[1] else {})}]
            table["iam"] = b.iam_of(its[0])
        for cell in its:
            for kind, items in [*b.cell_items(cell).items(), ("secrets", b.secrets_of(cell))]:
                for item in items:
                    if kind != "keys":
                        item["region"] = cell.region
                    table.setdefault(kind, []).append(item)
        out.append(table)
    return out


def world_text(world: dict[str, Any], unseen: list[str], *, source: str) -> str:
    """The TOML, with a header that says what it is and what it cannot show."""
    import tomli_w

    lines = [f"# A twin of {source}, captured by xksmigrate {world['capture']['version']} at "
             f"{world['capture']['captured_at']}.",
             "# Rehearse on it:  xksmigrate plan PLAN --world THIS_FILE ; xksmigrate run PLAN --dry-run --world "
             "THIS_FILE",
             "# No secret is in this file: every secret is a placeholder the rehearsal world fills.",
             ("# Names are pseudonyms (a keyed hash; the key stays on the machine that captured it)."
              if world["capture"]["scrubbed"] else "# Names are REAL (--no-scrub): keep this file private."),
             "# What capture cannot see (also [capture] unseen):"]
    lines += [f"#  - {u}" for u in unseen]
    return "\n".join(lines) + "\n\n" + tomli_w.dumps(world)
