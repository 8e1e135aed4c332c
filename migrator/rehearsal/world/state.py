"""The live rehearsal world: key stores, keys, a simulated clock, faults, proxies and an append-only log.

`WorldState` wraps a `model.World` without copying it: key stores, keys, endpoint services, load balancers
and proxies are the model objects themselves, so the query API (EC2/ELBv2 Modify* calls), the control
paths and the proxy servers (which read their `model.Proxy` per request) all see one world. Every API
handler runs under `lock` (an RLock).

Connect and disconnect are asynchronous, as in KMS (facts §2.2, §2.3): the call starts a transition that is
due `latencies.connect|disconnect` simulated seconds later. Transitions complete lazily (every read calls
`advance()`) and from a small ticker thread, and the state change is logged at its due time `t`. The
outcome of a connect is decided at completion by the `connect_check` the state is built with: the world's
KMS (`kms.checks.connect_check`) really calls the proxy's GetHealthStatus with the store's values through its
name resolution and VPC checks.

This module is the bottom of the rehearsal wing next to `model`: it knows nothing of KMS, the query APIs or the
XKS proxy implementation. The proxy servers and the world CA are handed to `start()` by whoever composes the
world (`server.RehearsalServer`); KMS reaches a running proxy through `proxy_connection()`.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from migrator.rehearsal.world import balancing, model
from migrator.rehearsal.world.ca import WorldCA
from migrator.rehearsal.world.faults import FaultBook
from migrator.rehearsal.world.identity import Identity, Quotas


class SimClock:
    """Simulated seconds since the world started: `time_scale` per real second, plus explicit jumps."""

    def __init__(self, time_scale: float):
        self.time_scale = time_scale
        self._start = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.time_scale + self._offset

    def advance(self, seconds: float) -> None:
        """Jump ahead (tests and benchmarks): pending transitions become due sooner."""
        self._offset += max(0.0, seconds)

    def real_seconds(self, simulated: float) -> float:
        return simulated / self.time_scale


class CallLog:
    """Append-only list of call/state/proxy entries, optionally mirrored to a JSON-lines file.

    Entries never carry secrets or plaintext: only operation names, ids, states and error names. Every entry
    names its account and Region (None for what belongs to no cell, e.g. a proxy fault); `for_cell` gives a
    view of the same log that stamps one cell's.
    """

    KEYS = ("t", "wall", "kind", "operation", "account", "region", "keystore", "from", "to", "error",
            "request_id")

    def __init__(self, clock: SimClock, path: str | None = None):
        self.clock = clock
        self.path = path
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.account: str | None = None
        self.region: str | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def for_cell(self, account: str, region: str) -> CallLog:
        view = object.__new__(CallLog)
        view.clock, view.path, view.entries, view._lock = self.clock, self.path, self.entries, self._lock
        view.account, view.region = account, region
        return view

    def add(self, kind: str, operation: str, *, keystore: str | None = None, from_: str | None = None,
            to: str | None = None, error: str | None = None, request_id: str | None = None,
            t: float | None = None, detail: str | None = None, account: str | None = None,
            region: str | None = None) -> dict[str, Any]:
        entry = {"t": round(self.clock.now() if t is None else t, 3), "wall": round(time.time(), 3),
                 "kind": kind, "operation": operation, "account": account or self.account,
                 "region": region or self.region, "keystore": keystore, "from": from_, "to": to,
                 "error": error or None, "request_id": request_id}
        if detail:
            entry["detail"] = detail
        with self._lock:
            self.entries.append(entry)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")
        return entry

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.entries)


@dataclass
class StoreRuntime:
    """KMS-side bookkeeping for one key store beyond what the model holds."""

    ks: model.KeyStore
    created_wall: float
    pending: str = ""  # "connect" | "disconnect"
    due: float = 0.0
    available_at: float = float("-inf")  # keys usable from this simulated instant (after CONNECTED)
    crypto_blocked_until: float = float("-inf")  # update propagation after a connect
    updated_since_connect: bool = False


class ProxyServer(Protocol):
    """What the state needs of a running XKS proxy (`xks.proxy.XksProxyServer`)."""

    @property
    def port(self) -> int: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def set_fault(self, kind: str, latency_ms: float = 0.0) -> None: ...


ConnectCheck = Callable[["WorldState", StoreRuntime], str]
"""Decides how a due connect ends: the ConnectionErrorCode of the failure, or "" for CONNECTED."""


@dataclass
class WorldState:
    """The live world; also the live state of one (account, Region) cell.

    The WorldState built from a `model.World` is the root and the default cell; `cells` holds one WorldState
    per cell of `world.all_cells()` (the root included). Cells share the root's clock, log (stamped with the
    cell), faults, random source, lock, proxies, CA, identity (access keys, sessions) and quotas; each has its
    own key stores and keys, so the KMS and query handlers serve one cell exactly as they served the world.
    """

    world: model.World
    log_path: str | None = None
    ca_dir: str | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    connect_check: ConnectCheck = field(kw_only=True)
    parent: WorldState | None = field(default=None, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        root = self.parent
        if root is None:
            self.root = self
            self.clock = SimClock(self.world.time_scale)
            self.base_log = CallLog(self.clock, self.log_path)
            self.rng = random.Random(self.world.seed)
            self.faults = FaultBook(random.Random(self.world.seed + 1))
            self.started_wall = time.time()
            self.proxy_servers: dict[str, ProxyServer] = {}
            self.identity = Identity(self.world, self.clock.now, random.Random(self.world.seed + 2))
            self.quotas = Quotas(self.world, self.clock.now)
            self.cells: dict[tuple[str, str], WorldState] = {}
        else:
            self.root, self.lock, self.connect_check = root, root.lock, root.connect_check
            self.clock, self.base_log, self.rng, self.faults = root.clock, root.base_log, root.rng, root.faults
            self.started_wall, self.proxy_servers, self.cells = root.started_wall, root.proxy_servers, root.cells
            self.identity, self.quotas = root.identity, root.quotas
        self.log = self.base_log.for_cell(self.world.account_id, self.world.region)
        self.stores: dict[str, StoreRuntime] = {}
        self.key_created: dict[str, float] = {k.key_id: self.started_wall for k in self.world.keys}
        # ScheduleKeyDeletion: key id -> (simulated instant the key is deleted, DeletionDate as epoch seconds).
        # Keys that are PendingDeletion in the world file have no entry: they stay pending (as before).
        self.key_deletions: dict[str, tuple[float, float]] = {}
        self.ca: WorldCA | None = None
        self._tls: ssl.SSLContext | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        for ks in self.world.keystores:
            rt = StoreRuntime(ks, self.started_wall)
            if ks.state in ("CONNECTING", "DISCONNECTING"):
                rt.pending = "connect" if ks.state == "CONNECTING" else "disconnect"
                rt.due = self.world.latencies.connect if rt.pending == "connect" else self.world.latencies.disconnect
            self.stores[ks.id] = rt
        if root is None:
            self.faults.add(self.world.faults)
            self.cells[(self.world.account_id, self.world.region)] = self
            for key, cell in self.world.cells.items():
                self.cells[key] = WorldState(cell, connect_check=self.connect_check, parent=self)

    def cell(self, account: str, region: str) -> WorldState | None:
        return self.cells.get((account, region))

    def cell_for(self, account: str, region: str, *, global_service: bool = False) -> WorldState | None:
        """The cell a request is answered from: by account and signing Region. A world without [[accounts]]
        answers every Region from its one cell (as before); IAM and STS are global: any Region reaches the
        account's home Region. None: the account does not have that Region."""
        if not self.world.declares_accounts:
            return self.root
        found = self.cells.get((account, region))
        if found is None and (global_service or not region):
            found = self.cells.get((account, self.identity.home_region(account)))
        return found

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def region(self) -> str:
        return self.world.region

    @property
    def account_id(self) -> str:
        return self.world.account_id

    def start(self, ca: WorldCA, proxy_servers: Mapping[str, ProxyServer]) -> None:
        """Take over the world CA and one XKS proxy server per model.Proxy (by name), start them and the ticker.

        The CA is cleaned up at `stop()` unless it lives in the caller's `ca_dir`.
        """
        self.ca = ca
        self._tls = ca.client_context()
        for name, server in proxy_servers.items():
            server.start()
            self.proxy_servers[name] = server
        for item in self.faults.items:
            self._forward_proxy_fault(item.fault)
        self._ticker = threading.Thread(target=self._tick, name="world-ticker", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join(timeout=2)
        for server in self.proxy_servers.values():
            server.stop()
        self.proxy_servers.clear()
        if self.ca is not None and self.ca_dir is None:
            self.ca.cleanup()

    def _tick(self) -> None:
        while not self._stop.wait(0.02):
            with self.lock:
                self.advance()

    def certificate_hosts(self, proxy: model.Proxy) -> list[str]:
        """The SANs of a proxy's certificate: as configured, else its public names plus the private DNS
        names of every endpoint service whose load balancer forwards to it (model.Proxy docs)."""
        if proxy.certificate_hosts:
            return list(proxy.certificate_hosts)
        private = []
        for cell in self.world.all_cells().values():  # an endpoint service of any account may front it
            lbs = {lb.name for lb in cell.load_balancers if proxy.name in balancing.proxies_behind(lb)}
            private += [s.private_dns_name for s in cell.endpoint_services
                        if s.load_balancer in lbs and s.private_dns_name]
        return list(dict.fromkeys([*proxy.public_hostnames, *private]))

    # -- faults ------------------------------------------------------------------------------------

    def add_faults(self, faults: list[model.Fault]) -> None:
        names = {p.name for p in self.world.proxies}
        for f in faults:
            if f.proxy and f.proxy not in names:
                raise model.WorldFileError(f"faults: proxy: no proxy named {f.proxy!r}")
        with self.lock:
            self.faults.add(faults)
            for f in faults:
                self._forward_proxy_fault(f)

    def _forward_proxy_fault(self, fault: model.Fault) -> None:
        """A proxy fault without count/probability/after holds until cleared (set on the proxy); the others
        are consulted per proxy request through the proxy's fault hook."""
        server = self.proxy_servers.get(fault.proxy) if fault.proxy_fault else None
        if server is not None and self.faults.persistent(fault):
            server.set_fault(fault.proxy_fault, latency_ms=fault.latency_ms)
            self.base_log.add("proxy", "SetFault", error=fault.proxy_fault, detail=fault.proxy)

    # -- ids ---------------------------------------------------------------------------------------

    def new_request_id(self) -> str:
        return str(uuid.uuid4())

    def new_key_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_keystore_id(self) -> str:
        while True:
            candidate = "cks-" + "".join(self.rng.choice("0123456789abcdef") for _ in range(17))
            if all(candidate not in cell.stores for cell in self.cells.values()):
                return candidate

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key_id}"

    # -- key stores --------------------------------------------------------------------------------

    def advance(self) -> None:
        """Complete every transition of every cell whose due time has passed (call under `lock`)."""
        for cell in list(self.root.cells.values()):
            cell._advance_cell()

    def _advance_cell(self) -> None:
        now = self.clock.now()
        for rt in list(self.stores.values()):
            if rt.pending and now >= rt.due:
                self._complete(rt)
        for key_id, (due, _) in list(self.key_deletions.items()):
            if now >= due:
                self._delete_key(key_id, due)

    def _set_state(self, rt: StoreRuntime, to: str, t: float, error: str = "", operation: str = "") -> None:
        before = rt.ks.state
        rt.ks.state = to
        rt.ks.connection_error_code = error if to == "FAILED" else ""
        self.log.add("state", operation or "StateChange", keystore=rt.ks.id, from_=before, to=to, error=error, t=t)

    def _complete(self, rt: StoreRuntime) -> None:
        kind, due = rt.pending, rt.due
        rt.pending = ""
        if kind == "disconnect":
            self._set_state(rt, "DISCONNECTED", due, operation="DisconnectCompleted")
            return
        code = self.faults.connection_error(self.account_id, self.region) or self.connect_check(self, rt)
        if code:
            self._set_state(rt, "FAILED", due, code, operation="ConnectCompleted")
            return
        lat = self.world.latencies
        rt.available_at = due + lat.key_availability_after_connect
        rt.crypto_blocked_until = due + lat.update_propagation if rt.updated_since_connect else float("-inf")
        rt.updated_since_connect = False
        self._set_state(rt, "CONNECTED", due, operation="ConnectCompleted")

    def start_connect(self, rt: StoreRuntime) -> None:
        now = self.clock.now()
        rt.pending, rt.due = "connect", now + self.world.latencies.connect
        self._set_state(rt, "CONNECTING", now, operation="ConnectCustomKeyStore")

    def start_disconnect(self, rt: StoreRuntime) -> None:
        now = self.clock.now()
        rt.pending, rt.due = "disconnect", now + self.world.latencies.disconnect
        self._set_state(rt, "DISCONNECTING", now, operation="DisconnectCustomKeyStore")

    def add_store(self, ks: model.KeyStore) -> StoreRuntime:
        self.world.keystores.append(ks)
        rt = self.stores[ks.id] = StoreRuntime(ks, time.time())
        self.log.add("state", "CreateCustomKeyStore", keystore=ks.id, to=ks.state)
        return rt

    def remove_store(self, store_id: str) -> None:
        rt = self.stores.pop(store_id)
        self.world.keystores.remove(rt.ks)
        self.log.add("state", "DeleteCustomKeyStore", keystore=store_id, from_=rt.ks.state, to="DELETED")

    # -- keys --------------------------------------------------------------------------------------

    def schedule_key_deletion(self, key: model.Key, days: int) -> float:
        """PendingDeletion now; deleted `days` simulated days later. Returns the DeletionDate (epoch seconds)."""
        now = self.clock.now()
        deletion_date = time.time() + days * 86400
        self.key_deletions[key.key_id] = (now + days * 86400, deletion_date)
        before, key.state = key.state, "PendingDeletion"
        self.log.add("state", "ScheduleKeyDeletion", keystore=key.keystore, from_=before, to=key.state,
                     detail=key.key_id, t=now)
        return deletion_date

    def cancel_key_deletion(self, key: model.Key) -> None:
        """Back to Disabled, as KMS leaves a key whose deletion was cancelled."""
        self.key_deletions.pop(key.key_id, None)
        key.state = "Disabled"
        self.log.add("state", "CancelKeyDeletion", keystore=key.keystore, from_="PendingDeletion", to=key.state,
                     detail=key.key_id)

    def _delete_key(self, key_id: str, due: float) -> None:
        self.key_deletions.pop(key_id, None)
        key = next((k for k in self.world.keys if k.key_id == key_id), None)
        if key is not None:
            self.world.keys.remove(key)
            self.log.add("state", "KeyDeleted", keystore=key.keystore, from_="PendingDeletion", to="DELETED",
                         detail=key_id, t=due)

    def key_state(self, key: model.Key) -> str:
        """KeyState as DescribeKey reports it (facts §3): Unavailable unless the store is CONNECTED and the
        keys have become available; PendingDeletion stays PendingDeletion."""
        if key.state == "PendingDeletion":
            return key.state
        rt = self.stores.get(key.keystore)
        if rt is None or rt.ks.state != "CONNECTED" or self.clock.now() < rt.available_at:
            return "Unavailable"
        return key.state

    def propagating(self, key: model.Key) -> bool:
        rt = self.stores.get(key.keystore)
        return rt is not None and self.clock.now() < rt.crypto_blocked_until

    # -- proxies -----------------------------------------------------------------------------------

    def proxy_connection(self, proxy: model.Proxy) -> tuple[int, ssl.SSLContext] | None:
        """Where a running proxy listens and the client TLS context that trusts the world CA; None if not running."""
        server = self.proxy_servers.get(proxy.name)
        tls = self.root._tls
        if server is None or tls is None:
            return None
        return server.port, tls

    # -- introspection -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Stores, keys, services, load balancers and proxies as JSON-able data, without secrets: the default
        cell at the top level (as before), every cell under "cells", the role sessions under "sessions"."""
        with self.lock:
            self.advance()
            proxies = [{"name": p.name, "port": getattr(self.proxy_servers.get(p.name), "port", None),
                        "public_hostnames": p.public_hostnames, "certificate": p.certificate,
                        "uri_path_prefix": p.uri_path_prefix, "health": p.health, "down": p.down,
                        "latency_ms": p.latency_ms, "region": p.region,
                        "access_key_ids": [c.access_key_id for c in p.credentials]}
                       for p in self.world.proxies]
            cells = [cell._cell_snapshot() for cell in self.root.cells.values()]
            return {"t": round(self.clock.now(), 3), "time_scale": self.clock.time_scale, **self._cell_snapshot(),
                    "proxies": proxies, "cells": cells, "sessions": self.identity.snapshot()}

    def _cell_snapshot(self) -> dict[str, Any]:
        stores = []
        for rt in self.stores.values():
            ks = rt.ks
            stores.append({
                "id": ks.id, "name": ks.name, "state": ks.state, "connection_error_code": ks.connection_error_code,
                "connectivity": ks.connectivity, "uri_endpoint": ks.uri_endpoint, "uri_path": ks.uri_path,
                "access_key_id": ks.access_key_id, "vpc_endpoint_service_name": ks.vpc_endpoint_service_name,
                "vpc_endpoint_service_owner": ks.vpc_endpoint_service_owner, "pending": rt.pending or None,
                "due": rt.due if rt.pending else None})
        keys = [{"key_id": k.key_id, "keystore": k.keystore, "xks_key_id": k.xks_key_id, "state": k.state,
                 "key_state": self.key_state(k)} for k in self.world.keys]
        services = [{**vars(s), "service_name": s.service_name(self.region)} for s in self.world.endpoint_services]
        lbs = [{**asdict(lb), "target_groups": [asdict(g) for g in balancing.target_groups_of(lb)],
                "routed_proxy": balancing.routed_proxy(lb)} for lb in self.world.load_balancers]
        return {"account_id": self.account_id, "region": self.region, "keystores": stores, "keys": keys,
                "endpoint_services": services, "load_balancers": lbs}
