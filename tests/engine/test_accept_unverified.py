"""Fail closed (issue 12): a check that could not be made holds the run until it is made or accepted by name.

Units first (the gate's `accept`/`blocked`, the vantage point's --resolve parsing), then the CLI against a
rehearsal world over HTTP: without a secret `plan` exits 3 listing the unverified checks; with each accepted
by name it exits 0; `run` journals each acceptance (who, when, how) and `status --json` shows it; a block
cannot be accepted; a resume keeps the acceptances without the flag.
"""

from __future__ import annotations

import getpass
import http.server
import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import REPO, load_world, mutating_calls, read_world_log, roomy_plan_file
from test_lock_cli import SCALE, STORE, run_cli, start_cli, wait_until

from migrator.cli.errors import CliError
from migrator.cli.vantage import ask_rehearsal, explicit_resolve, parse_resolve, resolver, scale_warning
from migrator.preflight.base import ACCEPTED, BLOCK, PASS, UNVERIFIED, WARN, Finding, accept, blocked, holding
from migrator.preflight.base import unused_acceptances as unused

# -- the gate: accept() and blocked() --------------------------------------------------------------------------

FINDINGS = [Finding("a.pass", PASS, "fine"), Finding("a.warn", WARN, "a real concern"),
            Finding("proxy.credential", UNVERIFIED, "not probed", "add a secret"),
            Finding("tls.reachable", UNVERIFIED, "not reached", "--resolve HOST=IP:PORT")]


def test_an_unverified_check_holds_the_run_like_a_block_and_a_warning_does_not():
    assert not blocked(FINDINGS[:2])
    assert blocked(FINDINGS)
    assert [f.check for f in holding(FINDINGS)] == ["proxy.credential", "tls.reachable"]
    assert blocked([Finding("x.y", BLOCK, "broken")])


def test_accepting_each_unverified_check_by_name_makes_the_run_ready_and_says_who():
    out = accept(FINDINGS, {"proxy.credential"}, "alice", "cli")
    assert blocked(out)  # tls.reachable is still unverified
    out = accept(out, frozenset({"tls.reachable"}), "bob", "plan")
    assert not blocked(out)
    by_check = {f.check: f for f in out}
    credential = by_check["proxy.credential"]
    assert credential.status == ACCEPTED
    assert credential.message == "not probed (accepted by alice with --accept-unverified proxy.credential)"
    assert credential.detail == {"accepted_by": "alice", "accepted_via": "cli"}
    assert credential.remedy == "add a secret"  # what would make it checkable stays on record
    assert by_check["tls.reachable"].message.endswith("(accepted by bob in the plan's [preflight] accept_unverified)")
    assert [f for f in out if f.check in ("a.pass", "a.warn")] == FINDINGS[:2]  # nothing else changes


def test_a_block_is_never_accepted_and_a_useless_acceptance_is_reported_not_raised():
    findings = [*FINDINGS, Finding("vpc.acceptance_required", BLOCK, "needs acceptance")]
    out = accept(findings, {"vpc.acceptance_required", "a.pass", "no.such", "proxy.credential"}, "alice", "cli")
    assert [f.status for f in out if f.check == "vpc.acceptance_required"] == [BLOCK]
    assert blocked(out)
    reasons = dict(unused(out, {"vpc.acceptance_required", "a.pass", "no.such", "proxy.credential"}))
    assert set(reasons) == {"vpc.acceptance_required", "a.pass", "no.such"}
    assert "a block can never be accepted" in reasons["vpc.acceptance_required"]
    assert "not unverified" in reasons["a.pass"] and "no check no.such ran" in reasons["no.such"]


# -- the vantage point: --resolve HOST=IP:PORT and XKSMIGRATE_RESOLVE ------------------------------------------

