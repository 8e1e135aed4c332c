"""Helpers for the report tests: a canary rehearsal (a known secret in the world and the plan), the report's
files read back, the checks that a page references nothing outside itself, and a headless Chromium screenshot."""

from __future__ import annotations

import base64
import html.parser
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from engine_helpers import REPO

WORLD = REPO / "plans" / "worlds" / "public-to-vpc.toml"
WORLD_SECRET = "+IKdHjtP/QDxtGRJxkxhicMq268cVU/UBXExOTwHrQ0="  # the example world's proxy secret, replaced
OLD_ACCESS_KEY = "XKSPROXYACCESSKEY2345"
NEW_ACCESS_KEY = "XKSPROXYCANARYKEY2345"
# Known secret values (KMS's shape) the rehearsal uses: the store's current proxy secret, the new one.
CANARY_OLD = "Q2FuYXJ5T2xkU2VjcmV0VmFsdWVGb3JSZXBvcnRzMDE="
CANARY_NEW = "Q2FuYXJ5TmV3U2VjcmV0VmFsdWVGb3JSZXBvcnRzMDI="
PLAN = f"""
[plan]
name = "report-canary"
region = "us-east-1"
max_disconnected = "1h"
poll_interval = "5s"

[[keystores]]
id = "cks-1234567890abcdef0"

[keystores.target]
connectivity = "VPC_ENDPOINT_SERVICE"
uri_endpoint = "https://myproxy-private.xks.example.com"
vpc_endpoint_service_name = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"

[keystores.target.credential]
access_key_id = "{NEW_ACCESS_KEY}"
secret = "env:XKS_CANARY"

[keystores.original_credential]
secret = "env:XKS_OLD"
"""
CONNECT_FAILS = ('[[faults]]\noperation = "ConnectCustomKeyStore"\n'
                 'connection_error_code = "XKS_PROXY_INVALID_TLS_CONFIGURATION"\ncount = {count}\n')


def canary_inputs(directory: Path) -> dict[str, Path]:
    """The world (its proxy accepts both credentials; the store holds the old one), the plan, two fault files."""
    directory.mkdir(parents=True, exist_ok=True)
    text = WORLD.read_text()
    original = f'  {{ access_key_id = "{OLD_ACCESS_KEY}", secret = "{WORLD_SECRET}" }},'
    assert original in text
    text = text.replace(original, f'  {{ access_key_id = "{OLD_ACCESS_KEY}", secret = "{CANARY_OLD}" }},\n'
                                  f'  {{ access_key_id = "{NEW_ACCESS_KEY}", secret = "{CANARY_NEW}" }},')
    text = text.replace(f'secret = "{WORLD_SECRET}"', f'secret = "{CANARY_OLD}"')
    assert WORLD_SECRET not in text
    paths = {"world": directory / "world.toml", "plan": directory / "plan.toml",
             "rolled_back": directory / "connect-fails-once.toml", "stuck": directory / "connect-fails-twice.toml"}
    paths["world"].write_text(text)
    paths["plan"].write_text(PLAN)
    paths["rolled_back"].write_text(CONNECT_FAILS.format(count=1))
    paths["stuck"].write_text(CONNECT_FAILS.format(count=2))
    return paths


def canary_env() -> dict[str, str]:
    return {"XKS_CANARY": CANARY_NEW, "XKS_OLD": CANARY_OLD}


def assert_no_canary(files: list[Path]) -> None:
    """Neither secret, nor a recognisable piece of one, in any byte of `files` (nor in a data: URI they embed)."""
    blobs = []
    for path in files:
        data = path.read_bytes()
        blobs.append(data)
        blobs += [base64.b64decode(m) for m in re.findall(rb"data:[a-z/+.-]+;base64,([A-Za-z0-9+/=]+)", data)]
    for secret in (CANARY_OLD, CANARY_NEW):
        for piece in {secret, secret[:16], secret[14:30], secret[-16:], base64.b64decode(secret).decode()}:
            for blob in blobs:
                assert piece.encode() not in blob, f"a secret leaked into a report file: {piece[:6]}..."


