"""The vantage point: where this machine dials each proxy host for preflight's TLS and proxy probes.

A VPC endpoint's private DNS name does not resolve outside its VPC, so an operator reaches it through a
port forward (AWS Systems Manager `AWS-StartPortForwardingSessionToRemoteHost`, RUNBOOK.md#vantage-point)
and says so: `--resolve HOST=IP:PORT` (repeatable) or `XKSMIGRATE_RESOLVE="host=ip:port,..."`. A
rehearsal world on loopback tells its own (`GET {endpoint}/_rehearsal/vantage`: the hosts this machine
may reach, its time scale and, optionally, `trusted_roots_pem`: the world CA, trusted only for such a loopback
endpoint, as `--dry-run` trusts its in-process world's); the CLI and the world meet only at that URL.
Explicit entries win.
Bad input is one line and exit 2 (`CliError`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from migrator.cli.errors import fail

RESOLVE_ENV = "XKSMIGRATE_RESOLVE"
VANTAGE_PATH = "/_rehearsal/vantage"
_HOST = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}))*\.?$")
_ADDRESS = re.compile(r"^([a-zA-Z0-9.-]+|\[[0-9a-fA-F:.]+\]):([0-9]{1,5})$")


@dataclass(frozen=True)
class Vantage:
    """What a rehearsal world says this machine can reach (None: the endpoint said nothing)."""

    time_scale: float | None = None
    resolve: dict[str, str] = field(default_factory=dict)
    trusted_roots_pem: tuple[bytes, ...] = ()  # the world's CA certificates (public data, never a key)


def _entry(text: str, where: str) -> tuple[str, str]:
    host, sep, address = text.strip().partition("=")
    host = host.strip().lower().rstrip(".")
    address = address.strip()
    if not sep or not host or not address:
        raise fail(f"{where}: {text.strip()!r} is not HOST=IP:PORT (e.g. myproxy-private.example.com=127.0.0.1:8443)")
    if not _HOST.fullmatch(host):
        raise fail(f"{where}: {host!r} is not a host name")
    match = _ADDRESS.fullmatch(address)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise fail(f"{where}: {address!r} for {host} is not IP:PORT with a port 1-65535 (e.g. 127.0.0.1:8443)")
    return host, address


def parse_resolve(entries: Iterable[str], where: str = "--resolve") -> dict[str, str]:
    """HOST=IP:PORT entries -> {host: "ip:port"}; a host given twice with two addresses is refused."""
    found: dict[str, str] = {}
    for text in entries:
        host, address = _entry(text, where)
        if found.get(host, address) != address:
            raise fail(f"{where}: {host} is given twice ({found[host]} and {address})")
        found[host] = address
    return found


def explicit_resolve(flags: Iterable[str] | None) -> dict[str, str]:
    """The operator's entries: XKSMIGRATE_RESOLVE, overridden host by host by --resolve."""
    env = os.environ.get(RESOLVE_ENV, "")
    mapping = parse_resolve([e for e in env.split(",") if e.strip()], RESOLVE_ENV) if env.strip() else {}
    return {**mapping, **parse_resolve(flags or ())}


def ask_rehearsal(endpoint_url: str, timeout: float = 3.0) -> Vantage | None:
    """The rehearsal world's vantage point, read-only; None when it does not serve one (404, no answer)."""
    import urllib.error
    import urllib.request

    url = endpoint_url.rstrip("/") + VANTAGE_PATH
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        with opener.open(url, timeout=timeout) as resp:
            data = json.loads(resp.read(1 << 20) or b"{}")
    except (urllib.error.URLError, OSError, ValueError):  # HTTPError (404) is a URLError
        return None
    if not isinstance(data, dict):
        return None
    scale = data.get("time_scale")
    raw = data.get("resolve")
    resolve = {str(h).lower().rstrip("."): str(a) for h, a in raw.items()} if isinstance(raw, dict) else {}
    roots = data.get("trusted_roots_pem")
    pems = [roots] if isinstance(roots, str) else roots if isinstance(roots, list) else []
    return Vantage(float(scale) if isinstance(scale, int | float) and not isinstance(scale, bool) else None, resolve,
                   tuple(p.encode() for p in pems if isinstance(p, str) and p.startswith("-----BEGIN CERTIFICATE")))


def resolver(explicit: Mapping[str, str], rehearsal: Mapping[str, str] | None) -> Callable[[str], str] | None:
    """host -> "ip:port" to dial: explicit entries first, then the rehearsal world's; a host neither knows goes
    through DNS to port 443 for a real account, and is unreachable from here in a rehearsal (LookupError).
    None when nothing is known: preflight then dials DNS:443 itself."""
    if not explicit and rehearsal is None:
        return None
    known = {**(rehearsal or {}), **explicit}

    def resolve(host: str) -> str:
        name = host.lower().rstrip(".")
        if name in known:
            return known[name]
        if rehearsal is not None:
            raise LookupError(f"{host} cannot be reached from this machine (the rehearsal world's vantage point)")
        return f"{host}:443"

    return resolve


def first(explicit: Mapping[str, str], world: Callable[[str], str]) -> Callable[[str], str]:
    """--resolve entries first, then an in-process world's vantage point (--dry-run)."""
    return lambda host: explicit.get(host.lower().rstrip(".")) or world(host)


def scale_warning(world_scale: float | None, run_scale: float | None) -> str | None:
    """Issue #11: the world runs on another clock than the run would (its windows would be measured wrong)."""
    if world_scale is None:
        return None
    ours = run_scale or 1.0
    if abs(world_scale - ours) <= 1e-9:
        return None
    given = f"--time-scale {ours:g}" if run_scale else "no --time-scale (1)"
    return (f"the rehearsal endpoint runs at time scale {world_scale:g} but this run has {given}: windows and "
            f"budgets would be measured on the wrong clock; pass --time-scale {world_scale:g}")
