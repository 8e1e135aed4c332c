"""One loopback HTTP endpoint for the whole rehearsal world, usable by boto3 and the AWS CLI unchanged.

Routing: `X-Amz-Target: TrentService.*` -> KMS (`kms.api`), `secretsmanager.*` -> Secrets Manager, a form
body with `Action=` -> the query protocol (EC2/ELBv2/IAM/STS; the service comes from the SigV4 credential
scope). The access key id of the signature decides the account and its Region the cell (`auth`,
`world.identity`, `WorldState.cell_for`); signatures are not verified, any long-term key the world does not
know is the default account's, a world-issued role session is refused once expired on the world's clock.
Per account-Region quotas (`[[quotas]]`) throttle before faults and handlers. `/_rehearsal/*` are
control paths for tests and benchmarks (never used by the engine); `GET /_rehearsal/vantage` is the one the
CLI reads for a loopback endpoint (`world.vantage`: the proxy hosts this machine reaches, and the time scale).
Every response carries `x-amzn-RequestId`; every API call is logged with simulated time, account and Region.

`RehearsalServer` is also where the wing is put together: it builds the `world.state.WorldState` with KMS's
connect check and hands it the world CA and one `xks.proxy.XksProxyServer` per proxy, so the state module
needs neither KMS nor the proxy implementation.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from migrator.rehearsal.auth import JSON_SERVICES, Signature, refusal
from migrator.rehearsal.kms.api import JSON_CONTENT_TYPE, handle_kms
from migrator.rehearsal.kms.checks import connect_check
from migrator.rehearsal.kms.errors import KmsError
from migrator.rehearsal.secrets_api import handle_secrets
from migrator.rehearsal.world import balancing, model, vantage
from migrator.rehearsal.world.ca import WorldCA
from migrator.rehearsal.world.identity import CALLER_ARN, AuthFailure, Caller
from migrator.rehearsal.world.reader import Reader
from migrator.rehearsal.world.state import WorldState
from migrator.rehearsal.xks.proxy import FaultHook, XksProxyServer

_MUTABLE = {"endpoint_service": ("endpoint_services", "service_id"), "proxy": ("proxies", "name"),
            "keystore": ("keystores", "id"), "key": ("keys", "key_id"), "load_balancer": ("load_balancers", "name")}
_SECRET_FIELDS = {"secret", "credentials"}


class RehearsalServer:
    """The world on 127.0.0.1:port in a thread; start()/stop() or `with RehearsalServer(world) as s:`."""

    def __init__(self, world: model.World, faults: Sequence[model.Fault] = (), *, port: int = 0,
                 log_path: str | None = None, ca_dir: str | None = None):
        self.world = world
        self.state = WorldState(world, log_path=log_path, ca_dir=ca_dir, connect_check=connect_check)
        self._extra_faults = list(faults)
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._refusing: socket.socket | None = None  # bound, never listening: connections to it are refused

    @property
    def world_state(self) -> WorldState:
        return self.state

    @property
    def time_scale(self) -> float:
        return self.world.time_scale

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_bundle_path(self) -> str:
        return str(self.state.ca.ca_bundle_path) if self.state.ca else ""

    def vantage(self) -> dict[str, str]:
        """{host: "127.0.0.1:port"} the machine running the tool can dial now (`world.vantage`)."""
        ports = {name: server.port for name, server in self.state.proxy_servers.items()}
        refused = self._refusing.getsockname()[1] if self._refusing is not None else 0
        found: dict[str, str] = {}
        with self.state.lock:
            for cell in self.world.all_cells().values():  # the tool's VPC vantage reaches every account's
                found.update(vantage.reachable(cell, ports, refused))
        return found

    def start(self) -> RehearsalServer:
        self._refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._refusing.bind(("127.0.0.1", 0))
        self.state.start(*self._proxy_servers())
        self.state.add_faults(self._extra_faults)
        httpd = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        httpd.daemon_threads = True
        httpd.world = self.state  # type: ignore[attr-defined]
        httpd.vantage = self.vantage  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="rehearsal-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._refusing is not None:
            self._refusing.close()
            self._refusing = None
        self.state.stop()

    def __enter__(self) -> RehearsalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _proxy_servers(self) -> tuple[WorldCA, dict[str, XksProxyServer]]:
        """The world CA and one XKS proxy server per model.Proxy, not yet started."""
        state = self.state
        ca = WorldCA(None if state.ca_dir is None else Path(state.ca_dir))
        managers = {m.name: m for m in self.world.key_managers}

        def fault_hook(name: str) -> FaultHook:
            return lambda _api: state.faults.proxy_faults(name)

        return ca, {proxy.name: XksProxyServer(proxy, managers[proxy.key_manager], proxy.region or state.region, ca,
                                               certificate_hosts=state.certificate_hosts(proxy),
                                               fault_hook=fault_hook(proxy.name))
                    for proxy in self.world.proxies}


def public_view(obj: Any) -> dict[str, Any]:
    """A model object as JSON-able data without secrets."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in _SECRET_FIELDS:
            value = [c.access_key_id for c in value] if f.name == "credentials" else "***"
        elif is_dataclass(value):
            value = public_view(value)
        elif isinstance(value, list) and value and is_dataclass(value[0]):
            value = [public_view(v) for v in value]
        out[f.name] = value
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate sends: without this, 40 ms delayed ACKs
    server_version = "xksmigrate-rehearsal/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # the world's own log is the record
        pass

    @property
    def world(self) -> WorldState:
        return self.server.world  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes, content_type: str, request_id: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes | None:
        """The whole request body, or None when the client went away before sending all of it."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        return body if len(body) == length else None

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            # A client killed between sending the headers and the body: AWS never sees an incomplete
            # request as a call, so neither does the world (no answer, no log entry, no effect).
            self.close_connection = True
            return
        self._dispatch(body)

    def _dispatch(self, body: bytes) -> None:
        request_id = self.world.new_request_id()
        path = self.path.split("?", 1)[0]
        if path.startswith("/_rehearsal/"):
            status, payload, ctype = self._control(path, body)
            self._send(status, payload, ctype, request_id)
            return
        signature = Signature.of(self.headers)
        target = self.headers.get("X-Amz-Target", "")
        if "." in target:
            prefix, operation = target.split(".", 1)
            service = {"TrentService": "kms", "secretsmanager": "secretsmanager"}.get(prefix, "")
            self._api(service, operation, body, request_id, signature)
            return
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if "Action" in params:
            self._api(signature.service, params.pop("Action"), body, request_id, signature, params)
            return
        err = KmsError("UnknownOperationException", "Send X-Amz-Target (JSON protocol) or a form body with Action.")
        self._send(err.status, err.body(), JSON_CONTENT_TYPE, request_id)

    def _caller(self, service: str, signature: Signature) -> tuple[WorldState, Caller]:
        """The cell that answers and who is asking (the access key decides the account, the signing Region the
        cell); raises AuthFailure for expired or unknown session credentials or a Region the account lacks."""
        root = self.world
        caller = root.identity.caller(signature.access_key_id, signature.token)
        cell = root.cell_for(caller.account, signature.region, global_service=service in ("iam", "sts"))
        if cell is None:
            raise AuthFailure("invalid", f"account {caller.account} has no Region {signature.region}", caller.account)
        return cell, caller

    def _api(self, service: str, operation: str, body: bytes, request_id: str, signature: Signature,
             params: dict[str, str] | None = None) -> None:
        detail = None if service == "kms" else service
        try:
            cell, caller = self._caller(service, signature)
        except AuthFailure as exc:
            status, payload, ctype, error = refusal(service, exc.kind)
            self.world.base_log.add("call", operation, error=error, request_id=request_id, detail=detail,
                                    account=exc.account, region=signature.region or None)
            self._send(status, payload, ctype, request_id)
            return
        if self.world.quotas.admit(cell.account_id, cell.region, operation) is not None:
            status, payload, ctype, error = refusal(service, "throttled")
            cell.log.add("call", operation, error=error, request_id=request_id, detail=detail)
            self._send(status, payload, ctype, request_id)
            return
        context = CALLER_ARN.set(caller.arn if caller.session is not None else "")
        try:
            status, payload, ctype, error, keystore = self._answer(cell, caller, service, operation, body, params)
        finally:
            CALLER_ARN.reset(context)
        cell.log.add("call", operation, keystore=keystore, error=error, request_id=request_id, detail=detail)
        self._send(status, payload, ctype, request_id)

    def _answer(self, cell: WorldState, caller: Caller, service: str, operation: str, body: bytes,
                params: dict[str, str] | None) -> tuple[int, bytes, str, str, str | None]:
        """(status, body, content type, error name, key store for the log) of one API call in `cell`."""
        delay = cell.faults.latency(operation, cell.account_id, cell.region)
        if delay:
            time.sleep(cell.clock.real_seconds(delay))
        keystore = None
        fault = cell.faults.api_error(operation, cell.account_id, cell.region)
        if service not in JSON_SERVICES:
            return (*self._query(cell, caller, service, operation, params or {}, fault), None)
        if fault is not None:
            err = KmsError(fault.error_code, fault.message or f"{fault.error_code} (rehearsal fault)",
                           fault.http_status if fault.http_status != 400 else None)
            status, payload, error = err.status, err.body(), err.name
        elif service == "kms":
            answer = handle_kms(cell, operation, body)
            status, payload, error, keystore = answer.status, answer.body, answer.error, answer.keystore
        elif service == "secretsmanager":
            status, payload, error = handle_secrets(cell, operation, body)
        else:
            err = KmsError("UnknownOperationException", f"Unknown target or service for {operation}.")
            status, payload, error = err.status, err.body(), err.name
        return status, payload, JSON_CONTENT_TYPE, error, keystore

    def _query(self, cell: WorldState, caller: Caller, service: str, action: str, params: dict[str, str],
               fault: model.Fault | None) -> tuple[int, bytes, str, str]:
        try:
            from migrator.rehearsal.query import sts
            from migrator.rehearsal.query.api import handle_query
            from migrator.rehearsal.query.common import QueryError, error_body
        except ImportError:  # the query API is optional for a KMS-only world
            err = KmsError("UnknownOperationException", f"{service} is not served by this world.")
            return err.status, err.body(), JSON_CONTENT_TYPE, err.name
        if fault is not None:
            qerr = QueryError(fault.error_code, fault.message or f"{fault.error_code} (rehearsal fault)",
                              fault.http_status)
            return qerr.http_status, error_body(service, qerr), "text/xml", qerr.code
        with cell.lock:
            cell.advance()
            if service == "sts":
                try:
                    status, payload = 200, sts.handle(cell, caller, action, params)
                except QueryError as exc:
                    status, payload = exc.http_status, error_body(service, exc)
            else:
                status, payload = handle_query(cell.world, service, action, params)
        error = ""
        if status >= 400:
            found = re.search(rb"<Code>([^<]+)</Code>", payload)
            error = found.group(1).decode() if found else f"HTTP {status}"
        return status, payload, "text/xml", error

    # -- control paths ---------------------------------------------------------------------------

    def _control(self, path: str, body: bytes) -> tuple[int, bytes, str]:
        world = self.world
        method = self.command
        try:
            if path == "/_rehearsal/log" and method == "GET":
                lines = "".join(json.dumps(e) + "\n" for e in world.log.snapshot())
                return 200, lines.encode(), "application/x-ndjson"
            if path == "/_rehearsal/vantage" and method == "GET":
                reach = self.server.vantage()  # type: ignore[attr-defined]
                # The world CA stands in for the public roots KMS trusts: the tool trusts it for this loopback
                # endpoint only, as --dry-run does for its in-process world (certificates only, never a key).
                roots = [world.ca.ca_pem.decode("ascii")] if world.ca else []
                return 200, json.dumps({"time_scale": world.clock.time_scale, "vantage": world.world.vantage,
                                        "resolve": reach, "trusted_roots_pem": roots}).encode(), "application/json"
            if path == "/_rehearsal/state" and method == "GET":
                return 200, json.dumps(world.snapshot()).encode(), "application/json"
            if path == "/_rehearsal/clock":
                if method == "POST":
                    world.clock.advance(float(json.loads(body or b"{}").get("advance", 0)))
                with world.lock:
                    world.advance()
                return 200, json.dumps({"t": world.clock.now(), "time_scale": world.clock.time_scale,
                                        "wall": time.time(), "started_wall": world.started_wall}).encode(), \
                    "application/json"
            if path == "/_rehearsal/faults" and method == "POST":
                raw = json.loads(body or b"[]")
                raw = raw if isinstance(raw, list) else [raw]
                faults = _faults(raw)
                world.add_faults(faults)
                return 200, json.dumps({"added": len(faults)}).encode(), "application/json"
            if path == "/_rehearsal/mutate" and method == "POST":
                return 200, json.dumps(mutate(world, json.loads(body or b"{}"))).encode(), "application/json"
        except (ValueError, TypeError, KeyError) as exc:
            return 400, json.dumps({"error": str(exc)}).encode(), "application/json"
        return 404, json.dumps({"error": f"no control path {method} {path}"}).encode(), "application/json"


def _faults(raw: list[Any]) -> list[model.Fault]:
    """Fault dicts (same keys as `[[faults]]`) validated by the world-file loader."""
    if not all(isinstance(d, dict) for d in raw):
        raise ValueError("faults must be a JSON list of objects")
    return [model._fault(Reader("<faults>", f"faults[{i}]", d)) for i, d in enumerate(raw)]


def _find_target(world: model.World, ident: str) -> model.Target | None:
    group_name, _, target_id = ident.partition("/")
    groups = [g for lb in world.load_balancers for g in lb.target_groups if g.name == group_name]
    return next((t for g in groups for t in g.targets if t.id == target_id), None)


def mutate(world: WorldState, request: dict[str, Any]) -> dict[str, Any]:
    """Change one world object at run time: {"kind", "id", "set": {field: value}}; returns it (no secrets).

    The object is looked for in every cell (default first); "account" and "region" narrow the search."""
    kind, ident, changes = request.get("kind"), request.get("id"), request.get("set")
    if kind not in (*_MUTABLE, "target") or not isinstance(changes, dict):
        raise ValueError(f"kind must be one of {', '.join(_MUTABLE)}, target and set an object")
    collection, id_field = _MUTABLE.get(kind, ("", "id"))
    with world.lock:
        world.advance()
        obj, cell = None, world
        for (account, region), cell in world.cells.items():
            if request.get("account") not in (None, account) or request.get("region") not in (None, region):
                continue
            if kind == "target":  # id "<target group name>/<target id>", e.g. to turn a target unhealthy
                obj = _find_target(cell.world, str(ident))
            else:
                obj = next((o for o in getattr(cell.world, collection) if getattr(o, id_field) == ident), None)
            if obj is not None:
                break
        if obj is None:
            raise KeyError(f"no {kind} {ident!r}")
        names = {f.name for f in fields(obj)}
        for name, value in changes.items():
            current = getattr(obj, name) if name in names else None
            if name not in names or name == id_field or name == "target_groups":  # targets: kind "target"
                raise ValueError(f"{kind} has no mutable field {name!r}")
            if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if current is not None and type(current) is not type(value):
                raise ValueError(f"{kind}.{name} must be {type(current).__name__}")
            if kind == "target" and name == "health" and value not in balancing.TARGET_HEALTH_STATES:
                raise ValueError(f"target.health must be one of {', '.join(balancing.TARGET_HEALTH_STATES)}")
        for name, value in changes.items():
            before = getattr(obj, name)
            setattr(obj, name, float(value) if isinstance(before, float) else value)
            if kind == "keystore" and name == "state":
                cell.stores[ident].pending = ""
                cell.log.add("state", "Mutate", keystore=ident, from_=before, to=value)
        if kind != "keystore" or "state" not in changes:
            log = cell.log if kind in ("keystore", "key", "endpoint_service", "load_balancer", "target") \
                else world.base_log
            log.add("state", "Mutate", keystore=ident if kind == "keystore" else None,
                    detail=f"{kind} {ident}: {', '.join(sorted(changes))}")
        return public_view(obj)
