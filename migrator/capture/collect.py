"""A capture's walk: each account-Region the plan reaches, then each proxy endpoint its stores use or will use.

The cells come first (`observe.capture_cell`: every key store there, since the uniqueness checks compare them
all), the caller's own cell always first (the twin's default account); then, for each store the plan or
`--keystore` names, its current endpoint (with the original credential) and its target (with the target's),
each host handshaken once and probed with a signed request once, as preflight would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from migrator.aws.clients import ClientFactory, aws_error_code
from migrator.aws.secret_refs import SecretValue
from migrator.capture.observe import CellCapture, capture_cell
from migrator.capture.probes import Resolver, probe_endpoint, sign_probe
from migrator.capture.twin import Observed, SecretLink
from migrator.plan import KeystorePlan, Plan
from migrator.preflight.accounts import store_clients

MAX_PROBED_KEYS = 50


class CaptureError(ValueError):
    """The capture cannot be made (a store the operator named is not there, no AWS answer); one line."""


@dataclass
class CaptureReach:
    """How this machine reaches the account and its proxies (the same vantage point and trust as a run)."""

    clients: ClientFactory
    resolve: Resolver | None
    extra_roots_pem: Sequence[bytes]
    secret_resolver: Callable[[str], SecretValue]


@dataclass
class _Endpoint:
    uri_endpoint: str
    uri_path: str
    access_key_id: str
    secret_ref: str | None
    store: str
    region: str
    cell: CellCapture


def _host(uri_endpoint: str) -> str:
    return uri_endpoint.removeprefix("https://").split("/")[0].split(":")[0].lower()


def _find(cell: CellCapture, ref: str) -> dict[str, Any] | None:
    return next((s for s in cell.stores if ref in (s["CustomKeyStoreId"], s.get("CustomKeyStoreName"))), None)


def collect(plan: Plan | None, keystore_ids: Sequence[str], reach: CaptureReach) -> Observed:
    """Everything the twin is made of, real names throughout."""
    home_clients = reach.clients
    cells: dict[tuple[str, str], CellCapture] = {}
    seen = Observed(cells=[], probes={})

    def cell_of(clients: ClientFactory) -> CellCapture:
        account = str(clients.client("sts").get_caller_identity()["Account"])
        key = (account, clients.region)
        if key not in cells:
            cells[key] = capture_cell(clients, account=account, region=clients.region)
        return cells[key]

    home = cell_of(home_clients)
    endpoints: list[_Endpoint] = []
    stores: list[tuple[KeystorePlan | None, str, CellCapture]] = []
    if plan is not None:
        for planned in plan.keystores:
            cell = cell_of(store_clients(plan, planned, home_clients))
            if planned.role_arn and planned.account_id:
                seen.roles[planned.account_id] = (planned.role_arn.rsplit("/", 1)[-1], planned.external_id or "")
            stores.append((planned, planned.ref, cell))
    stores += [(None, ref, home) for ref in keystore_ids]
    for ks, ref, cell in stores:
        found = _find(cell, ref)
        if found is None:
            if ks is None:
                raise CaptureError(f"--keystore {ref}: no custom key store {ref} in account {cell.account}, "
                                   f"{cell.region}")
            seen.unseen.append(f"key store {ref} was not found in its account and Region: the twin lacks it too")
            continue
        endpoints += _endpoints_of(ks, found, cell, plan)
        if ks is not None and ks.original_credential and ks.original_credential.secret_ref.startswith(
                "secretsmanager:arn:"):
            parts = ks.original_credential.secret_ref.removeprefix("secretsmanager:").split(":", 6)
            if len(parts) == 7:
                seen.secrets.append(SecretLink(parts[4], parts[3], parts[6], found["CustomKeyStoreId"]))
    seen.cells = [home, *[c for c in cells.values() if c is not home]]
    _probe_all(endpoints, seen, reach)
    return seen


def _endpoints_of(ks: KeystorePlan | None, store: dict[str, Any], cell: CellCapture, plan: Plan | None
                  ) -> list[_Endpoint]:
    xks = store.get("XksProxyConfiguration") or {}
    sid, current_key = store["CustomKeyStoreId"], str(xks.get("AccessKeyId", ""))
    original = ks.original_credential if ks else None
    out = [_Endpoint(str(xks.get("UriEndpoint", "")), str(xks.get("UriPath", "")), current_key,
                     original.secret_ref if original else None, sid, cell.region, cell)]
    if ks is not None:
        t = ks.target
        credential = t.credential or original
        out.append(_Endpoint(t.uri_endpoint, t.uri_path or out[0].uri_path,
                             (credential.access_key_id if credential else "") or current_key,
                             credential.secret_ref if credential else None, sid, cell.region, cell))
    return [e for e in out if e.uri_endpoint.startswith("https://")]


def _probe_all(endpoints: list[_Endpoint], seen: Observed, reach: CaptureReach) -> None:
    for e in endpoints:
        host = _host(e.uri_endpoint)
        seen.host_paths.setdefault(host, set()).add(e.uri_path)
        seen.host_keys.setdefault(host, set()).add(e.access_key_id)
        seen.host_stores.setdefault(host, set()).add(e.store)
        seen.host_regions.setdefault(host, e.region)
        if host not in seen.probes:
            seen.probes[host] = probe_endpoint(e.uri_endpoint, resolve=reach.resolve,
                                               extra_roots_pem=reach.extra_roots_pem)
        probe = seen.probes[host]
        if probe.probed or e.secret_ref is None:
            continue
        try:
            secret = reach.secret_resolver(e.secret_ref)
        except Exception as exc:  # SecretError, an AWS error from secretsmanager:, a missing variable
            seen.unseen.append(f"the secret for {e.store}'s credential could not be read "
                               f"({aws_error_code(exc) or type(exc).__name__}): its proxy was not probed")
            continue
        xks_ids = sorted({k["xks_key_id"] for k in e.cell.keys if k["keystore"] == e.store})[:MAX_PROBED_KEYS]
        sign_probe(probe, uri_endpoint=e.uri_endpoint, uri_path=e.uri_path, region=e.region,
                   access_key_id=e.access_key_id, secret=secret, external_key_ids=xks_ids,
                   principal=e.cell.caller_arn or "AWS Internal", resolve=reach.resolve,
                   extra_roots_pem=reach.extra_roots_pem)