def test_resolve_entries_parse_to_a_map_of_lower_case_hosts():
    assert parse_resolve(["MyProxy-Private.Example.com=127.0.0.1:8443", "b.example.com=[::1]:443"]) == {
        "myproxy-private.example.com": "127.0.0.1:8443", "b.example.com": "[::1]:443"}
    assert parse_resolve(["a.example.com=127.0.0.1:8443", "a.example.com=127.0.0.1:8443"]) == {
        "a.example.com": "127.0.0.1:8443"}


@pytest.mark.parametrize(("entry", "reason"), [
    ("myproxy.example.com", "is not HOST=IP:PORT"),
    ("myproxy.example.com=127.0.0.1", "is not IP:PORT"),
    ("myproxy.example.com=127.0.0.1:0", "port 1-65535"),
    ("myproxy.example.com=127.0.0.1:70000", "port 1-65535"),
    ("=127.0.0.1:8443", "is not HOST=IP:PORT"),
    ("my proxy=127.0.0.1:8443", "is not a host name"),
])
def test_a_bad_resolve_entry_is_one_line_and_exit_2(entry, reason):
    with pytest.raises(CliError) as err:
        parse_resolve([entry])
    assert err.value.code == 2 and reason in str(err.value) and str(err.value).startswith("--resolve: ")
    assert "\n" not in str(err.value)


def test_a_host_given_twice_with_two_addresses_is_refused():
    with pytest.raises(CliError, match="given twice"):
        parse_resolve(["a.example.com=127.0.0.1:1", "a.example.com=127.0.0.1:2"])


def test_the_environment_variable_is_read_and_the_flag_wins(monkeypatch):
    monkeypatch.setenv("XKSMIGRATE_RESOLVE", "a.example.com=127.0.0.1:1, b.example.com=127.0.0.1:2,")
    assert explicit_resolve(["b.example.com=127.0.0.1:3"]) == {"a.example.com": "127.0.0.1:1",
                                                                "b.example.com": "127.0.0.1:3"}
    monkeypatch.setenv("XKSMIGRATE_RESOLVE", "a.example.com")
    with pytest.raises(CliError, match=r"^XKSMIGRATE_RESOLVE: "):
        explicit_resolve([])


def test_the_resolver_prefers_explicit_entries_and_knows_what_a_rehearsal_cannot_reach():
    assert resolver({}, None) is None  # nothing known: preflight dials DNS:443 itself
    real = resolver({"private.example.com": "127.0.0.1:8443"}, None)
    assert real is not None
    assert real("PRIVATE.example.com.") == "127.0.0.1:8443"
    assert real("public.example.com") == "public.example.com:443"  # a real account: DNS for the others
    world = resolver({"a.example.com": "127.0.0.1:9"}, {"a.example.com": "127.0.0.1:1", "b.example.com": "127.0.0.1:2"})
    assert world is not None
    assert (world("a.example.com"), world("b.example.com")) == ("127.0.0.1:9", "127.0.0.1:2")
    with pytest.raises(LookupError):
        world("private.example.com")  # the world says this machine cannot reach it


def test_a_time_scale_other_than_the_worlds_is_one_warning_line():
    assert scale_warning(None, 60.0) is None and scale_warning(60.0, 60.0) is None and scale_warning(1.0, None) is None
    told = scale_warning(60.0, None)
    assert told is not None and "--time-scale 60" in told and "\n" not in told
    assert "--time-scale 600" in (scale_warning(600.0, 60.0) or "")


