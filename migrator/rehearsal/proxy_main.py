"""Run one rehearsal XKS proxy as a process (`xksmigrate sim proxy`, or `python -m` this module).

Useful to point curl, the engine's preflight probe or a second world at a proxy that lives outside the
test process. The first stdout line is one JSON object saying where it listens (flushed at once, so a
parent can read it before anything else happens); then it serves until SIGTERM or SIGINT and exits 0.
Bad input is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

from migrator.rehearsal.world.model import KeyManager, KeyManagerKey, Proxy, ProxyCredential

PROG = "xksmigrate sim proxy"
# The same rules as the world file (`world.model`) and the KMS API model.
_ACCESS_KEY_ID = re.compile(r"^[A-Z2-7]{20,30}$")
_SECRET = re.compile(r"^[a-zA-Z0-9/+=]{43,64}$")
_KEY_ID = re.compile(r"^[a-zA-Z0-9\-_.]{1,128}$")
_PREFIX = re.compile(r"^(/[a-zA-Z0-9/_-]+)?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_HOST = re.compile(r"^[a-zA-Z0-9.*-]+$")
_USAGES = ("ENCRYPT", "DECRYPT")


class UsageError(ValueError):
    """Bad input; the message is the one line printed on stderr."""


def resolve_secret(ref: str) -> str:
    """`env:NAME` or `file:PATH` to the secret text (kept local: the rehearsal wing imports no engine code)."""
    scheme, sep, rest = ref.partition(":")
    if not sep or not rest:
        raise UsageError("a secret must be a reference: env:NAME or file:PATH")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise UsageError(f"secret env:{rest}: environment variable is not set")
    elif scheme == "file":
        try:
            value = Path(rest).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"secret file:{rest}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    else:
        raise UsageError(f"unknown secret reference scheme {scheme!r} (use env: or file:)")
    if not _SECRET.match(value):
        raise UsageError(f"secret {scheme}:{rest}: must be 43-64 characters from A-Z a-z 0-9 / + =")
    return value


def _parse_key(spec: str) -> KeyManagerKey:
    key_id, _, usage_text = spec.partition(":")
    if not _KEY_ID.match(key_id):
        raise UsageError(f"key {spec!r}: the id must be 1-128 characters from A-Z a-z 0-9 - _ .")
    usage = [u.strip().upper() for u in usage_text.split(",") if u.strip()] if usage_text else list(_USAGES)
    bad = [u for u in usage if u not in _USAGES]
    if bad or not usage:
        raise UsageError(f"key {spec!r}: usage must be a comma list of ENCRYPT, DECRYPT")
    return KeyManagerKey(id=key_id, usage=usage)


def _build(host: str, port: int, uri_path_prefix: str, region: str, credentials: list[tuple[str, str]],
           keys: list[str], hostnames: list[str], key_manager: str) -> tuple[Proxy, KeyManager]:
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range")
    if not _PREFIX.match(uri_path_prefix) or len(uri_path_prefix) > 117:
        raise UsageError(f"uri path prefix {uri_path_prefix!r} must be empty or /segments of [a-zA-Z0-9/_-]")
    if not _REGION.match(region):
        raise UsageError(f"region {region!r} is not a region name")
    if not credentials:
        raise UsageError("at least one credential is required (--credential ACCESS_KEY_ID=env:NAME)")
    if not key_manager:
        raise UsageError("the key manager name must not be empty")
    creds = []
    for access_key_id, ref in credentials:
        if not _ACCESS_KEY_ID.match(access_key_id):
            raise UsageError(f"access key id {access_key_id!r} must be 20-30 characters from A-Z 2-7")
        creds.append(ProxyCredential(access_key_id, resolve_secret(ref)))
    for name in hostnames:
        if not _HOST.match(name):
            raise UsageError(f"hostname {name!r} is not a host name")
    proxy = Proxy(name=f"proxy-{host}-{port}", key_manager=key_manager, public_hostnames=list(hostnames),
                  certificate_hosts=list(hostnames), uri_path_prefix=uri_path_prefix, credentials=creds)
    return proxy, KeyManager(name=key_manager, keys=[_parse_key(k) for k in keys])


def run_proxy(host: str, port: int, uri_path_prefix: str, region: str, credentials: list[tuple[str, str]],
              keys: list[str], tls: bool, hostnames: list[str], ca_dir: str | None, key_manager: str) -> int:
    """Serve one proxy until SIGTERM/SIGINT. `credentials` are (access key id, secret reference);
    `keys` are "ID" or "ID:ENCRYPT,DECRYPT". Returns the exit code (0, or 2 for bad input). Signal
    handlers are installed only on the main thread; elsewhere the caller must stop the process."""
    from migrator.rehearsal.world.ca import WorldCA
    from migrator.rehearsal.xks.proxy import XksProxyServer

    try:
        proxy, manager = _build(host, port, uri_path_prefix, region, credentials, keys, hostnames, key_manager)
        ca = WorldCA(Path(ca_dir) if ca_dir else None) if tls else None
        server = XksProxyServer(proxy, manager, region, ca, host=host, port=port, tls=tls)
        server.start()
    except (UsageError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}".splitlines()[0], file=sys.stderr, flush=True)
        return 2

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        ready = {
            "url": server.url, "host": host, "port": server.port, "tls": tls,
            "ca_bundle": str(ca.ca_bundle_path) if ca is not None else None,
            "uri_path_prefix": uri_path_prefix, "uri_path": uri_path_prefix + "/kms/xks/v1",
            "hostnames": server.certificate_hosts if tls else list(hostnames),
            "region": region, "key_manager": key_manager, "pid": os.getpid(),
        }
        print(json.dumps(ready), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if ca is not None and not ca_dir:
            ca.cleanup()
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of usage text plus exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _credential(text: str) -> tuple[str, str]:
    access_key_id, sep, ref = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("use ACCESS_KEY_ID=env:NAME or ACCESS_KEY_ID=file:PATH")
    return access_key_id, ref


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description="Serve one simulated XKS proxy (rehearsal world).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument("--uri-path-prefix", default="", help="served path is PREFIX/kms/xks/v1")
    parser.add_argument("--region", default="us-east-1", help="SigV4 region KMS signs with")
    parser.add_argument("--credential", action="append", type=_credential, default=[], metavar="AKID=REF",
                        help="accepted SigV4 credential, secret as env:NAME or file:PATH (repeat for rotation)")
    parser.add_argument("--key", action="append", default=[], metavar="ID[:USAGE]",
                        help="external key, e.g. key-1 or key-1:ENCRYPT,DECRYPT (repeatable)")
    parser.add_argument("--hostname", action="append", default=[], help="certificate host name (repeatable)")
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True, help="serve HTTPS")
    parser.add_argument("--ca-dir", default=None, help="world CA directory to reuse or create")
    parser.add_argument("--key-manager", default="rehearsal-ekm", help="key manager name (selects key material)")
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    return run_proxy(args.host, args.port, args.uri_path_prefix, args.region, args.credential, args.key,
                     args.tls, args.hostname, args.ca_dir, args.key_manager)


if __name__ == "__main__":
    sys.exit(main())