# -- self-contained -------------------------------------------------------------------------------------------
FORBIDDEN_TAGS = {"script", "link", "iframe", "object", "embed", "base", "frame", "audio", "video", "source",
                  "track", "form", "meta-refresh"}
URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action", "background", "formaction", "xlink:href",
                  "cite", "longdesc", "usemap", "manifest", "ping"}


class _References(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in FORBIDDEN_TAGS:
            self.problems.append(f"<{tag}>")
        if tag == "meta" and any(k == "http-equiv" for k, _ in attrs):
            self.problems.append("<meta http-equiv>")
        self._in_style = tag == "style"
        for name, value in attrs:
            value = value or ""
            if name in URL_ATTRIBUTES and not value.startswith(("data:", "#")):
                self.problems.append(f"<{tag} {name}={value[:60]!r}>")
            if name == "style":
                self.styles.append(value)
            if tag == "img" and name == "src":
                self.images.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def external_references(page: str) -> list[str]:
    """Everything in `page` (and in the SVG pictures it embeds) that would make a browser fetch something."""
    parser = _References()
    parser.feed(page)
    problems = list(parser.problems)
    for css in parser.styles:
        problems += [f"css {u}" for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", css) if not u.startswith("data:")]
        problems += ["css @import"] if "@import" in css else []
    for src in parser.images:
        if src.startswith("data:image/svg+xml;base64,"):
            svg = base64.b64decode(src.split(",", 1)[1]).decode()
            problems += [f"svg {m}" for m in re.findall(r"(?:xlink:)?href=\"([^\"]*)\"", svg) if not m.startswith("#")]
            problems += [f"svg url({u})" for u in re.findall(r"url\(([^)]*)\)", svg) if not u.startswith("#")]
            problems += ["svg <image>"] if "<image" in svg else []
            problems += ["svg @import"] if "@import" in svg else []
    return problems


# -- Chromium ---------------------------------------------------------------------------------------------------
def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, profile: Path) -> None:
    """Open `page` in headless Chromium (no network use of its own, a fresh profile) and screenshot it."""
    browser = chromium()
    assert browser is not None
    profile.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000",
                           page.as_uri()], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, "HOME": str(profile)})
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]


def assert_page_not_blank(page: Path, work: Path) -> None:
    """`page` in headless Chromium shows something (CI must have Chromium; elsewhere the check is skipped)."""
    import pytest

    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it from Debian's packages)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    shot = work / f"screenshot-{page.stem}.png"
    screenshot(page, shot, work / "chromium-profile")
    assert distinct_colours(shot) > 50, "the page rendered blank"


def distinct_colours(png: Path) -> int:
    import matplotlib.image
    import numpy

    pixels = matplotlib.image.imread(png)
    flat = pixels.reshape(-1, pixels.shape[-1])
    return len(numpy.unique(flat, axis=0))


def svg_mark_x(svg: str) -> dict[int, float]:
    """seq -> the x of each timeline mark (`<g id="mark-SEQ">` holds the marker's `<use x=...>`)."""
    found = {}
    for seq, body in re.findall(r'<g id="mark-(\d+)">(.*?)</g>', svg, flags=re.S):
        x = re.search(r'<use [^>]*\bx="([-0-9.]+)"', body)
        assert x is not None, f"mark {seq} has no marker"
        found[int(seq)] = float(x.group(1))
    return found


def report_files(directory: Path, run_id: str) -> dict[str, Path]:
    files = {"json": f"{run_id}.json", "html": f"{run_id}.html", "md": f"{run_id}.md",
             "svg": f"{run_id}-timeline.svg", "png": f"{run_id}-timeline.png"}
    return {k: directory / v for k, v in files.items()}


def summary_of(lines: str) -> dict[str, Any]:
    import json

    return json.loads(lines.strip().splitlines()[-1])