@pytest.fixture
def vantage_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A loopback HTTP endpoint that serves `answer["body"]` at /_rehearsal/vantage (404 when None)."""
    answer: dict[str, Any] = {"body": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer["body"]
            if self.path != "/_rehearsal/vantage" or body is None:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()
        server.server_close()


def test_a_rehearsal_endpoint_tells_its_vantage_point_and_one_without_says_nothing(vantage_server):
    url, answer = vantage_server
    assert ask_rehearsal(url) is None  # 404: no vantage point
    answer["body"] = {"time_scale": 60, "resolve": {"MyProxy.Example.com": "127.0.0.1:4443"}}
    seen = ask_rehearsal(url + "/")
    assert seen is not None and seen.time_scale == 60.0 and seen.resolve == {"myproxy.example.com": "127.0.0.1:4443"}
    assert seen.trusted_roots_pem == ()
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    answer["body"] = {"time_scale": 1, "resolve": {}, "trusted_roots_pem": [pem, "not a certificate"]}
    seen = ask_rehearsal(url)
    assert seen is not None and seen.trusted_roots_pem == (pem.encode(),)  # only certificates are taken
    answer["body"] = ["not", "an", "object"]
    assert ask_rehearsal(url) is None


# -- through the CLI, against a rehearsal world over HTTP ------------------------------------------------------

def _no_secret_plan(tmp_path: Path, server: Any, extra: str = "") -> Path:
    """The example plan (roomy budget) without the current proxy secret, trusting the world's CA."""
    path = roomy_plan_file(tmp_path)
    text = re.sub(r"\n\[keystores\.original_credential\][^\[]*", "\n", path.read_text())
    text = text.replace("[plan]\n", f"[plan]\nextra_trusted_roots = [{json.dumps(server.ca_bundle_path)}]\n", 1)
    path.write_text(text + extra)
    return path


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _plan_json(plan: Path, server: Any, state: str, tmp_path: Path, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    done = run_cli(["plan", str(plan), "--endpoint-url", server.endpoint_url, "--state", state, "--json", *extra],
                   tmp_path)
    return done.returncode, _lines(done.stdout)


def _accept_args(checks: list[str]) -> list[str]:
    return [arg for check in checks for arg in ("--accept-unverified", check)]


def _unverified_checks(lines: list[dict[str, Any]]) -> list[str]:
    return sorted({f["check"] for f in lines if f["type"] == "finding" and f["status"] == "unverified"})


@pytest.mark.slow
def test_plan_without_a_secret_exits_3_listing_the_unverified_checks_and_0_once_each_is_accepted(start_world,
                                                                                               tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE))
    plan, state = _no_secret_plan(tmp_path, server), f"sqlite:///{tmp_path}/j.db"
    code, lines = _plan_json(plan, server, state, tmp_path)
    unverified = _unverified_checks(lines)
    assert code == 3 and "proxy.credential" in unverified, lines[-1]
    summary = lines[-1]
    assert summary["ready"] is False
    assert sorted({u["check"] for u in summary["unverified"]}) == unverified
    assert all(u["remedy"] for u in summary["unverified"])  # each says what would make it checkable
    assert not [f for f in lines if f.get("status") == "block"]

    human = run_cli(["plan", str(plan), "--endpoint-url", server.endpoint_url, "--state", state], tmp_path)
    assert human.returncode == 3
    assert "NOT READY" in human.stdout
    for check in unverified:
        assert f"--accept-unverified {check}" in human.stdout

    code, lines = _plan_json(plan, server, state, tmp_path, *_accept_args(unverified[:-1]))
    assert code == 3 and _unverified_checks(lines) == unverified[-1:]  # every one must be named
    code, lines = _plan_json(plan, server, state, tmp_path, *_accept_args(unverified))
    assert code == 0 and lines[-1]["ready"] is True and _unverified_checks(lines) == []
    who = getpass.getuser()
    assert sorted(a["check"] for a in lines[-1]["accepted_unverified"]) == unverified
    assert {(a["accepted_by"], a["source"]) for a in lines[-1]["accepted_unverified"]} == {(who, "cli")}
    assert mutating_calls(read_world_log(server)) == []


@pytest.mark.slow
def test_the_plans_accept_unverified_list_is_merged_with_the_flag(start_world, tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE))
    state = f"sqlite:///{tmp_path}/j.db"
    unverified = _unverified_checks(_plan_json(_no_secret_plan(tmp_path, server), server, state, tmp_path)[1])
    assert "proxy.credential" in unverified
    plan = _no_secret_plan(tmp_path, server, '\n[preflight]\naccept_unverified = ["proxy.credential"]\n')
    code, lines = _plan_json(plan, server, state, tmp_path,
                             *_accept_args([c for c in unverified if c != "proxy.credential"]))
    assert code == 0, lines[-1]
    sources = {a["check"]: a["source"] for a in lines[-1]["accepted_unverified"]}
    assert sources.pop("proxy.credential") == "plan" and set(sources.values()) <= {"cli"}


