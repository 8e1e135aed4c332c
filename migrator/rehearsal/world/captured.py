"""A twin captured from a real account (`xksmigrate capture`): its `[capture]` header and its placeholders.

A capture never writes a secret (KMS never returns one, and the plan's are the operator's), so every proxy
credential and key store secret in the file is SECRET_PLACEHOLDER. The world fills each access key id's
placeholder with one made-up value, the same on KMS's side and on every proxy that accepts that key, so the
twin connects exactly as the original does; `fill_secret` lets a rehearsal put the plan's own secret there
instead, so a plan whose reference resolves to the real secret probes the twin's proxy as it would the real one.
"""

from __future__ import annotations

import base64
import hashlib

from migrator.rehearsal.world.objects import SECRET_PLACEHOLDER, World
from migrator.rehearsal.world.reader import Reader

CAPTURE_KEYS = ("tool", "version", "captured_at", "key_check")


def read_capture_table(r: Reader) -> dict[str, object]:
    table: dict[str, object] = {key: r.get(key, str, "") for key in CAPTURE_KEYS}
    table["scrubbed"] = r.get("scrubbed", bool, False)
    table["unseen"] = r.strings("unseen")
    r.done()
    return table if any(table.values()) else {}


def _made_up(world: World, access_key_id: str) -> str:
    digest = hashlib.sha256(f"{world.seed}\0{access_key_id}\0xks-proxy-secret".encode()).digest()
    return base64.b64encode(digest).decode()


def fill_placeholders(world: World) -> None:
    """Every placeholder secret becomes the made-up value of its access key id."""
    for cell in world.all_cells().values():
        for ks in cell.keystores:
            if ks.secret == SECRET_PLACEHOLDER:
                world.placeholder_keys.add(ks.access_key_id)
                ks.secret = _made_up(world, ks.access_key_id)
    for proxy in world.proxies:
        for cred in proxy.credentials:
            if cred.secret == SECRET_PLACEHOLDER:
                world.placeholder_keys.add(cred.access_key_id)
                cred.secret = _made_up(world, cred.access_key_id)


def fill_secret(world: World, access_key_id: str, secret: str) -> bool:
    """Use `secret` wherever the world made one up for `access_key_id`; False if it made none up for it."""
    if access_key_id not in world.placeholder_keys:
        return False
    made_up = _made_up(world, access_key_id)
    for cell in world.all_cells().values():
        for ks in cell.keystores:
            if ks.access_key_id == access_key_id and ks.secret == made_up:
                ks.secret = secret
    for proxy in world.proxies:
        for cred in proxy.credentials:
            if cred.access_key_id == access_key_id and cred.secret == made_up:
                cred.secret = secret
    return True
