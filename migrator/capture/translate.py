"""A plan written against real names, read through a scrubbed twin's pseudonyms.

The operator keeps one plan: `plan PLAN --world twin.toml` and `run PLAN --dry-run --world twin.toml` translate
its store ids and names, endpoints, paths, service names, accounts, roles, external ids, access key ids, key ids
and `secretsmanager:` ARNs with the key the capture used, so the rehearsal talks about the twin's stores. The
key is read from `XKSMIGRATE_CAPTURE_KEY` (a secret reference) or the capture key file beside the journal; the
world file's `key_check` says whether it is the right one. A `probe` address (the real network) is dropped:
on the twin the world's own vantage point reaches the proxies.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from typing import Any

from migrator.capture.pseudonyms import Pseudonyms, key_check
from migrator.plan import Plan, parse_plan

Table = dict[str, Any]


class TwinKeyError(ValueError):
    """The twin was scrubbed with a key this machine does not hold; one line."""


def capture_header(world_path: str) -> Table:
    """The world file's `[capture]` table ({} for a hand-written world or a file that does not parse)."""
    try:
        with open(world_path, "rb") as fh:
            table = tomllib.load(fh).get("capture", {})
    except (OSError, ValueError, RecursionError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return {}  # the rehearsal reports the file's own problem, with its line
    return table if isinstance(table, dict) else {}


def check_key(header: Table, key: bytes | None, world_path: str) -> None:
    if key is None or key_check(key) != header.get("key_check"):
        raise TwinKeyError(f"{world_path}: this twin was scrubbed with another capture key (key_check "
                           f"{header.get('key_check')!r}); give it with XKSMIGRATE_CAPTURE_KEY=REF (env:NAME or "
                           "file:PATH), or copy the capturing machine's capture.key beside the journal")


def _map(table: Table, key: str, fn: Callable[[str], str]) -> None:
    if isinstance(table.get(key), str):
        table[key] = fn(table[key])


def _credential(t: Any, ps: Pseudonyms) -> None:
    if isinstance(t, dict):
        _map(t, "access_key_id", ps.access_key_id)
        _map(t, "secret", ps.secret_ref)


def translate_plan(plan: Plan, ps: Pseudonyms, world_path: str) -> Plan:
    """`plan` with every AWS identifier replaced by its pseudonym (the same plan when nothing is scrubbed)."""
    if not ps.scrubbed:
        return plan
    data = tomllib.loads(plan.text)
    top = data.get("plan", {})
    _map(top, "account_id", ps.account)
    _map(top, "role_name", lambda v: ps.name("role", v))
    _map(top, "external_id", ps.external_id)
    for ks in data.get("keystores", []):
        if not isinstance(ks, dict):
            continue
        _map(ks, "id", ps.keystore_id)
        _map(ks, "name", lambda v: ps.name("keystore", v))
        _map(ks, "account_id", ps.account)
        _map(ks, "role_arn", ps.arn)
        _map(ks, "external_id", ps.external_id)
        ks.pop("probe", None)
        target = ks.get("target", {})
        if isinstance(target, dict):
            _map(target, "uri_endpoint", ps.uri_endpoint)
            _map(target, "uri_path", ps.uri_path)
            _map(target, "vpc_endpoint_service_name", ps.service_name)
            _map(target, "vpc_endpoint_service_owner", ps.account)
            _credential(target.get("credential"), ps)
        _credential(ks.get("original_credential"), ps)
        verify = ks.get("verify", {})
        if isinstance(verify, dict) and isinstance(verify.get("key_ids"), list):
            verify["key_ids"] = [ps.key_id(k) if isinstance(k, str) else k for k in verify["key_ids"]]
    import tomli_w

    translated = parse_plan(tomli_w.dumps(data), f"{plan.path} (through the pseudonyms of {world_path})")
    return dataclasses.replace(translated, path=plan.path)