@pytest.mark.slow
def test_run_stops_on_an_unaccepted_check_and_journals_each_acceptance(start_world, journal, journal_url, tmp_path):
    server = start_world(load_world("public-to-vpc", time_scale=SCALE))
    plan = _no_secret_plan(tmp_path, server)
    unverified = _unverified_checks(_plan_json(plan, server, journal_url, tmp_path)[1])
    assert unverified
    base = ["run", str(plan), "--yes", "--endpoint-url", server.endpoint_url, "--time-scale", str(SCALE),
            "--state", journal_url, "--json"]

    held = run_cli(base, tmp_path)
    assert held.returncode == 3, held.stderr
    summary = _lines(held.stdout)[-1]
    assert summary["outcome"] == "blocked"
    for check in unverified:
        assert f"{check} unverified" in summary["message"] and f"--accept-unverified {check}" in summary["message"]
    assert mutating_calls(read_world_log(server)) == []

    done = run_cli([*base, *_accept_args(unverified), "--accept-unverified", "keys.verifiable"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    lines = _lines(done.stdout)
    run_id = lines[-1]["run_id"]
    who = getpass.getuser()
    assert sorted(a["check"] for a in lines[-1]["accepted_unverified"]) == unverified
    acceptances = [e for e in journal.events(run_id) if e.kind == "acceptance"]
    assert sorted(e.detail["check"] for e in acceptances) == unverified  # one event each
    for e in acceptances:
        assert (e.detail["keystore"], e.detail["accepted_by"], e.detail["source"]) == (STORE, who, "cli")
        assert isinstance(e.detail["at"], float)
    unused = [e for e in journal.events(run_id) if e.kind == "note" and e.outcome == "acceptance_unused"]
    assert [e.detail["check"] for e in unused] == ["keys.verifiable"]  # reported, not an error
    accepted = [e for e in journal.events(run_id) if e.kind == "finding" and e.outcome == "accepted"]
    assert sorted(e.detail["check"] for e in accepted) == unverified

    status = run_cli(["status", run_id, "--state", journal_url, "--json"], tmp_path)
    shown = _lines(status.stdout)[-1]["accepted_unverified"]
    assert sorted((a["keystore"], a["check"], a["accepted_by"], a["source"]) for a in shown) == [
        (STORE, c, who, "cli") for c in unverified]
    text = run_cli(["status", run_id, "--state", journal_url], tmp_path).stdout
    for check in unverified:
        assert f"accepted unverified {check} on {STORE}: by {who}" in text


@pytest.mark.slow
def test_a_block_cannot_be_accepted(start_world, journal_url, tmp_path):
    from migrator.rehearsal.world import model

    world_text = (REPO / "plans" / "worlds" / "public-to-vpc.toml").read_text()
    assert "acceptance_required = false" in world_text
    import tomllib

    data = tomllib.loads(world_text.replace("acceptance_required = false", "acceptance_required = true"))
    data.setdefault("world", {})["time_scale"] = SCALE
    server = start_world(model.world_from_dict(data, "acceptance.toml"))
    plan = _no_secret_plan(tmp_path, server)
    code, lines = _plan_json(plan, server, journal_url, tmp_path)
    assert code == 3 and [f["check"] for f in lines if f.get("status") == "block"] == ["vpc.acceptance_required"]
    everything = _accept_args([*_unverified_checks(lines), "vpc.acceptance_required"])

    code, lines = _plan_json(plan, server, journal_url, tmp_path, *everything)
    assert code == 3 and lines[-1]["ready"] is False
    assert [f["status"] for f in lines if f.get("check") == "vpc.acceptance_required"] == ["block"]
    [unused] = lines[-1]["unused_acceptances"]
    assert unused["check"] == "vpc.acceptance_required" and "can never be accepted" in unused["message"]

    ran = run_cli(["run", str(plan), "--yes", "--endpoint-url", server.endpoint_url, "--time-scale", str(SCALE),
                   "--state", journal_url, "--json", *everything], tmp_path)
    assert ran.returncode == 3, ran.stderr
    assert "vpc.acceptance_required" in _lines(ran.stdout)[-1]["message"]
    assert mutating_calls(read_world_log(server)) == []


@pytest.mark.slow
def test_a_resume_keeps_the_acceptances_without_the_flag(start_world, journal, journal_url, tmp_path):
    """Killed while the cut-over is postponed; the resume preflights again before the disconnect, with no flag."""
    server = start_world(load_world("public-to-vpc", time_scale=SCALE))
    plan = _no_secret_plan(tmp_path, server)
    unverified = _unverified_checks(_plan_json(plan, server, journal_url, tmp_path)[1])
    assert unverified
    runner, _out, err = start_cli(["run", str(plan), "--yes", "--endpoint-url", server.endpoint_url, "--time-scale",
                                   str(SCALE), "--state", journal_url, "--postpone-cutover",
                                   *_accept_args(unverified)], tmp_path, "first")
    try:
        def postponed() -> str | None:
            runs = journal.list_runs(limit=1)
            if runs and any(e.outcome == "postponed" for e in journal.events(runs[0].id)):
                return runs[0].id
            return None

        run_id = wait_until("the cut-over is postponed", postponed, runner)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    first = {e.detail["check"]: e.detail for e in journal.events(run_id) if e.kind == "acceptance"}
    assert sorted(first) == unverified, err.read_text()

    assert run_cli(["proceed", run_id, "--state", journal_url], tmp_path).returncode == 0
    resumed = run_cli(["resume", run_id, "--yes", "--state", journal_url, "--json"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    events = journal.events(run_id)
    preflights = [e for e in events if e.kind == "finding" and e.detail["check"] == unverified[0]]
    assert [e.outcome for e in preflights] == ["accepted", "accepted"]  # preflighted again, still accepted
    again = [e.detail for e in events if e.kind == "acceptance"]
    assert sorted(d["check"] for d in again) == unverified  # journaled once, with who and when of the first
    assert {d["check"]: (d["accepted_by"], d["at"]) for d in again} == {
        c: (d["accepted_by"], d["at"]) for c, d in first.items()}
    shown = _lines(run_cli(["status", run_id, "--state", journal_url, "--json"], tmp_path).stdout)[-1]
    assert sorted(a["check"] for a in shown["accepted_unverified"]) == unverified and shown["outcome"] == "completed"


def test_a_journal_that_cannot_say_which_runs_are_unfinished_leaves_the_check_unverified():
    from engine_helpers import example_plan

    from migrator.preflight.base import PreflightContext
    from migrator.preflight.planner import _unfinished_runs
    from migrator.preflight.store import check_quota

    plan = example_plan()

    def context(unfinished: Any) -> PreflightContext:
        return PreflightContext(plan=plan, keystore=plan.keystores[0], snapshot=None, clients=None,  # type: ignore[arg-type]
                                secret_resolver=lambda ref: None, unfinished_runs=unfinished)  # type: ignore[arg-type,return-value]

    [unknown] = [f for f in check_quota(context(None)) if f.check == "quota.concurrent_runs"]
    assert unknown.status == UNVERIFIED and unknown.remedy
    [none] = [f for f in check_quota(context(())) if f.check == "quota.concurrent_runs"]
    assert none.status == PASS

    class Broken:
        def unfinished_runs(self, region: str, account_id: str | None = None) -> list[Any]:
            raise OSError("database is locked")

    class Env:
        journal = Broken()

    assert _unfinished_runs(plan, Env()) is None  # type: ignore[arg-type]
